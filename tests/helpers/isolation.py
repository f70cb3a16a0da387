"""The isolation every test gets (see tests/conftest.py): fresh caches, no downloads, a
CPU without bf16 instructions, no GPU, no TensorBoard and no data set but the test's own."""

from __future__ import annotations

import os
import sys

import torch

import diffuse.data.locate as locate_module
from diffuse import hardware

# torch's device queries: (module, name, the real function read before any test hides
# it, what it answers on a machine without GPUs).
DEVICE_QUERIES = [
    (torch.cuda, "is_available", torch.cuda.is_available, False),
    (torch.cuda, "device_count", torch.cuda.device_count, 0),
    (torch.backends.mps, "is_available", torch.backends.mps.is_available, False),
]
if hasattr(torch, "xpu"):  # Intel GPUs (torch 2.4 and later)
    DEVICE_QUERIES.append((torch.xpu, "is_available", torch.xpu.is_available, False))
VISIBLE_DEVICES_VAR = "CUDA_VISIBLE_DEVICES"
REAL_VISIBLE_DEVICES = os.environ.get(VISIBLE_DEVICES_VAR)


def show_gpus(monkeypatch, shown: bool) -> None:
    """Whether torch sees this machine's GPUs, in this process and in the processes it
    starts. Hidden, every device default is the CPU's on every machine (as CI's), so the
    suite tests the same paths everywhere; tests/test_cuda.py shows them."""
    for owner, name, real, answer in DEVICE_QUERIES:
        monkeypatch.setattr(owner, name, real if shown else lambda answer=answer: answer)
    if shown:
        if REAL_VISIBLE_DEVICES is None:
            monkeypatch.delenv(VISIBLE_DEVICES_VAR, raising=False)
        else:
            monkeypatch.setenv(VISIBLE_DEVICES_VAR, REAL_VISIBLE_DEVICES)
    else:
        monkeypatch.setenv(VISIBLE_DEVICES_VAR, "")


def isolate(monkeypatch, tmp_path_factory, hide_data: bool = True, hide_gpus: bool = True) -> None:
    """Caches in fresh folders, downloads refused, the CPU read as one without bf16
    instructions, (``hide_gpus``) no GPU, and (``hide_data``) no data set but the test's
    own: what every test gets, for fixtures of a wider scope to apply too. TensorBoard
    reads as not installed (``import`` fails), so that ``train.tensorboard='auto'`` adds
    no ``RUN/tensorboard`` where it is; tests of it install a stand-in."""
    show_gpus(monkeypatch, not hide_gpus)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv(locate_module.CACHE_ENV_VAR, str(tmp_path_factory.mktemp("diffuse-cache")))
    monkeypatch.setenv(locate_module.OFFLINE_VAR, "1")
    cpuinfo = tmp_path_factory.mktemp("cpu") / "cpuinfo"
    cpuinfo.write_text("model name\t: CPU of the test suite\nflags\t\t: fpu sse2 avx2\n")
    monkeypatch.setattr(hardware, "CPUINFO", cpuinfo)
    if hide_data:
        monkeypatch.delenv(locate_module.ENV_VAR, raising=False)
        monkeypatch.setattr(locate_module, "SYSTEM_DATA_ROOT", tmp_path_factory.mktemp("system"))
