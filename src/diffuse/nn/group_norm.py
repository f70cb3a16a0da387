"""GroupNorm, adaptive scale-shift and SiLU as one autograd function for channels_last CPU
tensors: what every residual block of the U-Net computes (ADM section 3).

    z = GN(x) * (1 + scale) + shift,   y = SiLU(z)

GN(x) = (x - mu_g) / sqrt(var_g + eps) * gamma + beta normalises each group g of channels
of each image over its channels and pixels (Wu & He 2018, eq. 1-3). Per image n and channel
c everything before the activation is one affine map of x, z = a[n, c] x + b[n, c] with

    a = rstd_g gamma (1 + scale),   b = (beta - mu_g rstd_g gamma) (1 + scale) + shift,

so the forward pass is two per-channel sums over the pixels (of x, then of (x - mu_g)^2:
the two-pass variance), one fused multiply-add and the SiLU, and keeps only x and
per-channel numbers for the backward pass, which recomputes z. The backward pass is the same algebra: with s1 = sum_hw dz and
s2 = sum_hw dz x per (n, c), every gradient is a per-channel combination of s1 and s2, and
dx = A dz + B x + C with per-channel A, B, C (the GroupNorm gradient of Wu & He 2018 with
the scale-shift and the SiLU's derivative folded in).

Why: PyTorch's CPU GroupNorm kernels for channels_last tensors walk each group's channels
with the stride of a pixel; with few channels per group (the ``fashion`` preset has two)
or below 32x32 pixels they run 5-20 times slower than on contiguous tensors, and the
separate scale-shift and SiLU add passes and saved activations of their own. Where
PyTorch's channels_last kernel takes E[x^2] - E[x]^2, which loses digits when the mean is
large against the spread, the two passes keep the variance accurate; the group sums are
combined in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


def fused_group_norm_applies(x: torch.Tensor) -> bool:
    """Whether :func:`group_norm_act` serves ``x``: a 4-d channels_last float32/float64
    tensor on the CPU (elsewhere the framework's own kernels are the fast ones)."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and x.dim() == 4
        and x.is_contiguous(memory_format=torch.channels_last)
    )


def group_norm_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    groups: int,
    eps: float,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    silu: bool = False,
) -> torch.Tensor:
    """SiLU(GN(x) * (1 + scale) + shift) for a channels_last ``x`` [N, C, H, W].

    weight, bias: GroupNorm's per-channel gamma and beta [C].
    groups, eps:  GroupNorm's groups and epsilon.
    scale, shift: per-image, per-channel [N, C, 1, 1] (adaptive GroupNorm), or both None.
    silu:         apply the SiLU; without it the result is z.

    Returns a channels_last tensor like ``x``. Differentiable once in every tensor argument.
    """
    if (scale is None) != (shift is None):
        raise ValueError("give scale and shift together, or neither")
    return _GroupNormAct.apply(x, weight, bias, groups, eps, scale, shift, silu)


def group_sums(per_channel: torch.Tensor, groups: int) -> torch.Tensor:
    """Sums [N, C] -> [N, groups] over each group's channels, in float64."""
    n, c = per_channel.shape
    return per_channel.view(n, groups, c // groups).sum(2, dtype=torch.float64)


def _per_channel(t: torch.Tensor, n: int, c: int) -> torch.Tensor:
    """[N, C] numbers as [N, C, 1, 1], to broadcast over the pixels."""
    return t.reshape(n, c, 1, 1)


class _GroupNormAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, groups, eps, scale, shift, silu):
        n, c, h, w = x.shape
        width = c // groups
        count = h * w * width
        mean = group_sums(x.sum((2, 3)), groups).div_(count).to(x.dtype)
        mean = mean.repeat_interleave(width, dim=1)
        centred = (x - _per_channel(mean, n, c)).square_()
        var = group_sums(centred.sum((2, 3)), groups).div_(count)
        del centred
        rstd = (var + eps).rsqrt_().to(x.dtype).repeat_interleave(width, dim=1)
        a = rstd * weight
        b = bias - mean * a
        if scale is not None:
            factor = 1 + scale.reshape(n, c)
            a = a * factor
            b = torch.addcmul(shift.reshape(n, c), b, factor)
        z = torch.addcmul(_per_channel(b, n, c), x, _per_channel(a, n, c))
        ctx.save_for_backward(x, weight, bias, mean, rstd, a, b, scale)
        ctx.groups, ctx.silu = groups, silu
        if not silu:
            return z
        # In place saves a tensor in eager mode; under torch.compile a Function's output
        # changed in place lost its gradient (torch 2.11: every gradient behind it zero).
        return F.silu(z, inplace=not torch.compiler.is_compiling())

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, bias, mean, rstd, a, b, scale = ctx.saved_tensors
        n, c, h, w = x.shape
        groups = ctx.groups
        if ctx.silu:
            z = torch.addcmul(_per_channel(b, n, c), x, _per_channel(a, n, c))
            dz = torch.ops.aten.silu_backward(dy, z)
        else:
            dz = dy
        s1 = dz.sum((2, 3))  # sum_hw dz
        sx = rstd * ((dz * x).sum((2, 3)) - mean * s1)  # sum_hw dz xhat
        dscale = dshift = None
        if scale is not None:
            factor = 1 + scale.reshape(n, c)
            dshift = s1.view_as(scale)
            dscale = (weight * sx + bias * s1).view_as(scale)
            s1, sx = s1 * factor, sx * factor  # the sums of dL/dGN(x) = dz (1 + scale)
            gain = rstd * weight * factor
        else:
            gain = rstd * weight
        # dx = rstd (dxhat - mean_g(dxhat) - xhat mean_g(dxhat xhat)), dxhat = gamma dGN
        count = h * w * (c // groups)
        m1 = (weight * s1).view(n, groups, -1).sum(2) / count
        m2 = (weight * sx).view(n, groups, -1).sum(2) / count
        m1 = m1.repeat_interleave(c // groups, dim=1)
        m2 = m2.repeat_interleave(c // groups, dim=1)
        slope = -rstd * rstd * m2
        offset = rstd * (rstd * mean * m2 - m1)
        dx = torch.addcmul(_per_channel(offset, n, c), x, _per_channel(slope, n, c))
        dx.addcmul_(dz, _per_channel(gain, n, c))
        return dx, sx.sum(0), s1.sum(0), None, None, dscale, dshift, None
