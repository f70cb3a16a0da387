"""``diffuse plot RUN [--out FILE.png]``: a training run's curves against the step.

Draws, from RUN/metrics.jsonl, one panel each for the training loss, the learning rate,
the training speed (images/s) and, when the run measured it, FID (and a noisy
classifier's accuracy), into RUN/metrics.png or --out. Works while the run trains: it
reads what has been logged so far. The same numbers go to TensorBoard and Weights &
Biases when a run asks for them (train.tensorboard, train.wandb_project).
"""

from __future__ import annotations

from pathlib import Path

from diffuse.cli.common import add_command
from diffuse.train.curves import DEFAULT_FILE, plot_run


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "plot", "draw a training run's loss, learning rate, speed, FID", __doc__
    )
    parser.add_argument("run", type=Path, help="the training run's folder (train --out)")
    parser.add_argument("--out", type=Path, help=f"the PNG to write (default: RUN/{DEFAULT_FILE})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing PNG")
    parser.set_defaults(func=run)


def run(args) -> int:
    written = plot_run(args.run, args.out, overwrite=args.overwrite)
    print(f"curves of {args.run} written to {written}")
    return 0
