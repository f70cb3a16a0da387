"""Building blocks of the U-Net family: normalisation, embeddings, residual and attention blocks.

Every block works on NCHW tensors in either memory format; channels_last is the fast one
on CPUs and on tensor cores. Under bf16/fp16 autocast the convolutions and matrix products
run in low precision while every GroupNorm computes its statistics and normalisation in
float32 (:class:`GroupNorm32`), as ADM does for its fp16 training (Dhariwal & Nichol 2021,
appendix; guided-diffusion's ``GroupNorm32``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from diffuse.nn.dropout import Dropout
from diffuse.nn.group_norm import fused_group_norm_applies, group_norm_act


class GroupNorm32(nn.GroupNorm):
    """GroupNorm (Wu & He 2018) computed in float32 whatever the input's precision, with
    the adaptive scale-shift (ADM section 3) and the SiLU that follow it where asked.

    The result is returned in the input's dtype, so the next convolution stays in the
    autocast precision. ATen's kernels accumulate bf16/fp16 inputs in float32, and on the
    CPU take float32 affine parameters with them: there the call is direct (normalising
    ``x.float()`` and rounding, to within one rounding, without the copies); elsewhere the input is
    cast to float32 explicitly. Channels_last float32 and bf16 inputs on the CPU go through
    :func:`~diffuse.nn.group_norm.group_norm_act`, one autograd function for all three
    steps (statistics in float32 for bf16, as here); on NCHW inputs the scale-shift joins
    GroupNorm's own affine map (:meth:`normalize_scaled`).
    """

    def forward(
        self,
        x: torch.Tensor,
        scale: torch.Tensor | None = None,
        shift: torch.Tensor | None = None,
        silu: bool = False,
    ) -> torch.Tensor:
        """SiLU(GN(x) * (1 + scale) + shift): the scale-shift when ``scale`` and ``shift``
        ([N, C, 1, 1]) are given, the SiLU when ``silu``."""
        if fused_group_norm_applies(x) and x.dtype in (self.weight.dtype, torch.bfloat16):
            return group_norm_act(
                x, self.weight, self.bias, self.num_groups, self.eps, scale, shift, silu
            )
        if scale is not None and x.is_contiguous():
            h = self.normalize_scaled(x, scale, shift)
        else:
            h = self.normalize(x, self.num_groups, self.weight, self.bias)
            if scale is not None:
                h = torch.addcmul(shift, h, 1 + scale)
        return F.silu(h) if silu else h

    def normalize_scaled(
        self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor
    ) -> torch.Tensor:
        """GN(x) * (1 + scale) + shift for a contiguous (NCHW) ``x`` as one GroupNorm.

        Per image the scale-shift is an affine map of each channel, like GroupNorm's own
        gamma and beta: seen as one image of N x C channels in N x groups groups, the batch
        normalises exactly as before and takes gamma (1 + scale) and beta (1 + scale) +
        shift as its per-channel weight and bias. One kernel instead of two: in bf16 on a
        Zen 4 EPYC, whose bf16 ``addcmul`` is not vectorised, 2-5x faster than GroupNorm
        and a separate scale-shift in the forward pass and 1.1-1.6x in training
        (``benchmarks/bench_layers.py``), and one rounding instead of two.
        """
        n, c, height, width = x.shape
        dtype = self.weight.dtype
        factor = 1 + scale.reshape(n, c).to(dtype)
        weight = (self.weight * factor).reshape(n * c)
        bias = torch.addcmul(shift.reshape(n, c).to(dtype), self.bias, factor).reshape(n * c)
        folded = x.view(1, n * c, height, width)
        return self.normalize(folded, n * self.num_groups, weight, bias).view(n, c, height, width)

    def normalize(
        self, x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor
    ) -> torch.Tensor:
        """GroupNorm of ``x`` by the framework's kernels, in the precision of ``weight``."""
        if x.dtype == weight.dtype or x.device.type == "cpu":
            return F.group_norm(x, groups, weight, bias, self.eps)
        with torch.autocast(device_type=x.device.type, enabled=False):
            normed = F.group_norm(x.float(), groups, weight.float(), bias.float(), self.eps)
        return normed.to(x.dtype)


