"""Faults a training run survives: ``kill -9`` at every stage of writing a checkpoint (and
the best checkpoint of FID while training), a full disk while saving, a damaged latest
checkpoint, and a second ``diffuse train`` on the same run folder. Each is injected into a
real ``diffuse train`` on the digits."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from safetensors import SafetensorError

import diffuse.checkpoint
import diffuse.io
from diffuse.checkpoint import load_checkpoint
from diffuse.cli import main
from diffuse.errors import OutputInUseError
from diffuse.train.lock import LOCK_FILE, check_run_unlocked, hold_run_lock
from helpers.train_processes import (
    one_thread_env,
    resume_run,
    start_endless_training,
    tiny_run,
)

# Steps of 8 images with a checkpoint after each (three kept). train.compile=off: with auto
# the checkpoint records the choice once the first steps of a process have been timed,
# which a run resumed one step before its end never reaches (a difference of history, not
# of the trained state these tests compare bit for bit).
EVERY_STEP = ["--batch-size", "8", "--set", "train.checkpoint_every=1"]
EVERY_STEP += ["--set", "train.compile=off"]
THREE_STEPS = ["--steps", "3", *EVERY_STEP]


def differing(folder: Path, reference: Path) -> list[str]:
    """The files of two checkpoint folders whose bytes differ (or that only one holds)."""
    names = sorted({p.name for p in folder.iterdir()} | {p.name for p in reference.iterdir()})
    return [
        name
        for name in names
        if not ((folder / name).is_file() and (reference / name).is_file())
        or (folder / name).read_bytes() != (reference / name).read_bytes()
    ]


# ------------------------------------------------------------ kill -9 while saving

# Runs `diffuse train` jobs one after the other, each in a child forked from this process
# (what a run imports is imported once: under load that takes longer than all the runs),
# and prints for each its exit code and the listings of its checkpoints folder and its run
# folder. A job's fault (module, function, "before" | "after", pattern) makes the child
# SIGKILL itself around the first call of module.function on a path matching the pattern.
# FID while training measures with the stand-in feature network.
DRIVER = r"""
import importlib, json, os, re, signal, sys
import sklearn.datasets, torch._dynamo
import diffuse.train.session
from diffuse.cli import main
from helpers.stand_in_network import install_stand_in

install_stand_in()

def kill_at(module, name, when, pattern):
    owner = importlib.import_module(module)
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        hit = any(isinstance(a, (str, os.PathLike)) and re.search(pattern, os.fspath(a))
                  for a in args)
        if hit and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if hit:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    setattr(owner, name, wrapper)

for job in json.loads(sys.argv[1]):
    child = os.fork()
    if child == 0:
        log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        if job["fault"]:
            kill_at(*job["fault"])
        code = main(job["argv"])
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    listings = {"listing": sorted(os.listdir(job["look"])), "run": sorted(os.listdir(job["out"]))}
    print(json.dumps({"code": code, **listings}), flush=True)
