"""The CPU's model and bf16 instructions, as read from /proc/cpuinfo."""

from __future__ import annotations

import platform

from diffuse import hardware


def read(tmp_path, monkeypatch, text: str | None) -> hardware.CpuInfo:
    cpuinfo = tmp_path / "cpuinfo"
    if text is not None:
        cpuinfo.write_text(text)
    monkeypatch.setattr(hardware, "CPUINFO", cpuinfo)
    return hardware.cpu_info()


def test_an_x86_cpu_lists_its_amx_and_avx512_bf16_flags(tmp_path, monkeypatch):
    core = "model name\t: Intel(R) Xeon(R) Platinum 8488C\nflags\t\t: sse2 amx_bf16 avx512_bf16\n"
    cpu = read(tmp_path, monkeypatch, f"processor\t: 0\n{core}\nprocessor\t: 1\n{core}")
    assert cpu == hardware.CpuInfo("Intel(R) Xeon(R) Platinum 8488C", ("amx_bf16", "avx512_bf16"))
    assert cpu.describe().endswith("(bf16 instructions: amx_bf16, avx512_bf16)")


def test_a_cpu_without_them_says_bf16_is_emulated(tmp_path, monkeypatch):
    cpu = read(tmp_path, monkeypatch, "model name : AMD EPYC\nflags : avx2 avx512f avx512bw\n")
    assert (
        cpu.bf16 == () and cpu.describe() == "AMD EPYC (bf16 instructions: none, bf16 is emulated)"
    )


def test_an_arm_cpu_lists_its_bf16_feature(tmp_path, monkeypatch):
    cpu = read(tmp_path, monkeypatch, "processor : 0\nFeatures : fp asimd sve bf16 i8mm\n")
    assert cpu.bf16 == ("bf16",)
    assert cpu.model == (platform.processor() or platform.machine() or "unknown CPU")


def test_without_cpuinfo_no_bf16_is_assumed(tmp_path, monkeypatch):
    assert read(tmp_path, monkeypatch, None).bf16 == ()
