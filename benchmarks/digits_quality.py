"""The main job's quality figure: how many generated digits are recognised as their class.

    python benchmarks/digits_quality.py runs/digits [--per-class 50] [--cfg-weight W]

Loads the run's latest checkpoint (EMA weights), generates ``per-class`` digits of each
class with the run's grid sampler and guidance weight, and classifies them with a
logistic regression fitted to the real 8x8 digits (see diffuse.train.recognition).
Prints the recognition rate, the rate per class and the classifier's accuracy on real
held-out digits. The README's figure comes from this script.
"""

from __future__ import annotations

import argparse
import json
import time

from benchlib import describe_machine
from diffuse.sample.sampler import SAMPLERS
from diffuse.train.recognition import recognition_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run folder or checkpoint folder of a digits model")
    parser.add_argument("--per-class", type=int, default=50, help="samples per class")
    parser.add_argument("--sampler", choices=SAMPLERS, help="default: the run's")
    parser.add_argument("--steps", type=int, help="sampling steps (default: the run's)")
    parser.add_argument("--cfg-weight", type=float, help="guidance weight (default: the run's)")
    parser.add_argument("--weights", default="auto", help="auto, model or ema_<rate>")
    parser.add_argument("--seed", type=int, default=1, help="first seed of the samples' noise")
    args = parser.parse_args()
    print(describe_machine())
    started = time.perf_counter()
    result = recognition_rate(
        args.run,
        per_class=args.per_class,
        sampler=args.sampler,
        steps=args.steps,
        cfg_weight=args.cfg_weight,
        weights=args.weights,
        seed=args.seed,
    )
    print(f"recognised as the class asked for: {result.rate:.1%} of {result.samples} samples")
    print("per class: " + " ".join(f"{k}:{r:.0%}" for k, r in enumerate(result.per_class)))
    print(f"the classifier on real held-out digits: {result.real_accuracy:.1%}")
    print(f"sampling: {json.dumps(result.settings)} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
