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

import argparse
from functools import partial

import torch
import torch.nn.functional as F

import diffuse.nn.dropout as ours
from bench_unet import IMPLEMENTATIONS, NETWORKS, make_step
from benchlib import alternating_medians, describe_machine, step_rates, with_replaced

# (channels, size) of the fashion network's residual blocks at each level
SHAPES = ((32, 28), (64, 14), (128, 7))
VARIANTS = {"torch": F.dropout, "ours": ours.dropout}


def forward_and_backward(function, x: torch.Tensor, p: float, grad: torch.Tensor) -> None:
    function(x, p, True).backward(grad)
    x.grad = None


def bench_shapes(batch: int, p: float, rounds: int) -> None:
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
    run = partial(with_replaced, ours, "dropout", call=step)
    medians = alternating_medians(VARIANTS, run, rounds)
    rates = step_rates(batch, medians, "torch", "ours")
    print(f"fashion training step, batch {batch} (dropout {config.dropout}): {rates}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--p", type=float, default=0.1, help="dropout rate of part 1")
    parser.add_argument("--no-step", action="store_true", help="skip the training step")
    args = parser.parse_args()
    print(describe_machine())
    bench_shapes(args.batch_size, args.p, args.rounds)
    if not args.no_step:
        bench_training_step(args.batch_size, args.rounds)


if __name__ == "__main__":
    main()
