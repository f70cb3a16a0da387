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