"""


@dataclass(frozen=True)
class Job:
    """One `diffuse train` of the driver: its arguments, its run folder, its log file, and
    the fault that kills it (None: none)."""

    argv: list[str]
    out: Path
    log: Path
    fault: tuple[str, str, str, str] | None = None


def run_jobs(jobs: list[Job]) -> list[dict]:
    """Each job's exit code ("code") and the names in its checkpoints folder ("listing")
    and in its run folder ("run")."""
    plan = [
        {
            "argv": j.argv,
            "log": str(j.log),
            "fault": j.fault,
            "look": str(j.out / "checkpoints"),
            "out": str(j.out),
        }
        for j in jobs
    ]
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(plan)],
        env=one_thread_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


# Where the writer of the step-2 checkpoint is killed: after each file it writes into its
# temporary folder, then on either side of the rename that publishes the folder.
STEP_2 = r"step-00000002[^/]*/"
STAGES = {
    "weights-written": ("diffuse.checkpoint", "save_file", "after", "model.safetensors"),
    "ema-written": ("diffuse.checkpoint", "save_file", "after", "ema_0.99.safetensors"),
    "config-written": ("diffuse.checkpoint", "atomic_write_json", "after", "config.json"),
    "optimizer-written": ("diffuse.checkpoint", "save_file", "after", "optimizer.safetensors"),
    "trainer-state-written": ("diffuse.train.state", "atomic_write_json", "after", "trainer.json"),
    "before-rename": ("os", "replace", "before", None),
    "after-rename": ("os", "replace", "after", None),
}


def fault(stage: str) -> tuple[str, str, str, str]:
    """The driver's fault for ``stage``: a file written into the step-2 checkpoint's
    temporary folder, or the rename of that folder onto its final name."""
    module, name, when, file = STAGES[stage]
    pattern = STEP_2 + re.escape(file) + "$" if file else "/step-00000002$"
    return module, name, when, pattern


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory) -> tuple[Path, dict[str, tuple[Job, dict, Job, dict]]]:
    """The last checkpoint of a run that nothing stopped, and for every stage a run killed
    there and its resumed run (jobs and results), all made by one driver."""
    root = tmp_path_factory.mktemp("faults")
    jobs = [Job(tiny_run(root / "whole", *THREE_STEPS), root / "whole", root / "whole.log")]
    for stage in STAGES:
        out = root / stage
        jobs += [
            Job(tiny_run(out, *THREE_STEPS), out, root / f"{stage}.killed.log", fault(stage)),
            Job(resume_run(out), out, root / f"{stage}.resumed.log"),
        ]
    whole, *results = run_jobs(jobs)
    assert whole["code"] == 0, jobs[0].log.read_text()
    pairs = zip(jobs[1::2], results[::2], jobs[2::2], results[1::2], strict=True)
    return root / "whole/checkpoints/step-00000003", dict(zip(STAGES, pairs, strict=True))


@pytest.mark.parametrize("stage", STAGES)
def test_kill_9_while_saving_resumes_from_the_last_complete_checkpoint(killed_runs, stage):
    """The run is killed while it writes its step-2 checkpoint; --resume starts from the
    last complete checkpoint (step 1, or step 2 once its folder is renamed into place)
    and ends bit for bit where the uninterrupted run ends: both ran the same steps on the
    same machine with one thread, from states that a checkpoint round-trips exactly."""
    whole, runs = killed_runs
    killer, killed, resumer, resumed = runs[stage]
    assert killed["code"] == -signal.SIGKILL, killer.log.read_text()
    complete = 2 if stage == "after-rename" else 1
    published = [name for name in killed["listing"] if not name.startswith(".")]
    assert published == [f"step-{step:08d}" for step in range(1, complete + 1)]
    half_written = [name for name in killed["listing"] if name.startswith(".step-00000002.")]
    assert len(half_written) == (complete == 1)  # hidden: never taken for a checkpoint
    assert resumed["code"] == 0, resumer.log.read_text()
    assert f"trained steps {complete} -> 3" in resumer.log.read_text()
    assert resumed["listing"] == ["step-00000001", "step-00000002", "step-00000003"]
    assert differing(resumer.out / "checkpoints/step-00000003", whole) == []


# ------------------------------------------------- kill -9 while keeping the best

# FID measured at steps 2 and 3 (the end): the first measurement writes RUN/best.
MEASURED = [*THREE_STEPS, "--set", "train.eval_every=2", "--set", "train.eval_samples=8"]
MEASURED += ["--set", "train.eval_steps=2"]
BEST_TMP = r"/\.best\.[^/]*\.tmp/"
BEST_STAGES = {
    "weights-written": ("diffuse.checkpoint", "save_file", "after", BEST_TMP + r"model\.safetensors$"),
    "trainer-state-written": (
        "diffuse.train.state", "atomic_write_json", "after", BEST_TMP + r"trainer\.json$"
    ),
    "before-rename": ("os", "replace", "before", r"/best$"),
    "after-rename": ("os", "replace", "after", r"/best$"),
}  # fmt: skip


@pytest.fixture(scope="module")
def killed_while_keeping_the_best(tmp_path_factory) -> tuple[Path, dict]:
    """A measured run that nothing stopped, and for every stage of writing its first
    RUN/best a run killed there and its resumed run (jobs and results)."""
    root = tmp_path_factory.mktemp("best")
    jobs = [Job(tiny_run(root / "whole", *MEASURED), root / "whole", root / "whole.log")]
    for stage, fault in BEST_STAGES.items():
        out = root / stage
        jobs += [
            Job(tiny_run(out, *MEASURED), out, root / f"{stage}.killed.log", fault),
            Job(resume_run(out), out, root / f"{stage}.resumed.log"),
        ]
    whole, *results = run_jobs(jobs)
    assert whole["code"] == 0, jobs[0].log.read_text()
    pairs = zip(jobs[1::2], results[::2], jobs[2::2], results[1::2], strict=True)
    return root / "whole", dict(zip(BEST_STAGES, pairs, strict=True))


def fid_records(run: Path) -> list[dict]:
    """The FID records of a run's metrics, without the time they took."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "eval_seconds"} for r in records if "fid" in r]


@pytest.mark.parametrize("stage", BEST_STAGES)
def test_kill_9_while_keeping_the_best_resumes_to_the_same_best(
    killed_while_keeping_the_best, stage
):
    """Killed while it writes RUN/best after the step-2 measurement (before the step-2
    checkpoint): RUN/best is absent or whole, never partial; --resume starts from step 1,
    measures step 2 again, and ends with the uninterrupted run's checkpoint, RUN/best and
    FID records, byte for byte, and no temporary folder left behind."""
    whole, runs = killed_while_keeping_the_best
    killer, killed, resumer, resumed = runs[stage]
    assert killed["code"] == -signal.SIGKILL, killer.log.read_text()
    assert killed["listing"] == ["step-00000001"]
    assert ("best" in killed["run"]) == (stage == "after-rename")
    assert resumed["code"] == 0, resumer.log.read_text()
    assert "trained steps 1 -> 3" in resumer.log.read_text()
    assert not [name for name in resumed["run"] if name.startswith(".best")]
    step_3 = "checkpoints/step-00000003"
    assert differing(resumer.out / step_3, whole / step_3) == []
    assert differing(resumer.out / "best", whole / "best") == []
    assert fid_records(resumer.out) == fid_records(whole)


