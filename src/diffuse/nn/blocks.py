"""The blocks a U-Net recipe adds to the papers' residual block and self-attention.

Issue 14 follows the DDPM/DDIM/classifier-free-guidance article (G. Mongaras, code at
github.com/gmongaras/Diffusion_models_from_scratch) that builds each U-Net level from a
recipe of blocks and compares recipes. Besides ``res`` (:class:`~diffuse.nn.layers.ResBlock`)
and ``atn`` (:class:`~diffuse.nn.layers.SelfAttention`) a recipe draws from:

- ``conv``: :class:`ConvNeXtBlock`, a ConvNeXt block (Liu et al. 2022) conditioned on the
  timestep and class embedding;
- ``clsatn``: :class:`ClassAttention`, each pixel attending to the time and class embeddings;
- ``chnatn``: :class:`ChannelAttention`, efficient channel attention (ECA, Wang et al. 2020).

Our ``atn`` is the papers' global self-attention over all pixels of a level, run at the
configured ``attention_resolutions`` (as issue 14 asks). The article's own ``atn`` block
differs: it cuts the feature map into non-overlapping patches of ``atn_resolution`` (16)
pixels and attends within each patch (the whole map when it is no larger than a patch).

Where the article leaves a choice open, each docstring says what we chose and why. Every
block keeps the network's conventions: NCHW tensors in either memory format, GroupNorm
statistics in float32 under autocast (:class:`~diffuse.nn.layers.GroupNorm32`), and the
last layer of a residual branch zero-initialised, so a fresh block is the identity on its
skip path (ADM; ConvNeXt's layer scale starts near zero for the same reason).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from diffuse.nn.dropout import Dropout
from diffuse.nn.layers import GroupNorm32, conditioned_norm, zero_init

# ConvNeXt's inverted bottleneck: the MLP is four times as wide as the block.
CONVNEXT_EXPANSION = 4


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block (Liu et al. 2022, figure 4) with the timestep and class embedding.

    h = DWConv7x7(x); h = GN(h) * (1 + s) + b with (s, b) = W e (adaptive GroupNorm), or
    GN(h + W e) without scale-shift; then the inverted bottleneck
    Conv1x1(dropout(GELU(Conv1x1(h)))) from ``in_channels`` to 4 x ``out_channels`` and
    back to ``out_channels``, added to the skip path (x, or a 1x1 convolution of x when
    the widths differ).

    Choices the article leaves open:
    - the embedding enters after the depthwise convolution, where the article adds it, and
      in the way the residual blocks of the same network take it (``scale_shift_norm``),
      so that swapping ``res`` for ``conv`` changes the block, not the conditioning;
    - GroupNorm with the network's groups instead of ConvNeXt's per-pixel LayerNorm (the
      issue allows either): the same normalisation as every other block, in float32 under
      autocast;
    - dropout before the last projection, as in the residual block, instead of ConvNeXt's
      stochastic depth (one regularisation setting for the whole network);
    - the last projection zero-initialised (the role of ConvNeXt's layer scale, 1e-6 at
      the start): a fresh block passes its skip path through.

    in_channels:        channels of the input features.
    out_channels:       channels of the output features.
    embedding_channels: width of the (activated) embedding the block receives.
    dropout:            dropout rate before the last projection.
    scale_shift_norm:   adaptive GroupNorm instead of an added embedding.
    norm_groups:        groups of the GroupNorm.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        embedding_channels: int,
        *,
        dropout: float,
        scale_shift_norm: bool,
        norm_groups: int,
    ):
        super().__init__()
        hidden = CONVNEXT_EXPANSION * out_channels
        self.scale_shift_norm = scale_shift_norm
        self.depthwise = nn.Conv2d(in_channels, in_channels, 7, padding=3, groups=in_channels)
        self.embedding = nn.Linear(embedding_channels, in_channels * (2 if scale_shift_norm else 1))
        self.norm = GroupNorm32(norm_groups, in_channels)
        self.expand = nn.Conv2d(in_channels, hidden, 1)
        self.dropout = Dropout(dropout)
        self.project = zero_init(nn.Conv2d(hidden, out_channels, 1))
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """``x`` [N, C, H, W] features, ``emb`` [N, E] the SiLU of the embedding."""
        h = self.depthwise(x)
        h = conditioned_norm(h, self.embedding(emb), self.norm, self.scale_shift_norm)
        h = self.project(self.dropout(F.gelu(self.expand(h))))
        return self.skip(x) + h


def split_heads(tokens: torch.Tensor, heads: int) -> torch.Tensor:
    """[N, L, C] -> [N, heads, L, C / heads]: the layout of scaled_dot_product_attention."""
    n, length, channels = tokens.shape
    return tokens.view(n, length, heads, channels // heads).transpose(1, 2)


class ClassAttention(nn.Module):
    """Class attention: every pixel attends to the timestep and class embeddings.

    out = x + W_o MHA(Q = W_q GN(x), K = W_k s, V = W_v s), where the queries are the
    pixels' normalised features and the keys and values come from the two conditioning
    tokens s = (SiLU(time embedding), SiLU(class embedding)); multi-head scaled dot-product
    attention (Vaswani et al. 2017, eq. 1) with the network's heads; W_o zero-initialised.
    Each pixel thus takes its own softmax-weighted mixture of a time vector and a class
    vector, so the class is injected where the features ask for it.

    Choices the article leaves open:
    - pixels query, conditioning tokens answer. The article's released block builds a
      channel-by-channel softmax from the class embedding alone and sums it over its last
      axis, which gives 1 for every row: its output does not depend on the class at all.
      Attention over a single token would be as blind (a softmax over one key is 1), so
      the time and class embeddings are two separate tokens, which also lets a pixel weigh
      "how noisy" against "which class";
    - the embeddings enter activated (SiLU), as every other block receives the embedding;
    - it runs at every level (no gating by ``attention_resolutions``): its cost is linear
      in the pixels (two keys), unlike spatial self-attention.

    channels:           channels of the features.
    embedding_channels: width of the time and class embeddings.
    heads:              number of attention heads.
    norm_groups:        groups of the GroupNorm.
    """

    def __init__(self, channels: int, embedding_channels: int, heads: int, norm_groups: int):
        super().__init__()
        self.heads = heads
        self.norm = GroupNorm32(norm_groups, channels)
        self.query = nn.Linear(channels, channels)
        self.key_value = nn.Linear(embedding_channels, 2 * channels)
        self.proj = zero_init(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``x`` [N, C, H, W] features, ``tokens`` [N, 2, E] the activated time and class
        embeddings."""
        n, c, height, width = x.shape
        pixels = self.norm(x).permute(0, 2, 3, 1).reshape(n, height * width, c)
        keys, values = self.key_value(tokens).chunk(2, dim=-1)
        out = F.scaled_dot_product_attention(
            split_heads(self.query(pixels), self.heads),
            split_heads(keys, self.heads),
            split_heads(values, self.heads),
        )
        out = self.proj(out.transpose(1, 2).reshape(n, height * width, c))
        return x + out.view(n, height, width, c).permute(0, 3, 1, 2)


