"""diffuse.allocator: freed memory kept in the process, measured by the page faults that
reusing it costs, in fresh interpreters (the setting is process-wide)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import diffuse.cli
from diffuse.allocator import keep_freed_memory, running_on_glibc, user_tuned_malloc

glibc_only = pytest.mark.skipif(not running_on_glibc(), reason="tunes glibc's malloc")

# A chain of 16 MiB activations, as a network's forward pass makes them: each round
# allocates and frees the same tensors; prints the minor page faults of the last rounds
# and the peak resident memory, after calling keep_freed_memory() or not.
REUSE = """
import json, resource, sys, torch
from diffuse.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x, w = torch.ones(64, 64, 32, 32), torch.full((64, 64, 3, 3), 1e-3)
for round in range(12):
    if round == 6:
        before = faults()
    h = x
    for _ in range(6):
        h = torch.nn.functional.conv2d(h, w, padding=1).relu_() + h
    del h
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"applied": applied, "faults": usage.ru_minflt - before, "peak_kib": usage.ru_maxrss}))
"""


def run_reuse(mode: str, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    environ.pop("DIFFUSE_KEEP_FREED_MEMORY", None)
    environ.update(PYTHONPATH=os.pathsep.join(sys.path), **env)
    done = subprocess.run(
        [sys.executable, "-c", REUSE, mode], capture_output=True, text=True, env=environ,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@glibc_only
def test_kept_memory_is_reused_without_faulting_pages_in_again():
    returned, kept = run_reuse("return"), run_reuse("keep")
    assert kept["applied"] and not returned["applied"]
    # by default glibc gives freed tensors back to the kernel and the next round faults
    # their pages in again (4,096 faults of 4 KiB pages per tensor; fewer with transparent
    # huge pages); kept, the next round takes the same pages
    assert returned["faults"] > 0
    assert kept["faults"] * 4 <= returned["faults"], (kept, returned)
    # the price: the freed memory stays resident, a few tensors' worth here
    assert kept["peak_kib"] <= returned["peak_kib"] + 8 * 16 * 1024, (kept, returned)


@glibc_only
@pytest.mark.parametrize(
    "setting", [("MALLOC_MMAP_MAX_", "65536"), ("DIFFUSE_KEEP_FREED_MEMORY", "0")]
)
def test_a_users_own_malloc_settings_stand(setting):
    answer = run_reuse("keep", **dict([setting]))
    assert not answer["applied"]
    assert answer["faults"] > 0  # glibc's behaviour, as the user asked


def test_malloc_settings_in_the_environment_are_recognised():
    assert not user_tuned_malloc({})
    assert not user_tuned_malloc({"GLIBC_TUNABLES": "glibc.rtld.nns=4"})
    assert user_tuned_malloc({"MALLOC_TRIM_THRESHOLD_": "0"})
    assert user_tuned_malloc({"MALLOC_MMAP_THRESHOLD_": "131072"})
    assert user_tuned_malloc({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"})
    assert user_tuned_malloc({"DIFFUSE_KEEP_FREED_MEMORY": "0"})
    assert not user_tuned_malloc({"DIFFUSE_KEEP_FREED_MEMORY": "1"})


def test_without_glibc_nothing_is_changed(monkeypatch):
    def unknown_name(name):
        raise ValueError(f"unrecognized configuration name: {name}")

    monkeypatch.setattr(os, "confstr", unknown_name)  # as on musl
    assert not running_on_glibc()
    assert keep_freed_memory() is False


def test_every_command_keeps_freed_memory(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(diffuse.cli, "keep_freed_memory", lambda: calls.append(True))
    assert diffuse.cli.main(["reproduce", "--list", "--root", "no-such-folder"]) in (0, 2)
    assert calls == [True]