# --------------------------------------------------------------------- disk full

SAFETENSORS_ENOSPC = (
    'Error while serializing: I/O error: No space left on device (os error 28) at path "{}"'
)


def fail_for_step_2(monkeypatch, module, name: str, error) -> None:
    """Make ``module.name`` raise ``error(path)`` when it writes into the step-2 checkpoint."""
    original = getattr(module, name)

    def failing(*args, **kwargs):
        paths = [str(a) for a in args if isinstance(a, str | os.PathLike)]
        if any("step-00000002" in path for path in paths):
            raise error(paths[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)


@pytest.mark.parametrize(
    ("module", "name", "error"),
    [
        (diffuse.checkpoint, "save_file", lambda p: SafetensorError(SAFETENSORS_ENOSPC.format(p))),
        (diffuse.io, "_fsync_file", lambda p: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), p)),
    ],
    ids=["weights", "json-fsync"],
)
def test_a_full_disk_while_saving_is_named_and_the_previous_checkpoint_kept(
    tmp_path, capsys, monkeypatch, module, name, error
):
    run = tmp_path / "run"
    fail_for_step_2(monkeypatch, module, name, error)
    assert main(tiny_run(run, *THREE_STEPS)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"error: disk full: could not write {run / 'checkpoints/step-00000002'} " in err
    assert f"then continue with: diffuse train --out {run} --resume" in err
    assert os.listdir(run / "checkpoints") == ["step-00000001"]  # no partial folder
    assert load_checkpoint(run).step == 1
    monkeypatch.undo()  # space freed
    assert main(resume_run(run)) == 0
    assert "trained steps 1 -> 3" in capsys.readouterr().out


# ------------------------------------------------------- damaged latest checkpoint


def truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def scramble(file: Path) -> None:
    file.write_bytes(bytes(255 - b for b in file.read_bytes()))


@pytest.mark.parametrize(
    ("name", "damage"),
    [("model.safetensors", truncate), ("config.json", scramble)],
    ids=["truncated-weights", "scrambled-config"],
)
def test_a_damaged_latest_checkpoint_is_named_by_sample_and_passed_over_by_resume(
    tmp_path, capsys, name, damage
):
    run = tmp_path / "run"
    assert main(tiny_run(run, "--steps", "2", *EVERY_STEP)) == 0
    latest, previous = run / "checkpoints/step-00000002", run / "checkpoints/step-00000001"
    damage(latest / name)
    capsys.readouterr()

    sample = ["sample", "--n", "2", "--steps", "2", "--no-progress", "--out"]
    assert main([*sample, str(tmp_path / "from-run"), str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: {latest / name} " in err, err
    assert f"to use the checkpoint before it, give {previous}" in err
    assert not (tmp_path / "from-run").exists()
    assert main([*sample, str(tmp_path / "from-previous"), str(previous)]) == 0

    capsys.readouterr()
    assert main(resume_run(run, "--steps", "3")) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and f"diffuse train: warning: {latest / name} " in err, err
    assert err.endswith(f"; resuming from {previous} instead\n")
    assert "trained steps 1 -> 3" in out
    assert load_checkpoint(latest).step == 2  # written again, whole


# ----------------------------------------------------- two runs on one folder


def test_a_second_train_on_a_running_folder_is_refused_and_the_first_unharmed(tmp_path, capsys):
    run = tmp_path / "run"
    first, argv = start_endless_training(run)
    try:
        spec = (run / "run.json").read_bytes()
        for second in (argv, [*argv, "--overwrite"], resume_run(run)):
            assert main(second) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1, err
            assert f"{run} is in use: process {first.pid} is training there" in err
        assert first.poll() is None  # still training
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    finally:  # a failed assertion must not leave the endless training running
        if first.poll() is None:
            first.kill()
    assert first.returncode == 128 + signal.SIGTERM, err.decode()
    assert (run / "run.json").read_bytes() == spec
    step = load_checkpoint(run).step
    assert step >= 1
    assert main(resume_run(run, "--steps", str(step + 1))) == 0  # the lock went with it
    assert f"trained steps {step} -> {step + 1}" in capsys.readouterr().out


def test_the_lock_has_one_holder_and_checking_it_creates_nothing(tmp_path):
    folder = tmp_path / "new"
    check_run_unlocked(folder)
    assert not folder.exists()
    refused = pytest.raises(OutputInUseError, match=f"process {os.getpid()} is training there")
    with hold_run_lock(folder):
        assert (folder / LOCK_FILE).read_text() == f"{os.getpid()}\n"
        with refused:
            check_run_unlocked(folder)
        with refused, hold_run_lock(folder):
            pass
    check_run_unlocked(folder)
    with hold_run_lock(folder):
        pass
