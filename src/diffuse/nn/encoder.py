"""The encoder half shared by the U-Net, the upsampler and the noisy classifier.

A stem convolution, then one :class:`Level` per resolution (units running the block
recipe, by default a residual block and self-attention where configured, then
downsampling except at the last level), then the middle block (residual, attention,
residual). :class:`Network` is the common base of the three networks:
the configuration, the timestep embedding, the encoder and the checks of the inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffuse.errors import DataError
from diffuse.nn.blocks import ChannelAttention, ClassAttention, ConvNeXtBlock
from diffuse.nn.layers import (
    Downsample,
    ResBlock,
    SelfAttention,
    TimestepMLP,
    Upsample,
    run_block,
    timestep_embedding,
)
from diffuse.nn.network_config import WIDENING_BLOCKS, EncoderConfig

# Module names of the recipe's blocks inside a unit; "atn" keeps the name the papers'
# attention always had, so default-recipe checkpoints load unchanged.
_CHILD_NAMES = {"atn": "attn"}


class RecipeBlock(nn.Module):
    """One unit of a level: the blocks of the configuration's recipe, run in order.

    blocks: (kind, module) pairs, kind one of "res", "conv", "atn", "clsatn", "chnatn".

    Each block is a child named after its kind ("attn" for "atn"); a kind's second and
    later blocks add their count ("res2"). So a default-recipe unit holds ``res`` and, where
    the level attends, ``attn``: the papers' residual block with attention. "res" and
    "conv" take the embedding, "clsatn" the conditioning tokens, the others only x.
    """

    def __init__(self, blocks: list[tuple[str, nn.Module]]):
        super().__init__()
        self.order: list[tuple[str, str]] = []
        for kind, module in blocks:
            base = _CHILD_NAMES.get(kind, kind)
            count = sum(1 for seen, _ in self.order if seen == kind) + 1
            name = base if count == 1 else f"{base}{count}"
            self.add_module(name, module)
            self.order.append((kind, name))

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor, tokens: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x`` features, ``emb`` [N, E] the SiLU of the embedding, ``tokens`` [N, 2, E] the
        activated time and class embeddings (needed by "clsatn" only)."""
        for kind, name in self.order:
            block = self._modules[name]
            if kind in WIDENING_BLOCKS:
                x = block(x, emb)
            elif kind == "clsatn":
                x = block(x, tokens)
            else:
                x = block(x)
        return x


