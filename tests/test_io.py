"""Atomic writes: what appears has the umask's permissions, a full disk is named, and the
umask is read without being changed."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

import diffuse.io
from diffuse.cli import main
from diffuse.errors import DiskFullError
from diffuse.io import atomic_directory, atomic_write_text, current_umask
from diffuse.outputs import OutputLayout
from diffuse.train.run import RunFolder
from diffuse.train.state import remove_stale_temporaries


@pytest.fixture(params=[0o022, 0o077], ids=["umask-022", "umask-077"])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# A folder kind of this test's own: what it may hold, for --overwrite's check.
LAYOUT = OutputLayout("test folder", "file.txt", ("file.txt", "private.bin", "inner.json"))


def wrong_modes(root: Path, umask: int) -> list[str]:
    """Everything under ``root`` whose permissions are not those of an ordinary file or
    folder made under ``umask``."""
    expected = {True: 0o777 & ~umask, False: 0o666 & ~umask}
    return [f"{p} {mode(p):o}" for p in root.rglob("*") if mode(p) != expected[p.is_dir()]]


def test_atomic_files_and_folders_get_the_umasks_permissions(tmp_path, umask):
    atomic_write_text(tmp_path / "file.txt", "text")
    with atomic_directory(tmp_path / "folder", LAYOUT) as folder:
        os.close(os.open(folder / "private.bin", os.O_CREAT | os.O_WRONLY, 0o600))  # as safetensors
        atomic_write_text(folder / "inner.json", "{}")
    assert wrong_modes(tmp_path, umask) == []


def test_every_file_of_a_run_and_of_its_samples_gets_the_umasks_permissions(tmp_path, umask):
    """A run resumed from an earlier checkpoint (so metrics.jsonl is rewritten), then
    sampled: run.json, checkpoints, grids, metrics.jsonl, samples.npz, ... alike."""
    run = tmp_path / "run"
    quick = ["--set", "train.sample_steps=2", "--set", "train.sample_columns=1", "--no-progress"]
    train = ["train", "--preset", "tiny", "--data", "digits", "--out", str(run), *quick]
    settings = ["--set", "train.checkpoint_every=1", "--set", "train.log_every=1"]
    assert main([*train, "--steps", "2", "--batch-size", "4", *settings]) == 0
    os.rename(run / "checkpoints/step-00000002", tmp_path / "moved-away")
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    sample = ["sample", str(run), "--n", "2", "--steps", "2", "--no-progress"]
    assert main([*sample, "--out", str(tmp_path / "samples")]) == 0
    assert (tmp_path / "samples/samples.npz").is_file()
    assert len(RunFolder(run).metrics_file.read_text().splitlines()) == 2
    assert wrong_modes(tmp_path, umask) == []


def test_the_umask_is_read_without_changing_it(tmp_path, monkeypatch, umask):
    assert current_umask() == umask
    monkeypatch.setattr(diffuse.io, "PROC_STATUS", tmp_path / "no-such-file")  # not Linux
    assert current_umask() == umask
    (tmp_path / "made").touch()
    assert mode(tmp_path / "made") == 0o666 & ~umask


def no_space(path) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_a_full_disk_names_the_folder_being_written_and_keeps_what_was_there(tmp_path, monkeypatch):
    atomic_write_text(tmp_path / "kept/file.txt", "before")
    monkeypatch.setattr(diffuse.io, "_fsync_file", no_space)
    with pytest.raises(DiskFullError, match=rf"^disk full: could not write {tmp_path / 'kept'} "):
        with atomic_directory(tmp_path / "kept", LAYOUT, overwrite=True) as folder:
            atomic_write_text(folder / "file.txt", "after")  # fails inside the folder
    with pytest.raises(DiskFullError, match=f"could not write {tmp_path / 'kept/file.txt'} "):
        atomic_write_text(tmp_path / "kept/file.txt", "after")
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["file.txt"]
    assert (tmp_path / "kept/file.txt").read_text() == "before"


def test_overwriting_never_collides_with_what_an_earlier_process_left_aside(tmp_path):
    """The old version waits under a name no one has (not one built from the process id,
    which a container's next process often shares)."""
    atomic_write_text(tmp_path / "kept/file.txt", "before")
    leftover = tmp_path / f".kept.old-{os.getpid()}"
    atomic_write_text(leftover / "file.txt", "an older process's")
    with atomic_directory(tmp_path / "kept", LAYOUT, overwrite=True) as folder:
        atomic_write_text(folder / "file.txt", "after")
    assert (tmp_path / "kept/file.txt").read_text() == "after"
    assert (leftover / "file.txt").read_text() == "an older process's"


def test_a_write_killed_between_its_two_moves_gets_the_old_version_back(tmp_path, monkeypatch):
    """Killed after moving the old folder aside and before moving the new one in: the
    clean-up before the next write puts the old version back instead of deleting it."""
    atomic_write_text(tmp_path / "best/file.txt", "before")

    def killed_moving_the_new_version_in(source, target):
        if Path(target) == tmp_path / "best":
            raise KeyboardInterrupt
        os.rename(source, target)

    monkeypatch.setattr(diffuse.io.os, "replace", killed_moving_the_new_version_in)
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(tmp_path / "best", LAYOUT, overwrite=True) as folder:
            atomic_write_text(folder / "file.txt", "after")
    monkeypatch.undo()
    assert not (tmp_path / "best").exists()
    (tmp_path / ".best.1234.tmp").mkdir()  # a temporary folder of another killed write
    removed = remove_stale_temporaries(tmp_path / "best")
    assert [p.name for p in removed] == [".best.1234.tmp"]
    assert (tmp_path / "best/file.txt").read_text() == "before"
    assert [p.name for p in tmp_path.iterdir()] == ["best"]
