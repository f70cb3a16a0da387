"""Dropout (Srivastava et al. 2014) whose mask is drawn from whole random words on the CPU.

torch's CPU dropout draws its mask with ``bernoulli_``, one generator call per element
and on one thread: about 12 ns an element on a 2-core EPYC, 6 % of a training step of the
``fashion`` preset in torch.profiler. Here one 64-bit draw of the same generator gives
four 16-bit uniform integers (two 32-bit ones where 16 bits cannot express p to
:data:`RATE_TOLERANCE`), each kept when it is at or above round(p * 2^bits): the drop
rate is p to that resolution, and the kept values are scaled by the exact inverse of the
keep probability, so E[dropout(x)] = x as in torch's. The mask is stored as bools (as
torch's is) in the input's memory format, so a channels_last tensor stays one.
``benchmarks/bench_dropout.py`` times it against torch's.

On other devices, where the dropout kernels are fused, :func:`dropout` is torch's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The largest relative difference between the drop rate asked for and the one the mask
# draws at 16 bits (p = 0.1: 6554 / 2^16, 6e-5 off); beyond it, 32-bit words (p to 2^-32).
RATE_TOLERANCE = 1e-3
_INTEGERS = {16: torch.int16, 32: torch.int32}


def word_bits(p: float) -> int:
    """16 where round(p * 2^16) / 2^16 is p to :data:`RATE_TOLERANCE` (relative), else 32."""
    dropped = round(p * 2**16)
    return 16 if abs(dropped / 2**16 - p) <= RATE_TOLERANCE * p else 32


def keep_mask(
    like: torch.Tensor, p: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, float]:
    """A bool mask shaped like ``like`` and in its memory format, each element kept with
    probability 1 - p (to the resolution of :func:`word_bits`), and that probability,
    exactly."""
    strides = torch.empty_like(like, dtype=torch.bool).stride()  # dense, like's order
    count = like.numel()
    bits = word_bits(p)
    per_draw = 64 // bits
    words = torch.randint(
        -(2**63),
        2**63 - 1,
        (-(-count // per_draw),),
        dtype=torch.int64,
        generator=generator,
        device=like.device,
    )
    values = 2**bits
    dropped = round(p * values)
    keep = words.view(_INTEGERS[bits])[:count] >= dropped - values // 2
    return keep.as_strided(like.shape, strides), (values - dropped) / values


def _as_bytes(keep: torch.Tensor) -> torch.Tensor:
    """The bool mask as uint8: a free view in eager mode, a conversion under torch.compile
    (whose graph fuses it), where torch 2.11's inductor cannot lower the view."""
    return keep.to(torch.uint8) if torch.compiler.is_compiling() else keep.view(torch.uint8)


class _ScaleKept(torch.autograd.Function):
    """x * keep / q, whose backward is the same product of the gradient; only the bool mask
    is saved.

    The mask enters the products as bytes (a view of the bools): torch's CPU kernels
    convert bools to floating point element by element, about 8x slower than bytes
    (1.2 against 0.12 ms for a 64x32x28x28 bf16 mask on a Zen 4 EPYC), and the product
    with the bools converted them once more in the backward pass.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        kept = x.mul(_as_bytes(keep))
        # Not in place under torch.compile: there a Function's output changed in place lost
        # its gradient (torch 2.11: every gradient behind it zero).
        return kept.mul(scale) if torch.compiler.is_compiling() else kept.mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return grad.mul(_as_bytes(keep)).mul_(ctx.scale), None, None


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)``, with the mask of :func:`keep_mask` on the CPU."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training)
    keep, kept = keep_mask(x, p)
    return _ScaleKept.apply(x, keep, 1.0 / kept)


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same arguments, no parameters) through :func:`dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout(x, self.p, self.training)
