"""Our CPU dropout (``diffuse.nn.dropout``) against torch's, alone and in a training step.

1. Forward and backward of dropout at the shapes of the ``fashion`` network's residual
   blocks (batch 64 by default, channels_last): torch's ``F.dropout`` (a ``bernoulli_``
   mask) against ours (a mask from whole 64-bit draws).
2. The ``fashion`` network's training step (``bench_unet.py``'s: forward, loss, backward,
   fused AdamW) with our dropout and with torch's swapped in, in alternating rounds in one
   process.

Prints the CPU, the medians and ratios (torch's time over ours: above 1, ours is faster).

    python benchmarks/bench_dropout.py [--batch-size 64] [--rounds 5] [--p 0.1]
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

import diffuse.nn.dropout as ours
from bench_unet import IMPLEMENTATIONS, NETWORKS, make_step
from benchlib import alternating_medians, lever_main, swapped_step_rates

# (channels, size) of the fashion network's residual blocks at each level
SHAPES = ((32, 28), (64, 14), (128, 7))
VARIANTS = {"torch": F.dropout, "ours": ours.dropout}


def forward_and_backward(function, x: torch.Tensor, p: float, grad: torch.Tensor) -> None:
    function(x, p, True).backward(grad)
    x.grad = None


def bench_shapes(batch: int, rounds: int, p: float) -> None:
    print(f"dropout p={p}, forward + backward, batch {batch}, channels_last (ms):")
    for channels, size in SHAPES:
        x = torch.randn(batch, channels, size, size).contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        run = partial(forward_and_backward, x=x, p=p, grad=torch.ones_like(x))
        medians = alternating_medians(VARIANTS, run, rounds)
        print(
            f"  {channels:4d} x {size:2d} x {size:2d}: torch {1e3 * medians['torch']:7.2f}  "
            f"ours {1e3 * medians['ours']:7.2f}  torch / ours x{medians['torch'] / medians['ours']:.2f}"
        )


def bench_training_step(batch: int, rounds: int) -> None:
    config = NETWORKS["fashion"]
    torch.manual_seed(0)
    model = IMPLEMENTATIONS["ours"].build(config)
    step = make_step(IMPLEMENTATIONS["ours"], model, config, "training", "fp32", batch)
    step()
    # diffuse.nn.dropout.Dropout calls ours.dropout: each variant in its place
    rates = swapped_step_rates(step, ours, "dropout", VARIANTS, batch, rounds)
    print(f"fashion training step, batch {batch} (dropout {config.dropout}): {rates}")


if __name__ == "__main__":
    lever_main(
        __doc__.splitlines()[0], bench_shapes, bench_training_step,
        p=dict(type=float, default=0.1, help="dropout rate of part 1"),
    )  # fmt: skip
