"""Downloading a published data file: checksum-verified, with progress, moved into place atomically.

A file appears under its final name only after its whole content has arrived and its MD5
matches the digest its authors published, so an interrupted or corrupted download never
looks like data.
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from diffuse.errors import DataError
from diffuse.io import atomic_path

_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """A file as its authors publish it.

    Args:
        name: the published file name, kept on disk.
        urls: where to fetch it, tried in order (the dataset's home first or a mirror).
        md5: the published MD5 hex digest.
    """

    name: str
    urls: tuple[str, ...]
    md5: str


def fetch_url(url: str, destination: Path, description: str) -> None:
    """Stream ``url`` into ``destination`` with a tqdm progress bar (the only network call)."""
    with urllib.request.urlopen(url, timeout=60) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with (
            destination.open("wb") as out,
            tqdm(total=total, unit="B", unit_scale=True, desc=description) as bar,
        ):
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                bar.update(len(chunk))


def md5_of(path: Path) -> str:
    """The MD5 hex digest of a file's bytes."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(remote: RemoteFile, folder: Path) -> Path:
    """Fetch ``remote`` into ``folder`` (trying each URL) and return its path.

    Raises DataError listing each URL's failure (network error or checksum mismatch) when
    none worked; nothing is left under the final name then.
    """
    target = folder / remote.name
    failures = []
    for url in remote.urls:
        try:
            with atomic_path(target) as partial:
                fetch_url(url, partial, remote.name)
                digest = md5_of(partial)
                if digest != remote.md5:
                    raise DataError(f"checksum mismatch: md5 {digest}, published {remote.md5}")
            return target
        except (OSError, http.client.HTTPException, DataError) as err:
            failures.append(f"{url}: {err}")
    raise DataError(f"could not download {remote.name}: " + "; ".join(failures))