def eca_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    """ECA's adaptive kernel size k = |log2(C) / gamma + b / gamma|_odd (Wang et al. 2020,
    eq. 12), with the paper's gamma = 2, b = 1.

    "odd" as in the paper's code: truncate to an integer, then take the next odd number if
    it is even (the nearest odd number, ties rounded up): 16 channels -> 3, 64 -> 3,
    128 -> 5, 512 -> 5, 2048 -> 7.
    """
    k = int(abs(math.log2(channels) / gamma + b / gamma))
    return k if k % 2 else k + 1


class ChannelAttention(nn.Module):
    """Efficient channel attention (ECA, Wang et al. 2020, figure 2): a per-channel gate.

    g = sigmoid(Conv1d_k(GAP(x))) over the channel axis, out = x * g: global average
    pooling gives one number per channel, a 1-D convolution without bias across
    neighbouring channels (kernel :func:`eca_kernel_size`, zero-padded at the ends) and a
    sigmoid give each channel's gate.

    Choices the article leaves open: it takes no timestep or class input (ECA as
    published, and as the article uses it; the gate still depends on them through the
    features), and it is a gate, not a residual branch, as in ECA.

    channels: channels of the features.
    """

    def __init__(self, channels: int):
        super().__init__()
        k = eca_kernel_size(channels)
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        gate = torch.sigmoid(self.conv(x.mean(dim=(2, 3))[:, None, :]))
        return x * gate.view(n, c, 1, 1)
