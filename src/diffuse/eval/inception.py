"""The FID Inception network as a plain PyTorch module, with the taps FID, sFID and IS need.

The architecture is TensorFlow's Inception-v3 graph of 2015-12-05 (Szegedy et al. 2016,
"Rethinking the Inception Architecture for Computer Vision", Fig. 5-7), with the two
quirks of that graph that FID depends on: average pools inside the blocks do not count
the zero padding, and the last block (``mixed_10``) pools its fourth branch with a max
pool. Module names follow the TensorFlow scopes (as NVIDIA's TorchScript port does), so
``mixed_6.conv`` is TensorFlow's ``mixed_6/conv``.

Each convolution's batch normalisation (inference statistics, eps = 1e-3) is folded into
the convolution's weight and bias when the weights are loaded: ``gamma * (W*x - mean) /
sqrt(var + eps) + beta`` is one convolution with a bias, so the network runs one op per
layer instead of three. Outputs (:class:`InceptionOutputs`):

- ``pool``: the 2048-d ``pool_3`` features used by FID (Heusel et al. 2017) and by
  improved precision/recall (Kynkaanniemi et al. 2019);
- ``spatial``: the first 7 channels of ``mixed_6/conv`` on the 17x17 grid, flattened in
  TensorFlow's (height, width, channel) order, 2023-d: the sFID features of Nash et al.
  (2021) exactly as ADM's evaluator takes them;
- ``logits``: ``pool_3 @ W`` of the 1008-way ``softmax`` layer without its bias, as the
  original Inception Score code (Salimans et al. 2016) reads it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import nn

from diffuse.errors import CheckpointError, DataError
from diffuse.eval.weights import LOGITS_HINT, InceptionWeights

INPUT_SIZE = 299
POOL_DIM = 2048
SPATIAL_CHANNELS = 7
SPATIAL_DIM = SPATIAL_CHANNELS * 17 * 17
NUM_LOGITS = 1008
BATCH_NORM_EPS = 1e-3


class InceptionOutputs(NamedTuple):
    """What one forward pass returns; a tap not asked for is ``None``."""

    pool: torch.Tensor
    spatial: torch.Tensor | None
    logits: torch.Tensor | None


def fold_batch_norm(weight, beta, mean, var, gamma=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel and bias of ``BN(conv(x))``: scale = gamma / sqrt(var + eps) per channel.

    Computed in float64 (rounded once when copied into a float32 convolution).
    """
    scale = torch.rsqrt(var.double() + BATCH_NORM_EPS)
    if gamma is not None:
        scale = scale * gamma.double()
    return weight.double() * scale[:, None, None, None], beta.double() - mean.double() * scale


class ConvUnit(nn.Module):
    """Convolution (batch norm folded into its weight and bias) followed by ReLU.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: kernel height and width (an int or a pair).
        stride: stride.
        padding: zero padding (an int or a pair).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu_(self.conv(x))

    @torch.no_grad()
    def load(self, **batch_normed_conv: torch.Tensor) -> None:
        """Set the weights from a convolution's kernel and batch-norm tensors."""
        weight, bias = fold_batch_norm(**batch_normed_conv)
        self.conv.weight.copy_(weight)
        self.conv.bias.copy_(bias)


