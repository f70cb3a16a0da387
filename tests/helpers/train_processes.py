"""``diffuse train`` runs of the tiny preset on the digits, as the command-line and fault
tests start them: in-process argument lists, and real processes that train until stopped."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

DIFFUSE = str(Path(sys.executable).parent / "diffuse")
TESTS = Path(__file__).resolve().parents[1]
QUICK = ["--set", "train.sample_steps=3", "--set", "train.sample_columns=2", "--no-progress"]


def tiny_run(out: Path, *extra: str) -> list[str]:
    """Arguments of ``diffuse train`` for the tiny preset on the digits into ``out``, in
    float32: a child process reads the real CPU, not the tests' stand-in without bf16, and
    "auto" would time and choose bf16 on some machines and not on others."""
    preset = ["--preset", "tiny", "--data", "digits", "--precision", "fp32"]
    return ["train", *preset, "--out", str(out), *QUICK, *extra]


def resume_run(out: Path, *extra: str) -> list[str]:
    """Arguments of ``diffuse train --resume`` of the run in ``out``."""
    return ["train", "--out", str(out), "--resume", "--no-progress", *extra]


def one_thread_env() -> dict[str, str]:
    """This process's environment with one OpenMP thread (the tests share the cores), and
    the tests' folder on the module path, after what is there, so that a child process
    imports ``helpers`` (e.g. :func:`helpers.stand_in_network.install_stand_in`)."""
    path = [p for p in (os.environ.get("PYTHONPATH"), str(TESTS)) if p]
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(path)}


def start_endless_training(run: Path, timeout: float = 120) -> tuple[subprocess.Popen, list[str]]:
    """A ``diffuse train`` process into ``run`` that would train for 100000 steps, returned
    (with its arguments) once it has logged its first step, i.e. is training for real."""
    argv = tiny_run(run, "--steps", "100000", "--batch-size", "8")
    argv += ["--set", "train.log_every=1", "--set", "train.checkpoint_every=100000"]
    process = subprocess.Popen(
        [DIFFUSE, *argv], env=one_thread_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (metrics.exists() and metrics.stat().st_size):
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    return process, argv
