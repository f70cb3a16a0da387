"""``precision="auto"``: bf16 autocast only where this device runs it faster than float32.

bf16 halves the memory traffic and, with bf16 matrix instructions, runs the convolutions
and matrix products up to several times faster; without them it is emulated and slower
than float32. The decision:

- CUDA: bf16 where ``torch.cuda.is_bf16_supported()`` (Ampere and later), else float32.
- CPU without bf16 instructions (:mod:`diffuse.hardware`): float32, without timing
  anything (emulated bf16 never wins).
- CPU with them: the caller's workload (the real network at the run's batch size: one
  forward and backward pass for training, one forward pass at the rows a sampling step
  evaluates for sampling) is timed in both precisions, in a few alternating rounds after
  a warm-up; bf16 only where its median time is lower. The result is
  cached in diffuse's cache folder (``precision.json``, see ``user_cache_dir``) per (CPU and bf16
  instructions, threads, torch version, network configuration, batch, workload kind),
  so each such combination is timed once.
- any other device: float32.

"auto" never chooses fp16: its gradient scaler skips steps, and where fp16 is fast bf16
is too.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffuse.data.locate import user_cache_dir
from diffuse.hardware import CpuInfo, cpu_info
from diffuse.io import atomic_write_json

CACHE_FILE = "precision.json"
CACHE_FORMAT = 1
CANDIDATES = ("fp32", "bf16")
ROUNDS = 3
clock = time.perf_counter  # a module attribute, so that a test can fake the timer


@dataclass(frozen=True)
class Decision:
    """The precision "auto" stands for, and why.

    precision: "fp32" or "bf16".
    reason:    a short explanation for the user ("no bf16 instructions on AMD EPYC").
    """

    precision: str
    reason: str

    def message(self) -> str:
        return f"precision auto -> {self.precision} ({self.reason})"


def decide(
    device: torch.device | str,
    *,
    network: Mapping[str, Any],
    batch: int,
    make_workload: Callable[[], Callable[[str], None]],
    kind: str = "train",
) -> Decision:
    """The precision for ``workload`` on ``device`` (see the module docstring).

    network:  the network's configuration (JSON-able): part of the cache key.
    batch:    the batch size the network runs at: part of the cache key.
    make_workload: returns ``workload``, where ``workload(precision)`` runs one
              representative step in "fp32" or "bf16" autocast; called (and the workload
              built) only on a CPU with bf16 instructions and no cached result.
    kind:     what the workload measures ("train": forward and backward; "sample": one
              forward pass without autograd): part of the key.
    """
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if torch.cuda.is_bf16_supported():
            return Decision("bf16", f"{name} supports bf16")
        return Decision("fp32", f"{name} has no bf16 support")
    if device.type != "cpu":
        return Decision("fp32", f"bf16 is not measured on {device.type} devices")
    cpu = cpu_info()
    if not cpu.bf16:
        return Decision("fp32", f"no bf16 instructions on {cpu.model}")
    key = cache_key(cpu, network, batch, kind)
    entries = read_cache()
    entry = entries.get(key)
    if entry is None:
        seconds = time_precisions(make_workload())
        faster = min(CANDIDATES, key=seconds.__getitem__)  # a tie keeps fp32
        entry = {"precision": faster, "seconds": seconds, "cpu": cpu.model, "batch": batch}
        entries[key] = entry
        write_cache(entries)
        how = "measured"
    else:
        how = "measured earlier"
    ms = ", ".join(f"{name} {1000 * entry['seconds'][name]:.0f} ms" for name in CANDIDATES)
    return Decision(entry["precision"], f"{how} on {cpu.model}, batch {batch}: {ms} per step")


def time_precisions(workload: Callable[[str], None], rounds: int = ROUNDS) -> dict[str, float]:
    """Median seconds of ``workload`` in each candidate precision: one warm-up call each
    (kernel selection, allocations), then ``rounds`` rounds, the order reversed every other
    round so that a slow spell of the machine falls on both alike."""
    for name in CANDIDATES:
        workload(name)
    times: dict[str, list[float]] = {name: [] for name in CANDIDATES}
    for r in range(rounds):
        for name in CANDIDATES if r % 2 == 0 else reversed(CANDIDATES):
            start = clock()
            workload(name)
            times[name].append(clock() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def cache_key(cpu: CpuInfo, network: Mapping[str, Any], batch: int, kind: str) -> str:
    """The key of one measurement: everything its outcome depends on, hashed."""
    parts = {
        "cpu": cpu.model,
        "bf16": list(cpu.bf16),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "network": dict(network),
        "batch": batch,
        "kind": kind,
    }
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def cache_path() -> Path:
    """``$XDG_CACHE_HOME/diffuse/precision.json`` (default ``~/.cache/diffuse/...``)."""
    return user_cache_dir(CACHE_FILE)


def read_cache() -> dict[str, dict[str, Any]]:
    """The cached decisions by key; empty when there is no cache or it is unreadable (a
    damaged cache only costs a new measurement, and is rewritten whole)."""
    try:
        data = json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        return {}
    entries = data.get("entries")
    if not isinstance(entries, dict):
        return {}
    return {key: entry for key, entry in entries.items() if _valid(entry)}


def write_cache(entries: Mapping[str, dict[str, Any]]) -> None:
    """Replace the cache atomically with ``entries``."""
    atomic_write_json(cache_path(), {"format": CACHE_FORMAT, "entries": dict(entries)})


def _valid(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and entry.get("precision") in CANDIDATES
        and isinstance(entry.get("seconds"), dict)
        and all(isinstance(entry["seconds"].get(name), int | float) for name in CANDIDATES)
    )