class PointwiseHeads(nn.Module):
    """The 1x1 ConvUnits that start several branches of a block, run as one convolution.

    They all read the block's input, so stacking their kernels gives one larger matrix
    product (fewer passes over the input); the output is split back per branch.

    Args:
        in_channels: the block's input channels.
        heads: output channels of each branch's 1x1 convolution, keyed by its TensorFlow
            name inside the block (``conv``, ``tower.conv``, ...), in output order.
    """

    def __init__(self, in_channels: int, heads: dict[str, int]):
        super().__init__()
        self.heads = dict(heads)
        self.conv = nn.Conv2d(in_channels, sum(self.heads.values()), 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.relu_(self.conv(x)).split(list(self.heads.values()), dim=1)

    @torch.no_grad()
    def load(self, head: str, **batch_normed_conv: torch.Tensor) -> None:
        """Set the output channels of ``head`` from its kernel and batch-norm tensors."""
        start = sum(list(self.heads.values())[: list(self.heads).index(head)])
        rows = slice(start, start + self.heads[head])
        weight, bias = fold_batch_norm(**batch_normed_conv)
        self.conv.weight[rows] = weight
        self.conv.bias[rows] = bias


def _sequence(**units: nn.Module) -> nn.Sequential:
    return nn.Sequential(OrderedDict(units))


def _block_pool() -> nn.AvgPool2d:
    """TensorFlow's 3x3 'SAME' average pool: padded zeros do not count."""
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block (``mixed`` .. ``mixed_2``): 1x1, 5x5, double 3x3 and pool branches.

    Args:
        in_channels: input channels (192, 256 or 288).
        pool_channels: output channels of the pool branch (32 or 64).
    """

    def __init__(self, in_channels: int, pool_channels: int):
        super().__init__()
        self.heads = PointwiseHeads(in_channels, {"conv": 64, "tower.conv": 48, "tower_1.conv": 64})
        self.tower = _sequence(conv_1=ConvUnit(48, 64, 5, 1, 2))
        self.tower_1 = _sequence(conv_1=ConvUnit(64, 96, 3, 1, 1), conv_2=ConvUnit(96, 96, 3, 1, 1))
        self.tower_2 = _sequence(pool=_block_pool(), conv=ConvUnit(in_channels, pool_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, tower, tower_1 = self.heads(x)
        return torch.cat([conv, self.tower(tower), self.tower_1(tower_1), self.tower_2(x)], 1)


class InceptionB(nn.Module):
    """Grid reduction 35x35 -> 17x17 (``mixed_3``): strided 3x3, double 3x3 and max pool."""

    def __init__(self):
        super().__init__()
        self.conv = ConvUnit(288, 384, 3, 2)
        self.tower = _sequence(
            conv=ConvUnit(288, 64, 1),
            conv_1=ConvUnit(64, 96, 3, 1, 1),
            conv_2=ConvUnit(96, 96, 3, 2),
        )
        self.pool = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.pool(x)], 1)


class InceptionC(nn.Module):
    """17x17 block (``mixed_4`` .. ``mixed_7``) with factorised 1x7 / 7x1 convolutions.

    Args:
        width: channels inside the 7x7 towers (128, 160, 160, 192).
    """

    def __init__(self, width: int):
        super().__init__()
        row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))
        self.heads = PointwiseHeads(768, {"conv": 192, "tower.conv": width, "tower_1.conv": width})
        self.tower = _sequence(
            conv_1=ConvUnit(width, width, row[0], 1, row[1]),
            conv_2=ConvUnit(width, 192, col[0], 1, col[1]),
        )
        self.tower_1 = _sequence(
            conv_1=ConvUnit(width, width, col[0], 1, col[1]),
            conv_2=ConvUnit(width, width, row[0], 1, row[1]),
            conv_3=ConvUnit(width, width, col[0], 1, col[1]),
            conv_4=ConvUnit(width, 192, row[0], 1, row[1]),
        )
        self.tower_2 = _sequence(pool=_block_pool(), conv=ConvUnit(768, 192, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, tower, tower_1 = self.heads(x)
        return torch.cat([conv, self.tower(tower), self.tower_1(tower_1), self.tower_2(x)], 1)


class InceptionD(nn.Module):
    """Grid reduction 17x17 -> 8x8 (``mixed_8``)."""

    def __init__(self):
        super().__init__()
        self.heads = PointwiseHeads(768, {"tower.conv": 192, "tower_1.conv": 192})
        self.tower = _sequence(conv_1=ConvUnit(192, 320, 3, 2))
        self.tower_1 = _sequence(
            conv_1=ConvUnit(192, 192, (1, 7), 1, (0, 3)),
            conv_2=ConvUnit(192, 192, (7, 1), 1, (3, 0)),
            conv_3=ConvUnit(192, 192, 3, 2),
        )
        self.pool = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tower, tower_1 = self.heads(x)
        return torch.cat([self.tower(tower), self.tower_1(tower_1), self.pool(x)], 1)


class InceptionE(nn.Module):
    """8x8 block (``mixed_9``, ``mixed_10``) with split 1x3 / 3x1 outputs.

    Args:
        in_channels: input channels (1280 or 2048).
        max_pool: pool the fourth branch with a max pool (TensorFlow's ``mixed_10``)
            instead of an average pool.
    """

    def __init__(self, in_channels: int, max_pool: bool):
        super().__init__()
        self.heads = PointwiseHeads(
            in_channels, {"conv": 320, "tower_conv": 384, "tower_1_conv": 448}
        )
        self.tower_mixed_conv = ConvUnit(384, 384, (1, 3), 1, (0, 1))
        self.tower_mixed_conv_1 = ConvUnit(384, 384, (3, 1), 1, (1, 0))
        self.tower_1_conv_1 = ConvUnit(448, 384, 3, 1, 1)
        self.tower_1_mixed_conv = ConvUnit(384, 384, (1, 3), 1, (0, 1))
        self.tower_1_mixed_conv_1 = ConvUnit(384, 384, (3, 1), 1, (1, 0))
        self.tower_2_pool = nn.MaxPool2d(3, stride=1, padding=1) if max_pool else _block_pool()
        self.tower_2_conv = ConvUnit(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, a, b = self.heads(x)
        b = self.tower_1_conv_1(b)
        branches = [
            conv,
            self.tower_mixed_conv(a),
            self.tower_mixed_conv_1(a),
            self.tower_1_mixed_conv(b),
            self.tower_1_mixed_conv_1(b),
            self.tower_2_conv(self.tower_2_pool(x)),
        ]
        return torch.cat(branches, 1)


class FIDInception(nn.Module):
    """TensorFlow's 2015-12-05 Inception-v3 up to ``pool_3`` (and the logits, optionally).

    Input: float [N, 3, 299, 299], pixel values mapped from 0..255 by (x - 128) / 128 (see
    :mod:`diffuse.eval.preprocess`). Build it with :meth:`from_weights`.

    Args:
        logits: include the 1008-way logits layer (needs weights that have it).
    """

    def __init__(self, logits: bool = False):
        super().__init__()
        self.conv = ConvUnit(3, 32, 3, 2)
        self.conv_1 = ConvUnit(32, 32, 3)
        self.conv_2 = ConvUnit(32, 64, 3, 1, 1)
        self.pool0 = nn.MaxPool2d(3, stride=2)
        self.conv_3 = ConvUnit(64, 80, 1)
        self.conv_4 = ConvUnit(80, 192, 3)
        self.pool1 = nn.MaxPool2d(3, stride=2)
        self.mixed = InceptionA(192, 32)
        self.mixed_1 = InceptionA(256, 64)
        self.mixed_2 = InceptionA(288, 64)
        self.mixed_3 = InceptionB()
        self.mixed_4 = InceptionC(128)
        self.mixed_5 = InceptionC(160)
        self.mixed_6 = InceptionC(160)
        self.mixed_7 = InceptionC(192)
        self.mixed_8 = InceptionD()
        self.mixed_9 = InceptionE(1280, max_pool=False)
        self.mixed_10 = InceptionE(2048, max_pool=True)
        self.output = nn.Linear(POOL_DIM, NUM_LOGITS, bias=False) if logits else None

    @classmethod
    def from_weights(cls, weights: InceptionWeights) -> FIDInception:
        """Build the network in eval mode from weights in NVIDIA's naming."""
        network = cls(logits=weights.has_logits)
        for name, module in network.named_modules():
            if isinstance(module, ConvUnit):
                module.load(**_batch_normed_conv(weights, name, module.conv.weight.shape))
            elif isinstance(module, PointwiseHeads):
                block = name.rpartition(".")[0]
                for head, channels in module.heads.items():
                    shape = (channels, *module.conv.weight.shape[1:])
                    module.load(head, **_batch_normed_conv(weights, f"{block}.{head}", shape))
        if network.output is not None:
            output = weights.tensors["output.weight"]
            if output.shape != network.output.weight.shape:
                raise CheckpointError(
                    f"{weights.path}: output.weight has shape {tuple(output.shape)}, "
                    f"expected {tuple(network.output.weight.shape)}"
                )
            with torch.no_grad():
                network.output.weight.copy_(output)
        return network.eval().requires_grad_(False)

    def forward(
        self, x: torch.Tensor, *, spatial: bool = False, logits: bool = False
    ) -> InceptionOutputs:
        """Run the network; ``spatial`` / ``logits`` ask for those taps too."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
            raise DataError(
                f"the FID Inception takes a batch [N, 3, {INPUT_SIZE}, {INPUT_SIZE}], got "
                f"{list(x.shape)}; resize images with diffuse.eval.preprocess.to_inception_input "
                "(or call diffuse.eval.inception_features, which does it)"
            )
        if logits and self.output is None:
            raise CheckpointError(f"these Inception weights have no logits layer: {LOGITS_HINT}")
        for layer in (self.conv, self.conv_1, self.conv_2, self.pool0, self.conv_3, self.conv_4):
            x = layer(x)
        x = self.pool1(x)
        for block in (self.mixed, self.mixed_1, self.mixed_2, self.mixed_3, self.mixed_4):
            x = block(x)
        x = self.mixed_6(self.mixed_5(x))
        # The block's output starts with its ``conv`` branch, so these are mixed_6/conv's.
        tap = x[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).flatten(1) if spatial else None
        for block in (self.mixed_7, self.mixed_8, self.mixed_9, self.mixed_10):
            x = block(x)
        pool = x.mean(dim=(2, 3), dtype=torch.float32)  # pool_3: 8x8 average
        return InceptionOutputs(pool, tap, self.output(pool) if logits else None)


def _batch_normed_conv(weights: InceptionWeights, name: str, shape) -> dict[str, torch.Tensor]:
    """Kernel and batch-norm tensors of the convolution ``name``, checked against ``shape``."""
    tensors = weights.tensors
    try:
        parts = {key: tensors[f"{name}.{key}"] for key in ("weight", "beta", "mean", "var")}
    except KeyError as error:
        raise CheckpointError(
            f"{weights.path} lacks the Inception tensor {error.args[0]!r}"
        ) from error
    if parts["weight"].shape != shape:
        raise CheckpointError(
            f"{weights.path}: {name}.weight has shape {tuple(parts['weight'].shape)}, "
            f"the FID Inception needs {tuple(shape)}"
        )
    return parts | {"gamma": tensors.get(f"{name}.gamma")}