class Level(nn.Module):
    """The blocks working at one resolution and the resampler that leaves it (or None)."""

    def __init__(self, blocks: list[RecipeBlock], resample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.resample = resample


class MiddleBlock(nn.Module):
    """Residual block, self-attention, residual block at the lowest resolution.

    The same in every recipe: the recipe describes the levels (issue 14: "each U-Net level
    runs a block recipe"), and the middle keeps the papers' global attention at the lowest
    resolution, where it is cheapest. (The article's middle runs its recipe, ECA, its
    recipe.)
    """

    def __init__(self, config: EncoderConfig, channels: int):
        super().__init__()
        self.res1 = residual_block(config, channels, channels)
        self.attn = attention_block(config, channels)
        self.res2 = residual_block(config, channels, channels)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.res2(self.attn(self.res1(x, emb)), emb)


def residual_block(
    config: EncoderConfig, in_channels: int, out_channels: int, resample: str | None = None
) -> ResBlock:
    """A :class:`ResBlock` with the configuration's embedding, dropout and normalisation."""
    return ResBlock(
        in_channels,
        out_channels,
        config.embedding_channels,
        dropout=config.dropout,
        scale_shift_norm=config.scale_shift_norm,
        norm_groups=config.norm_groups,
        resample=resample,
    )


def attention_block(config: EncoderConfig, channels: int) -> SelfAttention:
    """A :class:`SelfAttention` with the configuration's heads and q, k, v layout."""
    return SelfAttention(
        channels, config.attention_heads(channels), config.attention_order, config.norm_groups
    )


def recipe_entry(
    config: EncoderConfig, kind: str, in_channels: int, out_channels: int
) -> nn.Module:
    """The block ``kind`` of a recipe with the configuration's settings; "res" and "conv"
    map ``in_channels`` to ``out_channels``, the others work at ``out_channels``."""
    if kind == "res":
        return residual_block(config, in_channels, out_channels)
    if kind == "conv":
        return ConvNeXtBlock(
            in_channels,
            out_channels,
            config.embedding_channels,
            dropout=config.dropout,
            scale_shift_norm=config.scale_shift_norm,
            norm_groups=config.norm_groups,
        )
    if kind == "atn":
        return attention_block(config, out_channels)
    if kind == "clsatn":
        heads = config.attention_heads(out_channels)
        return ClassAttention(out_channels, config.embedding_channels, heads, config.norm_groups)
    return ChannelAttention(out_channels)


def level_block(
    config: EncoderConfig, level: int, in_channels: int, out_channels: int
) -> RecipeBlock:
    """A unit of ``level`` running the recipe; its "atn" blocks only where the level
    attends (``attention_resolutions``). The first block (always "res" or "conv") maps
    ``in_channels`` to ``out_channels``."""
    blocks = []
    channels = in_channels
    for kind in config.blocks:
        if kind == "atn" and not config.uses_attention(level):
            continue
        blocks.append((kind, recipe_entry(config, kind, channels, out_channels)))
        channels = out_channels
    return RecipeBlock(blocks)


def resampler(config: EncoderConfig, channels: int, direction: str) -> nn.Module:
    """A block changing the resolution by 2 in ``direction`` ("up" or "down")."""
    if config.resample == "resblock":
        return residual_block(config, channels, channels, resample=direction)
    return Upsample(channels) if direction == "up" else Downsample(channels)


class Encoder(nn.Module):
    """Stem convolution, the downward levels and the middle block.

    config:      the network's settings.
    in_channels: channels of the tensor given to the stem (the upsampler doubles them).

    ``skip_channels`` lists the channels of the features kept for the decoder's skip
    connections, in the order they are produced.
    """

    def __init__(self, config: EncoderConfig, in_channels: int):
        super().__init__()
        self.checkpointed = config.gradient_checkpointing
        widths = config.level_channels
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        channels = widths[0]
        self.skip_channels = [channels]
        levels = []
        for level, width in enumerate(widths):
            blocks = []
            for _ in range(config.num_res_blocks):
                blocks.append(level_block(config, level, channels, width))
                channels = width
                self.skip_channels.append(channels)
            down = None
            if level < config.levels - 1:
                down = resampler(config, channels, "down")
                self.skip_channels.append(channels)
            levels.append(Level(blocks, down))
        self.levels = nn.ModuleList(levels)
        self.middle = MiddleBlock(config, channels)
        self.out_channels = channels

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor, tokens: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Features after the middle block, and the features kept for skip connections.

        ``emb`` is the activated embedding, ``tokens`` the conditioning tokens of class
        attention (None when the recipe has none)."""
        checkpointed = self.checkpointed and self.training
        h = self.stem(x)
        skips = [h]
        for level in self.levels:
            for block in level.blocks:
                h = run_block(block, checkpointed, h, emb, tokens)
                skips.append(h)
            if level.resample is not None:
                h = run_block(level.resample, checkpointed, h, emb)
                skips.append(h)
        return run_block(self.middle, checkpointed, h, emb), skips


class Network(nn.Module):
    """Common base of the U-Net family: settings, timestep embedding, encoder, input checks.

    config:         the network's settings (kept as ``self.config``).
    stem_channels:  channels the encoder's first convolution receives.

    Subclasses keep their weights in channels_last memory format, the faster one for
    convolutions on CPUs and GPUs in float32; :meth:`encode` converts inputs on entry to
    the layout of the weights, so that a network moved to NCHW (``precision=auto`` times
    that layout for bf16, where it can be the faster one) runs in NCHW throughout.
    """

    def __init__(self, config: EncoderConfig, stem_channels: int):
        super().__init__()
        self.config = config
        self.time_embed = TimestepMLP(config.model_channels, config.embedding_channels)
        self.encoder = Encoder(config, stem_channels)

    @property
    def image_size(self) -> int:
        """Height and width of the images in pixels."""
        return self.config.image_size

    @property
    def in_channels(self) -> int:
        """Channels of the input images."""
        return self.config.in_channels

    @property
    def out_channels(self) -> int:
        """Channels of the output (or number of logits of a classifier)."""
        return self.config.out_channels

    def embed_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Embedding [N, 4 * model_channels] of the timestep indices ``t`` [N]."""
        scaled = t.float() * self.config.timestep_scale if self.config.timestep_scale != 1 else t
        return self.time_embed(timestep_embedding(scaled, self.config.model_channels))

    @property
    def memory_format(self) -> torch.memory_format:
        """The layout the network computes in: that of its convolution weights (read from
        the middle block's, which has more than one input channel, so the two layouts differ)."""
        weight = self.encoder.middle.res1.conv1.weight
        if weight.is_contiguous(memory_format=torch.channels_last):
            return torch.channels_last
        return torch.contiguous_format

    def encode(self, x: torch.Tensor, emb: torch.Tensor, tokens: torch.Tensor | None = None):
        """Run the encoder on ``x`` in the weights' layout (:attr:`memory_format`) with the
        SiLU of the embedding (and the conditioning tokens of class attention)."""
        return self.encoder(x.contiguous(memory_format=self.memory_format), F.silu(emb), tokens)

    def check_input(self, x: torch.Tensor, t: torch.Tensor) -> None:
        """Raise :class:`DataError` unless ``x`` is [N, C, S, S] and ``t`` is [N]."""
        size = self.config.image_size
        expected = (self.config.in_channels, size, size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise DataError(
                f"this {self.config.kind} network takes images of shape [N, {expected[0]}, "
                f"{size}, {size}] ({expected[0]} channels, {size}x{size} pixels), got "
                f"{tuple(x.shape)}; resize the images or use a network built for their size"
            )
        if t.shape != (x.shape[0],):
            raise DataError(
                f"timesteps t must have shape [{x.shape[0]}] (one per image), got {tuple(t.shape)}"
            )
