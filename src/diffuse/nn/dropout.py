"""Dropout (Srivastava et al. 2014) whose mask is drawn from whole random words on the CPU.

torch's CPU dropout draws its mask with ``bernoulli_``, one generator call per element
and on one thread: about 12 ns an element on a 2-core EPYC, 6 % of a training step of the
``fashion`` preset in torch.profiler. Here (``benchmarks/bench_dropout.py``: forward and
backward 1.6x torch's there, the whole step 1.03x) one 64-bit draw of the same
generator gives two 32-bit uniform integers, each kept when it is at or above
round(p * 2^32): the keep probability is 1 - p to 2^-32, and the kept values are scaled by
the exact inverse of it, so E[dropout(x)] = x as in torch's. The mask is stored as bools
(as torch's is) in the input's memory format, so a channels_last tensor stays one.

On other devices, where the dropout kernels are fused, :func:`dropout` is torch's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_WORD = 2**32  # values one 32-bit draw takes


def keep_mask(
    like: torch.Tensor, p: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, float]:
    """A bool mask shaped like ``like`` and in its memory format, each element kept with
    probability 1 - p (to 2^-32), and that probability, exactly."""
    strides = torch.empty_like(like, dtype=torch.bool).stride()  # dense, like's order
    count = like.numel()
    words = torch.randint(
        -(2**63),
        2**63 - 1,
        ((count + 1) // 2,),
        dtype=torch.int64,
        generator=generator,
        device=like.device,
    )
    dropped = round(p * _WORD)
    keep = words.view(torch.int32)[:count] >= dropped - _WORD // 2
    return keep.as_strided(like.shape, strides), (_WORD - dropped) / _WORD


class _ScaleKept(torch.autograd.Function):
    """x * keep / q, whose backward is the same product of the gradient; only the bool mask
    is saved."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x.mul(keep).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None, None


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
