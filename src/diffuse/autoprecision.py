"""``precision="auto"``: bf16 autocast only where this device runs it faster than float32.

bf16 halves the memory traffic and, with bf16 matrix instructions, runs the convolutions
and matrix products up to several times faster; without them it is emulated and slower
than float32. The decision:

- CUDA without bf16 (compute capability below 8.0) and a CPU without bf16 instructions
  (:mod:`diffuse.hardware`): float32, without timing anything (emulated bf16 never wins).
- CUDA with bf16 support, and a CPU with bf16 instructions: the caller's workload (the
  real network at the run's batch size: one forward and backward pass for training, one
  forward pass at the rows a sampling step evaluates for sampling) is timed for each
  candidate of :data:`CANDIDATES`, in a few alternating rounds after a warm-up; the
  fastest median wins, a tie going to the earlier candidate. bf16 is timed in both
  memory formats (the network computes in the layout of its weights,
  :meth:`diffuse.nn.encoder.Network.encode`), since which is faster depends on the CPU
  and the network: on a 2-core Zen 4 EPYC (AVX512-BF16) at batch 64 the ``fashion``
  network trained 104.2 images/s in NCHW against 69.9 in channels_last, which float32
  prefers, and the 32x32 ``bench`` network 32.2 against 24.7 (``benchmarks/bench_unet.py
  --precisions bf16``, rows ``ours`` and ``ours-nchw``). The result is cached in
  diffuse's cache folder (``precision.json``, see ``user_cache_dir``) per (CPU and bf16
  instructions, threads - or the GPU's name and compute capability -, torch version,
  network configuration, batch, workload kind), so each such combination is timed once.
  On a GPU each timed call waits for the device to finish; whether bf16 wins there
  depends on the network's size as on a CPU (its casts against the arithmetic it saves).
- any other device: float32.

"auto" never chooses fp16: its gradient scaler skips steps, and where fp16 is fast bf16
is too.
"""

from __future__ import annotations

import copy
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
CACHE_FORMAT = 6  # 3: the NCHW candidate runs its activations in NCHW too; 4: both layouts
# got faster by different amounts (upsampling as a transposed convolution, the folded
# scale-shift in NCHW); 5: bf16 in channels_last got the fused GroupNorm + SiLU; 6: fp32's
# GroupNorm + SiLU runs in C kernels; each change times earlier choices again


@dataclass(frozen=True)
class Candidate:
    """One way to run the network that "auto" times.

    name:          how the cache and the messages call it.
    precision:     "fp32" or "bf16" (autocast).
    memory_format: the layout of the weights, and so of the activations, named as
                   ``torch`` names it: "channels_last" or "contiguous_format" (NCHW).
    """

    name: str
    precision: str
    memory_format: str

    @property
    def torch_format(self) -> torch.memory_format:
        return getattr(torch, self.memory_format)


CANDIDATES = (
    Candidate("fp32", "fp32", "channels_last"),
    Candidate("bf16", "bf16", "channels_last"),
    Candidate("bf16-nchw", "bf16", "contiguous_format"),
)
_BY_NAME = {candidate.name: candidate for candidate in CANDIDATES}
ROUNDS = 3
BF16_CAPABILITY = (8, 0)  # CUDA compute capability of the first GPUs with bf16 (Ampere)
clock = time.perf_counter  # a module attribute, so that a test can fake the timer


