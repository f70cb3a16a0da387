"""What the CPU offers for bf16: its model and its bf16 instructions.

PyTorch runs bf16 on a CPU natively only where the CPU has bf16 matrix instructions:
AMX (``amx_bf16``, Intel Sapphire Rapids and later) or AVX512-BF16 (``avx512_bf16``,
Intel Cooper Lake and later, AMD Zen 4 and later) on x86, the BF16 extension (``bf16``)
on Arm. Elsewhere every bf16 operation is emulated in float32 and costs more than float32
itself. Both come from ``/proc/cpuinfo`` (Linux); without it the model is the platform's
processor string and no bf16 instructions are assumed.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")


@dataclass(frozen=True)
class CpuInfo:
    """A CPU as far as bf16 is concerned.

    model: the marketing name ("AMD EPYC 9R14 96-Core Processor").
    bf16:  the bf16 instruction flags it has, from :data:`BF16_FLAGS` (empty: emulated).
    """

    model: str
    bf16: tuple[str, ...]

    def describe(self) -> str:
        """One line: the model and its bf16 instructions."""
        found = ", ".join(self.bf16) if self.bf16 else "none, bf16 is emulated"
        return f"{self.model} (bf16 instructions: {found})"


def cpuinfo_fields() -> dict[str, str]:
    """The fields of :data:`CPUINFO` by lower-case name, each as the first processor lists
    it ("model name", "flags" on x86, "features" on Arm); empty without the file."""
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def cpu_instructions(fields: dict[str, str]) -> set[str]:
    """The instruction flags among ``fields`` (x86's "flags", Arm's "features")."""
    return set((fields.get("flags") or fields.get("features") or "").split())


def cpu_info() -> CpuInfo:
    """This machine's CPU, read from :data:`CPUINFO` where there is one."""
    fields = cpuinfo_fields()
    model = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    flags = cpu_instructions(fields)
    return CpuInfo(model=model, bf16=tuple(f for f in BF16_FLAGS if f in flags))
