"""A CPU faked for the tests: /proc/cpuinfo as a file the test writes."""

from __future__ import annotations

from pathlib import Path

from diffuse import hardware

EPYC = "AMD EPYC 9R14 96-Core Processor"


def fake_cpu(tmp_path: Path, monkeypatch, flags: str) -> None:
    """Make /proc/cpuinfo read as an EPYC with ``flags``."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: {EPYC}\nflags\t\t: fpu sse2 {flags}\n")
    monkeypatch.setattr(hardware, "CPUINFO", cpuinfo)


def timings_favouring(name: str, timed: list | None = None):
    """A stand-in for ``autoprecision.time_precisions`` that runs the real workload once
    per candidate (its times are noise here) and reports candidate ``name`` as twice as
    fast as the others; each report is appended to ``timed`` when given."""
    from diffuse import autoprecision

    def time_precisions(workload, rounds=autoprecision.ROUNDS, synchronize=None) -> dict:
        for candidate in autoprecision.CANDIDATES:
            workload(candidate.precision, candidate.torch_format)
        seconds = {c.name: 0.1 if c.name == name else 0.2 for c in autoprecision.CANDIDATES}
        if timed is not None:
            timed.append(seconds)
        return seconds

    return time_precisions
