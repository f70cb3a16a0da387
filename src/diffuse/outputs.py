"""Output paths: where a command may write, and which folder it may replace.

Every command that writes a folder (samples, nll, neighbours, sweep, checkpoints)
describes it by an :class:`OutputLayout`: the file that marks such a folder and the
patterns of every entry it holds. :meth:`OutputLayout.check` runs before any work and
accepts a new path or an empty folder; an existing folder only with ``overwrite`` and
only when it holds nothing but an earlier output of the same layout. So ``--overwrite``
replaces what diffuse wrote there and never deletes a file of the user's: a folder with
anything else in it is refused, and left as it was. (``diffuse train`` applies the same
rule to run folders, :mod:`diffuse.train.run`.)

:func:`check_output_path` refuses, for files and folders alike, a path without a name
of its own: ``.``, ``..``, ``/``, or any folder that holds the current one (replacing
it would pull the working folder from under the command).
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

from diffuse.errors import ConfigError, OutputExistsError

SHOWN = 5  # foreign entries named in an error message


def check_output_path(path: str | os.PathLike) -> Path:
    """The absolute, normalised form of the output path ``path``; :class:`ConfigError` when
    it is the current folder, a folder above it, or has no name (``.``, ``..``, ``/``)."""
    given = Path(path).expanduser()
    absolute = Path(os.path.abspath(given))
    cwd = Path.cwd()
    if not given.name or not absolute.name or absolute == cwd or absolute in cwd.parents:
        raise ConfigError(
            f"the output {str(path)!r} is the current folder or a folder above it; diffuse "
            "writes its output as a new file or folder of its own: name one, e.g. "
            f"{os.path.join(str(path), 'out')}"
        )
    return absolute


def check_output_file(path: str | os.PathLike, overwrite: bool, suffix: str) -> Path:
    """The absolute path of an output file ending in ``suffix`` (e.g. ``.png``), refused
    when it is a folder, has another suffix, or exists and ``overwrite`` is false."""
    absolute = check_output_path(path)
    if absolute.is_dir():
        raise ConfigError(
            f"{path} is an existing folder; give the name of a {suffix} file to write"
        )
    if absolute.suffix.lower() != suffix:
        raise ConfigError(
            f"the output {path} must be a {suffix} file (e.g. {absolute.stem}{suffix})"
        )
    if absolute.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; choose another file or pass --overwrite")
    return absolute


def _matches(parts: tuple[str, ...], pattern: str) -> bool:
    """Whether a relative path (its parts) matches a '/'-separated glob ``pattern`` part
    by part (so ``images/*.png`` matches ``images/000001.png`` but not ``images/a/b.png``)."""
    pattern_parts = pattern.split("/")
    return len(parts) == len(pattern_parts) and all(
        fnmatch.fnmatchcase(part, wanted) for part, wanted in zip(parts, pattern_parts, strict=True)
    )


@dataclass(frozen=True)
class OutputLayout:
    """What one kind of output folder holds.

    what:     what such a folder is, for messages ("sample folder").
    marker:   the file every such folder holds, e.g. ``info.json``.
    entries:  glob patterns, '/'-separated, of every file and folder it may hold
              (the marker included), e.g. ``("info.json", "images", "images/*.png")``.
    """

    what: str
    marker: str
    entries: tuple[str, ...]

    def foreign(self, folder: Path) -> list[str]:
        """The entries of ``folder`` (recursively, as relative paths) that no pattern of
        this layout matches: what the user, not diffuse, put there."""
        found = []
        for entry in sorted(folder.rglob("*")):
            parts = entry.relative_to(folder).parts
            if not any(_matches(parts, pattern) for pattern in self.entries):
                found.append(entry.relative_to(folder).as_posix())
        return found

    def check(self, path: str | os.PathLike, overwrite: bool) -> Path:
        """The absolute output folder ``path`` if it is new or empty, or (with
        ``overwrite``) an earlier output of this layout and nothing else; raises
        :class:`ConfigError` or :class:`OutputExistsError` otherwise. Reads only."""
        folder = check_output_path(path)
        if not folder.exists():
            return folder
        if not folder.is_dir():
            raise ConfigError(f"{path} is a file; give a folder for the {self.what}")
        if not any(folder.iterdir()):
            return folder
        foreign = self.foreign(folder)
        if foreign:
            listed = ", ".join(foreign[:SHOWN]) + (
                f", ... ({len(foreign)} in all)" if len(foreign) > SHOWN else ""
            )
            raise ConfigError(
                f"{path} already exists and holds files diffuse did not write there "
                f"({listed}); --overwrite replaces only an earlier {self.what}, so choose "
                "a new folder (nothing was changed)"
            )
        if not (folder / self.marker).is_file():
            raise ConfigError(
                f"{path} already exists and is not an earlier {self.what} (it has no "
                f"{self.marker}); choose a new folder (nothing was changed)"
            )
        if not overwrite:
            raise OutputExistsError(
                f"{path} already exists (an earlier {self.what}); choose another folder or "
                "pass --overwrite to replace it"
            )
        return folder
