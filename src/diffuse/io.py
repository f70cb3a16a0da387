"""Atomic writes: a file or folder appears complete under its final name, or not at all.

A crash, an interrupt or a bad input halfway through a write never leaves a truncated
file behind, and never damages what was already there under the same name. What appears
has the permissions of an ordinary write under the process's umask (0644 and 0755 under
the usual 0022), although the temporary files behind it start private (0600 and 0700).
A full disk is reported as a :class:`DiskFullError` naming what could not be written.
JSON files are read back by :func:`read_json`, whose errors name the file and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from diffuse.errors import ConfigError, DiffuseError, DiskFullError
from diffuse.outputs import OutputLayout, check_output_path

# Where Linux shows a process's umask without changing it (since Linux 4.7).
PROC_STATUS = Path("/proc/self/status")
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# An overwritten folder NAME waits as .NAME.old-XXXX until its replacement is in place.
ASIDE_INFIX = ".old-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    The caller writes a file at the yielded path. On an exception the temporary file is
    removed and ``path`` is left exactly as it was. A folder, or a path without a name of
    its own (``.``), is refused with :class:`~diffuse.errors.ConfigError`.
    """
    path = check_output_path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is an existing folder; give the name of a file to write")
    with disk_full_named(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            _fsync_file(tmp_path)
            tmp_path.chmod(0o666 & ~current_umask())
            os.replace(tmp_path, path)
        finally:
            tmp_path.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike, layout: OutputLayout, *, overwrite: bool = False, nested: bool = False
) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path``.

    ``path`` must be new or empty, or, with ``overwrite``, hold an earlier output of
    ``layout`` and nothing else (:meth:`OutputLayout.check`, before anything is written
    and again just before the replacement, so a file put there meanwhile is never
    deleted). When overwriting, the old folder is moved aside and deleted only after the
    new one is in place, so at every moment one complete version exists. On an exception
    the temporary folder is deleted and ``path`` is untouched. The folder and the files at
    its top level get the umask's permissions (some writers, such as safetensors', make
    their files private) and are flushed to disk first; with ``nested``, so do the
    sub-folders and every file in them (for a few large files, such as a diffusers
    pipeline's; not for thousands of images, which would each cost an fsync).
    """
    path = layout.check(path, overwrite)
    with disk_full_named(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            yield tmp
            umask = current_umask()
            for child in tmp.rglob("*") if nested else tmp.iterdir():
                if child.is_file():
                    _fsync_file(child)
                    child.chmod(0o666 & ~umask)
                elif nested and child.is_dir():
                    child.chmod(0o777 & ~umask)
            tmp.chmod(0o777 & ~umask)
            layout.check(path, overwrite)
            if path.exists():
                old = tempfile.mkdtemp(prefix=f".{path.name}{ASIDE_INFIX}", dir=path.parent)
                os.replace(path, old)  # onto the empty folder just made: a name no one has
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def read_json(path: str | os.PathLike, error: type[DiffuseError], advice: str = "") -> Any:
    """The JSON value in ``path``; raises ``error`` naming the file, why it could not be
    read (missing, unreadable, not UTF-8 or not JSON) and ``advice`` when given."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as reason:
        ending = f"; {advice}" if advice else ""
        raise error(f"{path} is not readable JSON ({reason}){ending}") from None


@contextlib.contextmanager
def disk_full_named(path: str | os.PathLike) -> Iterator[None]:
    """Raise a full disk (or an exceeded quota) met in the block as a :class:`DiskFullError`
    naming ``path``, the file or folder being written. Nested, the outermost names its own
    path: the folder being written, not the temporary file inside it that failed."""
    try:
        yield
    except OSError as error:
        if not (isinstance(error, DiskFullError) or error.errno in DISK_FULL_ERRNOS):
            raise
        raise DiskFullError(
            f"disk full: could not write {path} (what was there before is unchanged); "
            "free some space on its disk"
        ) from None


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it, else by
    setting and restoring it (for that instant another thread's new file would get the
    stricter 0o077, never a looser mask)."""
    try:
        with PROC_STATUS.open(encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o077)
    os.umask(umask)
    return umask


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