def zero_init(module: nn.Module) -> nn.Module:
    """Set every parameter of ``module`` to zero (ADM's zero-initialised output layers)."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of the (possibly scaled) timesteps ``t`` [N] -> [N, dim].

    The Transformer's position encoding (Vaswani et al. 2017, section 3.5) used by DDPM
    (appendix B): frequencies ``max_period ** (-i / (dim // 2))`` for ``i < dim // 2``, cosines
    first then sines (ADM's order), one zero feature appended when ``dim`` is odd.
    """
    half = dim // 2
    exponents = torch.arange(half, dtype=torch.float32, device=t.device) / half
    frequencies = torch.exp(-math.log(max_period) * exponents)
    angles = t.float()[:, None] * frequencies[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


class TimestepMLP(nn.Module):
    """Two dense layers with a SiLU between them, applied to the sinusoidal features.

    in_features:  width of the sinusoidal features (the model's base width).
    out_features: width of the embedding shared by every residual block.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear1 = nn.Linear(in_features, out_features)
        self.linear2 = nn.Linear(out_features, out_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear2(F.silu(self.linear1(features)))


def downsample2x(x: torch.Tensor) -> torch.Tensor:
    """Average pooling over 2x2 blocks."""
    return F.avg_pool2d(x, kernel_size=2, stride=2)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour upsampling by 2."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def upsample2x_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(upsample2x(x))`` for a 3x3 convolution with padding 1, with 16 multiply-adds
    per output pixel and channel pair instead of 36.

    After nearest-neighbour upsampling a 3x3 window covers only 2x2 distinct input pixels,
    and which of its taps share a pixel depends only on the output pixel's parity: output
    row 2i sees input row i-1 through tap 0 and row i through taps 1 and 2; row 2i+1 sees
    row i through taps 0 and 1 and row i+1 through tap 2 (columns alike). A transposed
    convolution of stride 2 and padding 1 whose 4x4 kernel has, along each axis, the taps
    (w2, w1 + w2, w0 + w1, w0) computes exactly these sums on ``x`` itself, so neither the
    upsampled tensor nor the repeated products exist: at the networks' shapes 1.5-2.5x
    faster than upsampling and convolving in the forward pass and 1.5-2.1x in training, in
    float32 and bf16, on a Zen 4 EPYC (``benchmarks/bench_layers.py``). The convolution's
    own weights are used (and trained): checkpoints do not change.
    """
    # built in the transposed convolution's [in, out, 4, 4] layout, contiguous
    kernel = _parity_taps(_parity_taps(conv.weight.transpose(0, 1), 2), 3)
    return F.conv_transpose2d(x, kernel, conv.bias, stride=2, padding=1)


def _parity_taps(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """The 3 taps (w0, w1, w2) along ``dim`` as the 4 of :func:`upsample2x_conv`'s kernel."""
    w0, w1, w2 = weight.unbind(dim)
    return torch.stack([w2, w1 + w2, w0 + w1, w0], dim)


class ResBlock(nn.Module):
    """Residual block conditioned on the embedding (DDPM appendix B; ADM section 3).

    h = conv1(SiLU(GN(x))), then either GN(h + W e) (additive, DDPM) or
    GN(h) * (1 + s) + b with (s, b) = W e (adaptive GroupNorm, ADM eq. in section 3), then
    conv2(dropout(SiLU(.))) added to the skip path. With ``resample`` it is a BigGAN
    up/down-sampling block (Brock et al. 2019): both paths are resampled after the first
    activation.

    in_channels:      channels of the input features.
    out_channels:     channels of the output features (a 1x1 convolution adapts the skip).
    embedding_channels: width of the (activated) embedding the block receives.
    dropout:          dropout rate before the second convolution.
    scale_shift_norm: adaptive GroupNorm instead of an added embedding.
    norm_groups:      groups of both GroupNorms.
    resample:         None, "up" (nearest x2) or "down" (average pooling /2).
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
        resample: str | None = None,
    ):
        super().__init__()
        self.scale_shift_norm = scale_shift_norm
        self.resample = {None: None, "up": upsample2x, "down": downsample2x}[resample]
        self.norm1 = GroupNorm32(norm_groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embedding = nn.Linear(
            embedding_channels, out_channels * (2 if scale_shift_norm else 1)
        )
        self.norm2 = GroupNorm32(norm_groups, out_channels)
        self.dropout = Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """``x`` [N, C, H, W] features, ``emb`` [N, E] the SiLU of the embedding."""
        h = self.norm1(x, silu=True)
        if self.resample is upsample2x:
            h, x = upsample2x_conv(h, self.conv1), upsample2x(x)
        elif self.resample is not None:
            h, x = self.conv1(self.resample(h)), self.resample(x)
        else:
            h = self.conv1(h)
        h = conditioned_norm(h, self.embedding(emb), self.norm2, self.scale_shift_norm, silu=True)
        h = self.conv2(self.dropout(h))
        return self.skip(x) + h


def conditioned_norm(
    h: torch.Tensor,
    cond: torch.Tensor,
    norm: GroupNorm32,
    scale_shift: bool,
    silu: bool = False,
) -> torch.Tensor:
    """Normalise ``h`` [N, C, H, W] under the projected embedding ``cond`` [N, C or 2C].

    Adaptive GroupNorm (ADM section 3): ``norm(h) * (1 + s) + b`` with ``(s, b)`` the two
    halves of ``cond``; otherwise the embedding is added before the norm, ``norm(h + cond)``
    (DDPM). The SiLU that follows in a residual block is applied too when ``silu``, in the
    same pass where :class:`GroupNorm32` fuses them.
    """
    cond = cond.to(h.dtype)[:, :, None, None]
    if scale_shift:
        scale, shift = cond.chunk(2, dim=1)
        return norm(h, scale, shift, silu=silu)
    return norm(h + cond, silu=silu)


def multihead_attention(qkv: torch.Tensor, heads: int, order: str) -> torch.Tensor:
    """Scaled dot-product attention (Vaswani et al. 2017, eq. 1) of fused projections.

    ``qkv`` [N, L, 3C] holds queries, keys and values of ``heads`` heads, laid out as
    (head, q/k/v, channel) when ``order`` is "legacy" and as (q/k/v, head, channel) when it
    is "new" (the two layouts of guided-diffusion). Returns [N, L, C].
    """
    n, length, width = qkv.shape
    head_channels = width // (3 * heads)
    if order == "legacy":
        q, k, v = qkv.view(n, length, heads, 3, head_channels).unbind(3)
    else:
        q, k, v = qkv.view(n, length, 3, heads, head_channels).unbind(2)
    out = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2).reshape(n, length, heads * head_channels)


# The explicit steps hold an L x L matrix of scores per head and image, which the fused
# kernel never does: beyond a 32x32 feature map the fused kernel runs, whatever its speed.
EXPLICIT_MAX_TOKENS = 1024


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v (Vaswani et al. 2017, eq. 1) over [N, heads, L, d].

    Training in bf16 on the CPU takes :func:`explicit_attention` up to
    :data:`EXPLICIT_MAX_TOKENS` tokens: the backward pass of PyTorch's fused CPU kernel is
    the slow one there, forward + backward 2.3-5.8x the explicit steps' time at the U-Nets'
    49-256 tokens, which makes a whole bf16 training step 1.05-1.24x faster on a Zen 4 EPYC
    with AVX512-BF16 (``benchmarks/bench_attention.py``). Without autograd (sampling) the
    fused kernel runs, as everywhere else: in a whole forward pass neither wins
    consistently (1.0-1.12x over four runs, and slower in a profile).
    """
    if (
        q.device.type == "cpu"
        and q.dtype == torch.bfloat16
        and torch.is_grad_enabled()
        and q.shape[-2] <= EXPLICIT_MAX_TOKENS
    ):
        return explicit_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v)


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attention as three separate steps: scores, softmax, weighted sum of the values.

    In bf16 this is guided-diffusion's computation: the scores are rounded to bf16 and the
    softmax accumulates in float32 inside its kernel. The error is of the order of bf16's
    rounding, about twice the fused kernel's, which keeps the scores in float32
    (``bench_attention.py`` prints both: 4e-3 against 2e-3 relative on the output).
    """
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2))
    return torch.matmul(scores.softmax(-1), v)


class SelfAttention(nn.Module):
    """Residual self-attention over all pixels (DDPM appendix B; ADM section 3).

    x + proj(attention(qkv(GN(x)))), with the output projection zero-initialised.

    channels:    channels of the features.
    heads:       number of attention heads.
    order:       layout of the fused q, k, v projection, "legacy" or "new".
    norm_groups: groups of the GroupNorm.
    """

    def __init__(self, channels: int, heads: int, order: str, norm_groups: int):
        super().__init__()
        self.heads = heads
        self.order = order
        self.norm = GroupNorm32(norm_groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_init(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, height, width = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(n, height * width, c)
        out = self.proj(multihead_attention(self.qkv(tokens), self.heads, self.order))
        return x + out.view(n, height, width, c).permute(0, 3, 1, 2)


class AttentionPool(nn.Module):
    """Attention pooling of ADM's classifier head (section 4.1), after CLIP (Radford et al.
    2021): the mean of the features attends, with learned position embeddings, to all pixels.

    size:         height and width of the pooled features.
    channels:     channels of the pooled features.
    heads:        number of attention heads.
    out_features: number of outputs (logits).
    """

    def __init__(self, size: int, channels: int, heads: int, out_features: int):
        super().__init__()
        self.heads = heads
        self.position = nn.Parameter(torch.randn(size * size + 1, channels) / channels**0.5)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        tokens = tokens + self.position.to(tokens.dtype)
        pooled = multihead_attention(self.qkv(tokens), self.heads, "new")[:, 0]
        return self.proj(pooled)


class Downsample(nn.Module):
    """Halve the resolution with a 3x3 convolution of stride 2 (DDPM).

    channels: channels of the input and output features.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour upsampling, then a 3x3 convolution (DDPM),
    computed as one transposed convolution (:func:`upsample2x_conv`).

    channels: channels of the input and output features.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return upsample2x_conv(x, self.conv)


def run_block(block: nn.Module, checkpointed: bool, *inputs: torch.Tensor | None) -> torch.Tensor:
    """``block(*inputs)``, recomputed in the backward pass when ``checkpointed`` (Chen et al.
    2016, gradient checkpointing) and gradients are being recorded."""
    if checkpointed and torch.is_grad_enabled():
        return checkpoint(block, *inputs, use_reentrant=False)
    return block(*inputs)
