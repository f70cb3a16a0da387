"""The isolation every test gets (see tests/conftest.py): fresh caches, no downloads, a
CPU without bf16 instructions and no data set but the test's own."""

from __future__ import annotations

import diffuse.data.locate as locate_module
from diffuse import hardware


def isolate(monkeypatch, tmp_path_factory, hide_data: bool = True) -> None:
    """Caches in fresh folders, downloads refused, the CPU read as one without bf16
    instructions, and (``hide_data``) no data set but the test's own: what every test gets,
    for fixtures of a wider scope to apply too."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv(locate_module.CACHE_ENV_VAR, str(tmp_path_factory.mktemp("diffuse-cache")))
    monkeypatch.setenv(locate_module.OFFLINE_VAR, "1")
    cpuinfo = tmp_path_factory.mktemp("cpu") / "cpuinfo"
    cpuinfo.write_text("model name\t: CPU of the test suite\nflags\t\t: fpu sse2 avx2\n")
    monkeypatch.setattr(hardware, "CPUINFO", cpuinfo)
    if hide_data:
        monkeypatch.delenv(locate_module.ENV_VAR, raising=False)
        monkeypatch.setattr(locate_module, "SYSTEM_DATA_ROOT", tmp_path_factory.mktemp("system"))
