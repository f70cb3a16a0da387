"""Where a named data set's files are looked for, and what is said when they are not found.

Search order, first match wins:

1. ``data_dir/<name>``, then ``data_dir`` (the ``--data-dir`` option);
2. ``$DIFFUSE_DATA/<name>``, then ``$DIFFUSE_DATA``;
3. ``/usr/share/datasets/<name>`` (Debian's ``dataset-*`` packages install there);
4. the download cache, :func:`user_cache_dir` ``(name)``: ``$DIFFUSE_CACHE/<name>``, else
   ``$XDG_CACHE_HOME/diffuse/<name>``, else ``~/.cache/diffuse/<name>``.

If none holds the files and downloading is allowed, they are downloaded into
``data_dir/<name>`` when a data_dir was given, else into the download cache. Setting
``DIFFUSE_OFFLINE=1`` turns downloading off for the whole process and its children (the
test suite sets it, so a test that would download fails instead).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from diffuse.data.download import RemoteFile, download_file
from diffuse.errors import DataError, MissingFileError

ENV_VAR = "DIFFUSE_DATA"
OFFLINE_VAR = "DIFFUSE_OFFLINE"
CACHE_ENV_VAR = "DIFFUSE_CACHE"
SYSTEM_DATA_ROOT = Path("/usr/share/datasets")

Found = TypeVar("Found")


@dataclass(frozen=True)
class DataSource:
    """How to find and obtain one named data set.

    Args:
        name: the folder name used under every search root ("fashion-mnist").
        title: the name shown to people ("Fashion-MNIST").
        wanted: the files looked for, in words, for the not-found message.
        remote_files: what to download when nothing is found locally.
        how_to_get: extra advice for the not-found message (a package to install).
    """

    name: str
    title: str
    wanted: str
    remote_files: tuple[RemoteFile, ...]
    how_to_get: str = ""


@dataclass(frozen=True)
class Place:
    """A folder searched, and why it was searched (shown when nothing is found)."""

    path: Path | None
    why: str


def user_cache_dir(name: str) -> Path:
    """Folder ``name`` of diffuse's cache (downloads, reference statistics).

    ``$DIFFUSE_CACHE/<name>`` when that variable is set (a test run points it into a
    temporary folder), else ``$XDG_CACHE_HOME/diffuse/<name>``, by default
    ``~/.cache/diffuse/<name>``.
    """
    own = os.environ.get(CACHE_ENV_VAR)
    if own:
        return Path(own).expanduser() / name
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "diffuse" / name


def offline() -> bool:
    """True when ``$DIFFUSE_OFFLINE`` is set to anything but "", "0" or "false"."""
    return os.environ.get(OFFLINE_VAR, "").strip().lower() not in ("", "0", "false")


def search_places(name: str, data_dir: str | Path | None) -> list[Place]:
    """The folders searched for data set ``name``, in order (see the module docstring)."""
    places = []
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        places += [Place(data_dir / name, "--data-dir"), Place(data_dir, "--data-dir")]
    env = os.environ.get(ENV_VAR)
    if env:
        root = Path(env).expanduser()
        places += [Place(root / name, f"${ENV_VAR}"), Place(root, f"${ENV_VAR}")]
    else:
        places.append(Place(None, f"${ENV_VAR} (not set)"))
    places.append(Place(SYSTEM_DATA_ROOT / name, "system data sets"))
    places.append(Place(user_cache_dir(name), "download cache"))
    return places


def locate_or_download(
    source: DataSource,
    data_dir: str | Path | None,
    download: bool,
    find: Callable[[Path], Found | None],
    remote_files: Sequence[RemoteFile] | None = None,
) -> Found:
    """The first non-None ``find(folder)`` over the search places, downloading if needed.

    ``remote_files`` (default ``source.remote_files``) are fetched when nothing is found
    and ``download`` is true. Raises MissingFileError that lists every place searched
    and how to get the data.
    """
    places = search_places(source.name, data_dir)
    for place in places:
        if place.path is not None and place.path.is_dir():
            found = find(place.path)
            if found is not None:
                return found
    remote_files = source.remote_files if remote_files is None else remote_files
    if not download:
        failure = "downloading is off: pass download=True to allow it."
    elif offline():
        failure = f"downloading is off: ${OFFLINE_VAR} is set."
    else:
        folder = (
            Path(data_dir).expanduser() / source.name
            if data_dir is not None
            else user_cache_dir(source.name)
        )
        failure = _download_all(remote_files, folder)
        found = find(folder) if failure is None else None
        if found is not None:
            return found
        failure = failure or f"the files downloaded into {folder} are not usable."
    raise MissingFileError(_not_found_message(source, places, remote_files, failure))


def _download_all(remote_files: Sequence[RemoteFile], folder: Path) -> str | None:
    """Download into ``folder``; on failure say why and remove the folders it created."""
    created = [path for path in (folder, *folder.parents) if not path.exists()]
    try:
        for remote in remote_files:
            download_file(remote, folder)
    except DataError as err:
        for path in created:
            if path.exists() and not any(path.iterdir()):
                path.rmdir()
        return f"the download failed: {err}"
    return None


def _not_found_message(
    source: DataSource, places: list[Place], remote_files: Sequence[RemoteFile], failure: str
) -> str:
    looked = "\n".join(
        f"  - {place.path}  ({place.why})" if place.path else f"  - {place.why}" for place in places
    )
    urls = "\n".join(f"  - {remote.urls[0]}" for remote in remote_files)
    advice = f"\n{source.how_to_get}" if source.how_to_get else ""
    return (
        f"{source.title} not found: looked for {source.wanted} in\n{looked}\n"
        f"and {failure}\n"
        f"To get it: download\n{urls}\n"
        f"into a folder and pass --data-dir FOLDER (data_dir=...) or set "
        f"{ENV_VAR}=FOLDER.{advice}"
    )
