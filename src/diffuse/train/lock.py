"""One training process per run folder: ``RUN/.lock``, held with ``flock`` for the run's life.

A second ``diffuse train`` on the same folder (a new run, ``--overwrite`` or ``--resume``)
is refused at once instead of writing over the first one's checkpoints. A ``flock`` lock
belongs to the open file, so the kernel drops it when the process ends, however it ends
(``kill -9`` too): a lock file left behind never blocks a later run. The holder writes its
process id into the file so that the refusal can name it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from diffuse.errors import OutputInUseError

LOCK_FILE = ".lock"


@contextlib.contextmanager
def hold_run_lock(folder: str | Path) -> Iterator[None]:
    """Hold the lock of the run folder ``folder`` (created if needed) for the block;
    :class:`OutputInUseError` if another process holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        _lock_or_refuse(fd, folder)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def check_run_unlocked(folder: str | Path) -> None:
    """Raise :class:`OutputInUseError` if a process holds the lock of ``folder``; creates
    nothing (a check made before any input has been validated)."""
    folder = Path(folder)
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        _lock_or_refuse(fd, folder)
    finally:
        os.close(fd)


def _lock_or_refuse(fd: int, folder: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        who = f"process {holder}" if holder.isdigit() else "another process"
        raise OutputInUseError(
            f"{folder} is in use: {who} is training there; wait for it to finish or stop it "
            "(its checkpoints stay), or choose another --out"
        ) from None
