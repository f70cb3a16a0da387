"""Atomic writes: a file or folder appears complete under its final name, or not at all.

A crash, an interrupt or a bad input halfway through a write never leaves a truncated
file behind, and never damages what was already there under the same name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from diffuse.errors import ConfigError
from diffuse.outputs import OutputLayout, check_output_path


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _fsync_file(tmp_path)
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
    path: str | os.PathLike, layout: OutputLayout, *, overwrite: bool = False
) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path``.

    ``path`` must be new or empty, or, with ``overwrite``, hold an earlier output of
    ``layout`` and nothing else (:meth:`OutputLayout.check`, before anything is written
    and again just before the replacement, so a file put there meanwhile is never
    deleted). When overwriting, the old folder is moved aside and deleted only after the
    new one is in place, so at every moment one complete version exists. On an exception
    the temporary folder is deleted and ``path`` is untouched.
    """
    path = layout.check(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        for child in tmp.iterdir():
            if child.is_file():
                _fsync_file(child)
        layout.check(path, overwrite)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
