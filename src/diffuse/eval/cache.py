"""Where cached reference statistics live, what names an entry, and what makes it stale.

An entry holds the statistics of one reference (a data set split, or a folder of images,
at a count and a resolution) for one network and precision. Its file name is a readable
label and a hash of that identity, with a folder named by its resolved path: two folders
that share a name (``A/ref`` and ``B/ref``) get two entries. The entry also records a
fingerprint of the content its statistics were computed from; when the content's
fingerprint no longer matches (images added to or changed in the folder), the entry is
recomputed and replaced.

The cache folder is the one given (``--cache-dir``), else :func:`user_cache_dir` ``("ref")``:
``$DIFFUSE_CACHE/ref``, else ``$XDG_CACHE_HOME/diffuse/ref``, else ``~/.cache/diffuse/ref``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

from diffuse.data.locate import user_cache_dir


def cache_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` when given, else the user's cache folder of reference statistics."""
    return Path(cache_dir).expanduser() if cache_dir else user_cache_dir("ref")


def entry_path(identity: dict, label: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The entry of ``identity`` (JSON-serialisable: what was measured, with which network),
    named ``<label>-<16 hex digits of the identity's hash>.npz``."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    readable = re.sub(r"[^A-Za-z0-9._+-]+", "_", label).strip("._") or "reference"
    return cache_folder(cache_dir) / f"{readable}-{digest[:16]}.npz"


def array_fingerprint(images: np.ndarray) -> str:
    """SHA-256 of an image array's shape, dtype and pixels: the content of a named data set
    (its files may be found in several places, so their paths say nothing)."""
    digest = hashlib.sha256(f"{images.shape} {images.dtype}".encode())
    digest.update(np.ascontiguousarray(images).data)
    return digest.hexdigest()


def files_fingerprint(root: str | os.PathLike) -> str:
    """SHA-256 of the relative path, size and modification time of every file under the
    folder ``root`` (recursively, hidden entries skipped), or of the file ``root``: cheap to
    take, without decoding an image, and changed by any file added, removed or edited."""
    root = Path(root)
    paths = [root] if root.is_file() else sorted(root.rglob("*"))
    digest = hashlib.sha256()
    for path in paths:
        relative = path.relative_to(root.parent if root.is_file() else root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        stat = path.stat()
        digest.update(f"{relative.as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
