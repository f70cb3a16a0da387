"""Decoding a folder of images: in the training process against DataLoader workers.

Writes a folder of random RGB PNGs (or reads ``--folder``) and, for each worker count
(0, and the default min(4, CPUs - 1)), measures what training on a folder costs:

- survey:      listing the images and reading their headers (once; no workers);
- into memory: decoding every image at the start, as a folder that fits in memory is
               read (``FolderSource.load_all``);
- on demand:   one epoch of batches in the trainer's order, decoded when asked for, as a
               folder too large for memory is read (``read_ahead``), with nothing else
               running: the data's own throughput;
- training:    ``--steps`` steps of the ``tiny`` network at ``--train-size`` on the folder
               decoded on demand (the trainer reading ahead): training images/s.

The worker counts are timed in alternating rounds, so that the load of other processes
falls on all of them alike; each line gives the median round.

    .venv/bin/python benchmarks/bench_folder_loading.py                    # 10,000 32x32
    .venv/bin/python benchmarks/bench_folder_loading.py --images 48 --size 8 --steps 2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import diffuse.data.folder
from benchlib import describe_machine, time_call
from diffuse.data.folder import survey_folder
from diffuse.data.readahead import default_workers, read_ahead
from diffuse.train import spec_from_preset, train
from diffuse.train.randomness import BatchOrder


def write_folder(root: Path, images: int, size: int) -> None:
    """``images`` random RGB PNGs of ``size`` x ``size`` in two class folders."""
    rng = np.random.default_rng(0)
    for i in range(images):
        path = root / f"class{i % 2}" / f"{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def on_demand_epoch(source, batch_size: int, workers: int) -> None:
    """Read one epoch of batches in the trainer's order, decoded by ``workers``."""
    order = BatchOrder(len(source), batch_size, seed=0)
    steps = range(len(source) // batch_size)
    batches = ([int(i) for i in order.indices(step)] for step in steps)
    with contextlib.closing(read_ahead(source.read, batches, workers)) as reads:
        for _ in reads:
            pass


def training_rate(folder: Path, args, workers: int, out: Path) -> float:
    """Training images/s of the tiny network on ``folder`` decoded on demand."""
    settings = {
        "model.image_size": args.train_size,
        "train.steps": args.steps,
        "train.batch_size": args.batch_size,
        "train.workers": workers,
        "train.sample_steps": 1,
        "train.sample_columns": 1,
        "train.checkpoint_every": args.steps,
        "train.precision": "fp32",
    }
    spec = spec_from_preset("tiny", str(folder), overrides=settings)
    diffuse.data.folder.MEMORY_BUDGET = 0  # as a folder too large for memory
    with contextlib.redirect_stdout(io.StringIO()):  # the run's report of the data
        return train(spec, out, overwrite=True, progress=False).images_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10000, help="images to write")
    parser.add_argument("--size", type=int, default=32, help="side of the images written")
    parser.add_argument("--folder", type=Path, help="measure this folder instead of writing one")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch")
    parser.add_argument("--steps", type=int, default=30, help="training steps per measurement")
    parser.add_argument("--train-size", type=int, default=8, help="the network's image size")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    parser.add_argument(
        "--workers", type=int, default=default_workers(), help="the worker count against 0"
    )
    args = parser.parse_args()
    print(describe_machine())
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder
        if folder is None:
            folder = Path(scratch) / "images"
            seconds = time_call(lambda: write_folder(folder, args.images, args.size))
            print(f"wrote {args.images} {args.size}x{args.size} RGB PNGs in {seconds:.1f} s")
        start = time.perf_counter()
        survey = survey_folder(folder)
        count = len(survey.paths)
        print(f"survey (list + headers) of {count} images: {time.perf_counter() - start:.2f} s")
        size = survey.smallest_side
        source = diffuse.data.folder.FolderSource(list(survey.paths), size, survey.grey)
        counts = sorted({0, args.workers})
        measures = {
            "into memory": lambda w: count / time_call(lambda: source.load_all(False, w)),
            "on demand, one epoch": lambda w: (
                (count // args.batch_size * args.batch_size)
                / time_call(lambda: on_demand_epoch(source, args.batch_size, w))
            ),
            "training, on demand": lambda w: training_rate(
                folder, args, w, Path(scratch) / f"run{w}"
            ),
        }
        for name, measure in measures.items():
            rates = {w: [] for w in counts}
            for round_index in range(args.rounds):
                for w in counts if round_index % 2 == 0 else reversed(counts):
                    rates[w].append(measure(w))
            medians = {w: statistics.median(r) for w, r in rates.items()}
            parts = ", ".join(f"{w} workers {medians[w]:.0f} img/s" for w in counts)
            ratio = medians[counts[-1]] / medians[0]
            print(f"{name}: {parts} ({ratio:.2f}x with {counts[-1]} workers)")


if __name__ == "__main__":
    main()