@dataclass(frozen=True)
class Decision:
    """The precision "auto" stands for, in which memory format, and why.

    precision:     "fp32" or "bf16".
    reason:        a short explanation for the user ("no bf16 instructions on AMD EPYC").
    memory_format: the layout of the network's weights, as :class:`Candidate` names it,
                   or None to leave the network's own (an explicit precision).
    """

    precision: str
    reason: str
    memory_format: str | None = "channels_last"

    @property
    def torch_format(self) -> torch.memory_format | None:
        return None if self.memory_format is None else getattr(torch, self.memory_format)

    def apply(self, network: torch.nn.Module) -> torch.nn.Module:
        """``network`` with its weights moved, in place, to this decision's memory format."""
        if self.memory_format is not None:
            network.to(memory_format=self.torch_format)
        return network

    def message(self) -> str:
        layout = " in NCHW" if self.memory_format == "contiguous_format" else ""
        return f"precision auto -> {self.precision}{layout} ({self.reason})"

    @classmethod
    def of(cls, candidate: Candidate, reason: str) -> Decision:
        return cls(candidate.precision, reason, candidate.memory_format)


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
    make_workload: returns ``workload``, where ``workload(precision, memory_format)`` runs
              one representative step on ``device`` in "fp32" or "bf16" autocast with the
              network's weights in that ``torch.memory_format``; called (and the workload
              built) only where bf16 runs natively and no result is cached.
    kind:     what the workload measures ("train": forward and backward; "sample": one
              forward pass without autograd): part of the key.
    """
    device = torch.device(device)
    synchronize: Callable[[], None] = lambda: None  # noqa: E731 - a CPU has nothing to wait for
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        capability = torch.cuda.get_device_capability(device)
        if capability < BF16_CAPABILITY:  # is_bf16_supported() counts emulation too
            return Decision("fp32", f"{name} has no bf16 support")
        machine = {"gpu": name, "capability": ".".join(map(str, capability))}
        synchronize = lambda: torch.cuda.synchronize(device)  # noqa: E731
    elif device.type == "cpu":
        cpu = cpu_info()
        if not cpu.bf16:
            return Decision("fp32", f"no bf16 instructions on {cpu.model}")
        name, machine = cpu.model, cpu_machine(cpu)
    else:
        return Decision("fp32", f"bf16 is not measured on {device.type} devices")
    key = cache_key(machine, network, batch, kind)
    entries = read_cache()
    entry = entries.get(key)
    if entry is None:
        seconds = time_precisions(make_workload(), synchronize=synchronize)
        fastest = min(CANDIDATES, key=lambda c: seconds[c.name])  # a tie keeps the earlier
        entry = {"choice": fastest.name, "seconds": seconds, "device": name, "batch": batch}
        entries[key] = entry
        write_cache(entries)
        how = "measured"
    else:
        how = "measured earlier"
    ms = ", ".join(f"{c.name} {1000 * entry['seconds'][c.name]:.0f} ms" for c in CANDIDATES)
    reason = f"{how} on {name}, batch {batch}: {ms} per step"
    return Decision.of(_BY_NAME[entry["choice"]], reason)


def votes(decision: Decision, rank: int) -> torch.Tensor:
    """This process's share of the vote of a distributed run: its choice one-hot over
    :data:`CANDIDATES`, then process 0's choice (zeros elsewhere). Summed over the
    processes, :func:`agreed` reads it."""
    choices = [(c.precision, c.memory_format) for c in CANDIDATES]
    ballot = torch.zeros(2 * len(choices))
    chosen = choices.index((decision.precision, decision.memory_format))
    ballot[chosen] = 1.0
    if rank == 0:
        ballot[len(choices) + chosen] = 1.0
    return ballot


def agreed(decision: Decision, totals: torch.Tensor, world_size: int) -> Decision:
    """The precision every process of a distributed run trains in (DDP needs one weight
    layout), from the summed :func:`votes`: the common choice; where the processes timed
    different bf16 layouts, process 0's; where any chose float32, float32."""
    n = len(CANDIDATES)
    if totals[:n].max().item() == world_size:
        return decision
    if totals[CANDIDATES.index(_BY_NAME["fp32"])].item() > 0:
        return Decision("fp32", "a process chose fp32 (no bf16, or bf16 timed slower)")
    leader = CANDIDATES[int(totals[n:].argmax().item())]
    return Decision.of(leader, "the processes timed different bf16 layouts: process 0's")


Workload = Callable[[str, torch.memory_format], None]


def copies_by_format(network: torch.nn.Module) -> Callable[[torch.memory_format], torch.nn.Module]:
    """``copy(memory_format)``: a copy of ``network`` in that memory format, made on first
    use and kept, so that a workload times every candidate on weights of its own layout and
    leaves ``network`` untouched."""
    copies: dict[torch.memory_format, torch.nn.Module] = {}

    def copy_in(memory_format: torch.memory_format) -> torch.nn.Module:
        if memory_format not in copies:
            copies[memory_format] = copy.deepcopy(network).to(memory_format=memory_format)
        return copies[memory_format]

    return copy_in


def time_precisions(
    workload: Workload, rounds: int = ROUNDS, synchronize: Callable[[], None] = lambda: None
) -> dict[str, float]:
    """Median seconds of ``workload`` for each candidate, by name: one warm-up call each
    (kernel selection, allocations), then ``rounds`` rounds, the order reversed every other
    round so that a slow spell of the machine falls on all alike. ``synchronize`` waits
    for the device (a GPU's work is queued), after every call."""

    def run(candidate: Candidate) -> None:
        workload(candidate.precision, candidate.torch_format)
        synchronize()

    for candidate in CANDIDATES:
        run(candidate)
    times: dict[str, list[float]] = {candidate.name: [] for candidate in CANDIDATES}
    for r in range(rounds):
        for candidate in CANDIDATES if r % 2 == 0 else reversed(CANDIDATES):
            start = clock()
            run(candidate)
            times[candidate.name].append(clock() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def cpu_machine(cpu: CpuInfo) -> dict[str, Any]:
    """What of a CPU a measurement depends on: its model, bf16 instructions and threads."""
    return {"cpu": cpu.model, "bf16": list(cpu.bf16), "threads": torch.get_num_threads()}


def cache_key(machine: Mapping[str, Any], network: Mapping[str, Any], batch: int, kind: str) -> str:
    """The key of one measurement: everything its outcome depends on, hashed. ``machine``
    describes the device: a CPU's model, bf16 instructions and threads, or a GPU's name
    and compute capability."""
    parts = {
        **machine,
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
        and entry.get("choice") in _BY_NAME
        and isinstance(entry.get("seconds"), dict)
        and all(isinstance(entry["seconds"].get(c.name), int | float) for c in CANDIDATES)
    )
