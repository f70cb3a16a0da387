"""GroupNorm, adaptive scale-shift and SiLU as one autograd function for channels_last CPU
tensors (float32, float64, and bf16 under autocast): what every residual block of the
U-Net computes (ADM section 3).

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
combined in float64. In bf16 PyTorch's channels_last GroupNorm backward is slower still:
on a 2-core Xeon with AMX it took 1.6 s of a 5.5 s profile of the bench network's
training step, which is why bf16 trained faster in NCHW there although its convolutions
run faster in channels_last; with this function bf16 in channels_last trains that network
at 1.03x its speed in NCHW and runs its forward pass at 1.20x (50.9 against 49.4 and 191.9
against 159.4 images/s, batch 64; the ``fashion`` network alike in both layouts; 2026-12-05,
``benchmarks/bench_unet.py --precisions bf16``, rows ``ours`` and ``ours-nchw``).

In float32 both passes run in diffuse's C kernels (``group_norm_kernels.c``, compiled on
the machine at first use by :mod:`diffuse.nn.native`; where that cannot be, the PyTorch
operations below stand in, to the same values within float32 rounding). Each is one
call that takes every image in turn: its sums, its per-channel numbers, then its sweep
while the image is still in the core's cache; the sums are measured from the image's
first pixel and gathered in float64, so one sweep gives the variance exactly enough; the
backward pass keeps dz from its first sweep instead of computing the sigmoid twice. On
a 2-core Xeon (AMX) they ran the fused operation 3.6x (forward) and 3x (backward) as fast
as the PyTorch operations on [64, 128, 32, 32] (1.7-3.6x for one to three images, where
fewer threads work), and whole float32 training steps 1.10-1.17x (``bench`` network) and
1.15-1.16x (``fashion``) (``bench_unet.py``, rows ``ours`` and ``ours-pytorch-gn``, two
runs, 2026-12-05).
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from diffuse.nn.native import group_norm_kernels


def fused_group_norm_applies(x: torch.Tensor) -> bool:
    """Whether :func:`group_norm_act` serves ``x``: a 4-d channels_last float32, float64 or
    bf16 tensor on the CPU (elsewhere the framework's own kernels are the fast ones)."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64, torch.bfloat16)
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
    if groups < 1 or x.shape[1] % groups:
        raise ValueError(f"{x.shape[1]} channels do not split into {groups} groups")
    return _GroupNormAct.apply(x, weight, bias, groups, eps, scale, shift, silu)


def group_sums(per_channel: torch.Tensor, groups: int) -> torch.Tensor:
    """Sums [N, C] -> [N, groups] over each group's channels, in float64."""
    n, c = per_channel.shape
    return per_channel.view(n, groups, c // groups).sum(2, dtype=torch.float64)


def _per_channel(t: torch.Tensor, n: int, c: int) -> torch.Tensor:
    """[N, C] numbers as [N, C, 1, 1], to broadcast over the pixels."""
    return t.reshape(n, c, 1, 1)


def _affine(base: torch.Tensor, slope: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """slope * base + offset with per-channel slope and offset [N, C], in base's dtype."""
    n, c = slope.shape
    return torch.addcmul(
        _per_channel(offset, n, c).to(base.dtype), base, _per_channel(slope, n, c).to(base.dtype)
    )


def _from_origin(x: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
    """x minus its group's origin [N, groups], in x's dtype."""
    n, c = x.shape[:2]
    return x - _per_channel(origin.repeat_interleave(c // origin.shape[1], dim=1), n, c)


def _scale_shift_gradients(s1, sx, weight, bias, scale, dtype=None):
    """The gradients of scale and shift in ``dtype`` (default scale's; None without them) from
    s1 = sum_hw dz and sx = sum_hw dz xhat per image and channel [N, C], and those sums
    taken of dL/dGN(x) = dz (1 + scale) instead, of which gamma's and beta's gradients are
    the sums over the images."""
    if scale is None:
        return None, None, s1, sx
    dtype = dtype or scale.dtype
    dshift = s1.view_as(scale).to(dtype)
    dscale = (weight * sx + bias * s1).view_as(scale).to(dtype)
    factor = 1 + scale.reshape(s1.shape).to(s1.dtype)
    return dscale, dshift, s1 * factor, sx * factor


def _native_kernels_for(x: torch.Tensor) -> ctypes.CDLL | None:
    """diffuse's C kernels (``group_norm_kernels.c``) where they serve ``x``: float32, built
    on this machine, channels_last, and not while torch.compile traces (it cannot see into
    them)."""
    if (
        x.dtype != torch.float32
        or not x.is_contiguous(memory_format=torch.channels_last)
        or torch.compiler.is_compiling()
    ):
        return None
    return group_norm_kernels()


def _float32(t: torch.Tensor | None) -> torch.Tensor | None:
    """Per-channel numbers as the C kernels read them: contiguous float32."""
    return None if t is None else t.to(torch.float32).contiguous()


def _address(t: torch.Tensor | None) -> int | None:
    """A tensor's address for the C kernels; None (NULL) for an absent scale or shift."""
    return None if t is None else t.data_ptr()


class _GroupNormAct(torch.autograd.Function):
    """The forward and backward passes of :func:`group_norm_act`.

    Statistics and per-channel numbers are computed in the precision of ``weight``; the
    per-pixel work runs in ``x``'s. In float32 and float64 that work is on x itself. In
    bf16 it is on x measured from an origin per group (the group's mean rounded to bf16):
    z = a x + b has b ~ -mean a, which bf16 would round to a few parts in a thousand of the
    mean, while a (x - origin) + b' has b' of the size of beta, so the output keeps bf16's
    precision whatever the mean (tested with a mean 50 times the spread). The bf16
    per-channel sums are rounded, so the mean is the origin plus the mean of the centred
    values, and the variance is E[(x - origin)^2] - (mean - origin)^2 (exact for any origin).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, groups, eps, scale, shift, silu):
        kernels = _native_kernels_for(x)
        ctx.native = kernels is not None
        if ctx.native:
            return _GroupNormAct.native_forward(ctx, kernels, x, weight, bias, groups, eps,
                                                scale, shift, silu)  # fmt: skip
        n, c, h, w = x.shape
        width = c // groups
        count = h * w * width
        low = x.dtype == torch.bfloat16
        mean = group_sums(x.sum((2, 3)), groups).div_(count)  # float64 [N, groups]
        origin = mean.to(x.dtype)
        centred = _from_origin(x, origin)
        if low:  # x.sum rounded each channel's sum to bf16; the centred sums are small
            mean = origin + group_sums(centred.sum((2, 3)), groups).div_(count)
        squares = centred.square() if low else centred.square_()
        var = group_sums(squares.sum((2, 3)), groups).div_(count).sub_((mean - origin).square())
        del squares
        stats = weight.dtype
        rstd = (var.clamp_min_(0) + eps).rsqrt_().to(stats).repeat_interleave(width, dim=1)
        # z = a base + b, base = x - origin in bf16 and x itself otherwise
        delta = (mean - origin if low else mean).to(stats).repeat_interleave(width, dim=1)
        base = centred if low else x
        a = rstd * weight
        b = bias - delta * a
        if scale is not None:
            factor = 1 + scale.reshape(n, c).to(stats)
            a = a * factor
            b = torch.addcmul(shift.reshape(n, c).to(stats), b, factor)
        z = _affine(base, a, b)
        ctx.save_for_backward(x, origin, weight, bias, delta, rstd, a, b, scale)
        ctx.groups, ctx.silu, ctx.low = groups, silu, low
        if not silu:
            return z
        # In place saves a tensor in eager mode; under torch.compile a Function's output
        # changed in place lost its gradient (torch 2.11: every gradient behind it zero).
        return F.silu(z, inplace=not torch.compiler.is_compiling())

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        if ctx.native:
            return _GroupNormAct.native_backward(ctx, dy)
        x, origin, weight, bias, delta, rstd, a, b, scale = ctx.saved_tensors
        n, c, h, w = x.shape
        groups, width, stats = ctx.groups, c // ctx.groups, weight.dtype
        base = _from_origin(x, origin) if ctx.low else x
        if ctx.silu:
            dz = torch.ops.aten.silu_backward(dy, _affine(base, a, b))
        else:
            dz = dy
        s1 = dz.sum((2, 3)).to(stats)  # sum_hw dz
        sx = rstd * ((dz * base).sum((2, 3)).to(stats) - delta * s1)  # sum_hw dz xhat
        dscale, dshift, s1, sx = _scale_shift_gradients(s1, sx, weight, bias, scale)
        gain = rstd * weight
        if scale is not None:
            gain = gain * (1 + scale.reshape(n, c).to(stats))
        # dx = rstd (dxhat - mean_g(dxhat) - xhat mean_g(dxhat xhat)), dxhat = gamma dGN,
        # as gain dz + slope base + offset, xhat = rstd (base - delta)
        count = h * w * width
        m1 = (weight * s1).view(n, groups, -1).sum(2) / count
        m2 = (weight * sx).view(n, groups, -1).sum(2) / count
        m1 = m1.repeat_interleave(width, dim=1)
        m2 = m2.repeat_interleave(width, dim=1)
        slope = -rstd * rstd * m2
        offset = -rstd * m1 - slope * delta
        dx = _affine(base, slope, offset)
        dx.addcmul_(dz, _per_channel(gain, n, c).to(x.dtype))
        return dx, sx.sum(0), s1.sum(0), None, None, dscale, dshift, None

    @staticmethod
    def native_forward(ctx, kernels, x, weight, bias, groups, eps, scale, shift, silu):
        """The forward pass in one call of the C kernels (float32): per image its
        statistics, a and b, and act(a x + b), the image still in the core's cache."""
        n, c, h, w = x.shape
        weight32, bias32 = _float32(weight), _float32(bias)
        scale32, shift32 = _float32(scale), _float32(shift)
        out = torch.empty_like(x)
        a, b = torch.empty(n, c), torch.empty(n, c)
        mean = torch.empty(n, groups, dtype=torch.float64)
        rstd = torch.empty(n, groups, dtype=torch.float64)
        kernels.diffuse_group_norm_act_forward(
            x.data_ptr(), weight32.data_ptr(), bias32.data_ptr(), _address(scale32),
            _address(shift32), n, h * w, c, groups, eps, int(silu), out.data_ptr(),
            a.data_ptr(), b.data_ptr(), mean.data_ptr(), rstd.data_ptr(),
            torch.get_num_threads(),
        )  # fmt: skip
        ctx.save_for_backward(x, weight32, bias32, scale32, a, b, mean, rstd)
        ctx.groups, ctx.silu, ctx.weight_dtype = groups, silu, weight.dtype
        ctx.scale_dtype = None if scale is None else scale.dtype
        return out

    @staticmethod
    def native_backward(ctx, dy):
        """The backward pass in one call of the C kernels, which return dx and per image
        and channel s1 = sum_hw dz and sx = sum_hw dz xhat; the parameters' gradients
        are per-channel combinations of those, as in :meth:`backward`."""
        x, weight, bias, scale, a, b, mean, rstd = ctx.saved_tensors
        n, c, h, w = x.shape
        dy = dy.contiguous(memory_format=torch.channels_last)
        dx = torch.empty_like(x)
        s1 = torch.empty(n, c, dtype=torch.float64)
        sx = torch.empty(n, c, dtype=torch.float64)
        kernels = group_norm_kernels()
        kernels.diffuse_group_norm_act_backward(
            x.data_ptr(), dy.data_ptr(), weight.data_ptr(), _address(scale), a.data_ptr(),
            b.data_ptr(), mean.data_ptr(), rstd.data_ptr(), n, h * w, c, ctx.groups,
            int(ctx.silu), dx.data_ptr(), s1.data_ptr(), sx.data_ptr(),
            torch.get_num_threads(),
        )  # fmt: skip
        # the saved scale is its float32 copy: the gradients take the caller's dtype
        dscale, dshift, s1, sx = _scale_shift_gradients(
            s1, sx, weight, bias, scale, ctx.scale_dtype
        )
        stats = ctx.weight_dtype
        return dx, sx.sum(0).to(stats), s1.sum(0).to(stats), None, None, dscale, dshift, None
