"""Speed of the FID Inception features, against the plain TorchScript forward in the same run.

Measures images/s of the network forward on preprocessed 299x299 batches for:
the TorchScript file's own forward (the baseline), our module in NCHW and channels_last
float32, and bfloat16 autocast; then the whole ``inception_features`` call (preprocessing
included) on 28x28 Fashion-MNIST-sized images. Variants are timed in interleaved rounds
so that load from other processes falls on all of them alike; the median round counts.

``--fid-shift N`` also measures how far bfloat16 moves FID: N Fashion-MNIST train images
against N test images, FID from float32 and from bfloat16 features.

    .venv/bin/python benchmarks/bench_inception.py --batch-size 32 --rounds 3
    .venv/bin/python benchmarks/bench_inception.py --fid-shift 2000
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from benchlib import describe_machine, time_call
from diffuse.data import load_dataset
from diffuse.eval.features import InceptionExtractor
from diffuse.eval.metrics import fid
from diffuse.eval.preprocess import to_inception_input
from diffuse.eval.weights import load_inception_weights


def read_fashion(split: str, n: int) -> np.ndarray:
    """The first n images of a Fashion-MNIST split, uint8 [n, 28, 28, 1]."""
    return load_dataset("fashion-mnist", split=split, class_cond=False).uint8(range(n))


def network_variants(batch: torch.Tensor) -> dict[str, callable]:
    torchscript = torch.jit.load(str(load_inception_weights().path)).eval()
    extractors = {
        "ours fp32 NCHW": InceptionExtractor(channels_last=False),
        "ours fp32 channels_last": InceptionExtractor(),
        "ours bf16 channels_last": InceptionExtractor(dtype="bfloat16"),
    }

    def run_torchscript():
        with torch.inference_mode():
            torchscript(batch)

    def forward_of(extractor):
        x = batch.contiguous(memory_format=extractor.memory_format)

        def run():
            with torch.inference_mode(), extractor.autocast():
                extractor.network(x)

        return run

    return {"torchscript fp32 (baseline)": run_torchscript} | {
        name: forward_of(extractor) for name, extractor in extractors.items()
    }


def bench_speed(batch_size: int, rounds: int) -> None:
    images = read_fashion("train", batch_size)
    batch = to_inception_input(torch.from_numpy(images))
    variants = network_variants(batch)
    for run in variants.values():  # warm-up (TorchScript profiles its first calls)
        run()
        run()
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            times[name].append(time_call(run))
    baseline = statistics.median(times["torchscript fp32 (baseline)"])
    print(f"network forward, batch {batch_size}, {torch.get_num_threads()} threads:")
    for name, values in times.items():
        seconds = statistics.median(values)
        print(f"  {name:30s} {batch_size / seconds:7.2f} img/s   x{baseline / seconds:.2f}")

    extractor = InceptionExtractor(batch_size=batch_size)
    many = read_fashion("train", 4 * batch_size)
    extractor(many[:batch_size], progress=False)
    seconds = time_call(lambda: extractor(many, progress=False))
    print(
        f"  inception_features (28x28 uint8 in, preprocessing included) "
        f"{len(many) / seconds:7.2f} img/s   x{len(many) * baseline / (seconds * batch_size):.2f}"
    )


def bench_fid_shift(n: int, batch_size: int) -> None:
    train, test = read_fashion("train", n), read_fashion("test", n)
    for dtype in ("float32", "bfloat16"):
        extractor = InceptionExtractor(dtype=dtype, batch_size=batch_size)
        start = time.perf_counter()
        a, b = extractor(train).pool, extractor(test).pool
        seconds = time.perf_counter() - start
        print(
            f"{dtype}: FID(train[:{n}], test[:{n}]) = {fid(a, b):.4f}  ({2 * n / seconds:.1f} img/s)"
        )
        if dtype == "float32":
            reference = a
        else:
            relative = np.linalg.norm(a - reference, axis=1) / np.linalg.norm(reference, axis=1)
            print(f"  bf16 features vs fp32: median relative L2 error {np.median(relative):.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fid-shift", type=int, metavar="N", help="measure bf16's FID shift")
    args = parser.parse_args()
    print(describe_machine())
    if args.fid_shift:
        bench_fid_shift(args.fid_shift, args.batch_size)
    else:
        bench_speed(args.batch_size, args.rounds)


if __name__ == "__main__":
    main()
