"""What the benchmarks share: the machine's description, memory and page-fault counters,
timing, and measurements in fresh processes.

A measurement that shares its process with others inherits their allocator state, their
oneDNN kernels and their memory: a benchmark runs each measurement in a fresh process
(:func:`run_fresh`) that prints its result as one JSON line (:func:`emit`), and orders
its measurements in rounds that rotate the implementations (:func:`rotated`), so that a
slow spell of a shared machine falls on all of them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar

import torch

from diffuse.hardware import cpu_info

HERE = Path(__file__).resolve().parent
V = TypeVar("V")


def describe_machine() -> str:
    """The lines every benchmark prints first: CPU model, bf16 instructions, memory, torch,
    threads."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"CPU: {cpu_info().describe()}\n"
        f"{os.cpu_count()} logical CPUs, {memory:.1f} GiB memory, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def page_faults() -> tuple[int, int]:
    """(minor, major) page faults of this process so far. A minor fault maps a fresh page,
    e.g. for memory the allocator had returned to the kernel; a major one reads a page
    back from disk, e.g. code evicted when memory ran short."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt, usage.ru_majflt


def time_call(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def alternating_medians(
    variants: Mapping[str, V], run: Callable[[V], object], rounds: int
) -> dict[str, float]:
    """Median seconds of ``run(variant)`` for each named variant over ``rounds`` rounds that
    run every variant once in turn, after one untimed run of each (so that a slow spell of
    the machine hits all alike)."""
    for variant in variants.values():
        run(variant)
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, variant in variants.items():
            times[name].append(time_call(partial(run, variant)))
    return {name: statistics.median(values) for name, values in times.items()}


def step_rates(batch: int, medians: dict[str, float], baseline: str, ours: str) -> str:
    """ "baseline R img/s, ours R img/s, xRATIO" for steps of ``batch`` images timed as
    ``medians`` (seconds; the ratio above 1 where ours is faster)."""
    return (
        f"{baseline} {batch / medians[baseline]:.1f} img/s, {ours} {batch / medians[ours]:.1f} "
        f"img/s, x{medians[baseline] / medians[ours]:.3f}"
    )


def with_replaced(owner: object, name: str, value: object, call: Callable[[], object]) -> None:
    """``call()`` with ``owner.name`` set to ``value`` (a variant swapped in), restored after."""
    kept = getattr(owner, name)
    setattr(owner, name, value)
    try:
        call()
    finally:
        setattr(owner, name, kept)


def swapped_step_rates(
    step: Callable[[], object], owner: object, name: str, variants: Mapping[str, object],
    batch: int, rounds: int,
) -> str:  # fmt: skip
    """:func:`step_rates` of ``step`` run with each of ``variants`` in turn as ``owner.name``
    (alternating rounds): the first variant is the baseline, the last ours."""
    run = partial(with_replaced, owner, name, call=step)
    medians = alternating_medians(variants, run, rounds)
    names = list(variants)
    return step_rates(batch, medians, names[0], names[-1])


def lever_main(description: str, shapes: Callable, steps: Callable, **options: dict) -> None:
    """The command line of a benchmark of one lever: ``--batch-size``, ``--rounds`` and
    ``--no-step``, and ``options`` (name -> ``add_argument`` keywords; passed on to
    ``shapes``). Prints the machine, then runs ``shapes(batch, rounds, **options)`` and,
    unless ``--no-step``, ``steps(batch, rounds)``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    for option, keywords in options.items():
        parser.add_argument(f"--{option}", **keywords)
    parser.add_argument("--no-step", action="store_true", help="skip the networks' steps")
    args = parser.parse_args()
    print(describe_machine())
    shapes(args.batch_size, args.rounds, **{option: getattr(args, option) for option in options})
    if not args.no_step:
        steps(args.batch_size, args.rounds)


def emit(result: dict) -> None:
    """Print ``result`` as the one JSON line a measuring process answers with."""
    print(json.dumps(result), flush=True)


def run_fresh(script: Path, args: Sequence[str], env: dict[str, str] | None = None) -> dict:
    """Run ``python script args`` in a fresh process; its last stdout line, as JSON."""
    command = [sys.executable, str(script), *args]
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"{' '.join(command)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
        )
    return json.loads(lines[-1])


def rotated(names: Sequence[str], round_index: int) -> list[str]:
    """``names`` rotated by ``round_index``: over rounds each one is first, second, ..."""
    k = round_index % len(names) if names else 0
    return [*names[k:], *names[:k]]
