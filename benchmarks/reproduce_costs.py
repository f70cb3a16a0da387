"""Unit costs of the reproduction suite: one-thread CPU milliseconds per image of a training
step and of a network evaluation, for each (preset, task) the suite trains.

    python benchmarks/reproduce_costs.py                 # every preset the suite uses
    python benchmarks/reproduce_costs.py --presets tiny --batch-size 4 --repeats 1

Prints one line per preset and the ``UNITS`` table of ``diffuse.reproduce.costs``, whose
estimates (``diffuse reproduce --list``) are these figures over the two-core speedup. One
thread and CPU time, so that a machine shared with other work still measures the work
itself; each figure is the best of ``--repeats`` timed runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchlib import describe_machine
from diffuse.nn import build_network
from diffuse.reproduce.claims import MODELS
from diffuse.train import spec_from_preset


def cpu_ms_per_image(step, batch: int, repeats: int) -> float:
    """The best one-thread CPU time of ``step()`` over ``repeats`` runs, per image."""
    step()  # warm-up: the first call allocates and picks kernels
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        step()
        best = min(best, time.process_time() - started)
    return 1000 * best / batch


def measure(preset: str, task: str, batch: int, repeats: int) -> tuple[float, float]:
    """(training ms, forward ms) per image of ``preset``'s network for ``task``, fitted
    to the data the suite trains it on (so at the resolution it trains at)."""
    data = next((plan.data for plan in MODELS.values() if plan.preset == preset), "digits")
    spec = spec_from_preset(preset, data, task=task)
    config = spec.model
    network = build_network(config)
    shape = (batch, config.in_channels, config.image_size, config.image_size)
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    t = torch.randint(0, spec.diffusion.timesteps, (batch,))
    kwargs = {}
    if task == "diffusion" and config.num_classes is not None:
        kwargs["y"] = torch.randint(0, config.num_classes, (batch,))
    if config.kind == "superres":
        kwargs["low_res"] = torch.randn(
            batch, config.in_channels, config.low_res_size, config.low_res_size
        )
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4)

    def train_step() -> None:
        network(x, t, **kwargs).float().pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def forward() -> None:
        with torch.inference_mode():
            network(x, t, **kwargs)

    network.train()
    training = cpu_ms_per_image(train_step, batch, repeats)
    network.eval()
    return training, cpu_ms_per_image(forward, batch, repeats)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", help="comma-separated presets (default: the suite's)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(describe_machine())
    pairs = list(dict.fromkeys((plan.preset, plan.task) for plan in MODELS.values()))
    if args.presets:
        wanted = args.presets.split(",")
        known = {preset for preset, _ in pairs}
        pairs = [pair for pair in pairs if pair[0] in wanted]
        pairs += [(name, "diffusion") for name in wanted if name not in known]
    rows = {pair: measure(*pair, args.batch_size, args.repeats) for pair in pairs}
    for (preset, task), (training, forward) in rows.items():
        print(
            f"{preset} ({task}): training {training:.2f} ms/image, forward {forward:.3f} ms/image"
        )
    print("UNITS = {")
    for (preset, task), (training, forward) in rows.items():
        print(f'    ("{preset}", "{task}"): Unit({training:.3g}, {forward:.3g}),')
    print("}")


if __name__ == "__main__":
    main()
