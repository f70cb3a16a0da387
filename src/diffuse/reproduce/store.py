"""The suite's folder, and how each record says where, when and at what cost it was made.

Layout of the root folder (``reproduction/`` by default)::

    REPRODUCTION.md              the report, generated from the results below
    <claim>/result.json          a claim's numbers, its check's verdict, costs, provenance
    <claim>/*.png                its plots (and figures)
    models/<model>-<N>steps.json the training of a model: its settings and every piece of it
    scores/<kind>-<digest>.json  one measurement (sample quality, the floor, bits/dim, a
                                 training curve), shared by the claims that ask for it
    .work/runs/<model>-<N>steps/ the training runs (checkpoints: large, never committed)
    .work/samples/<digest>.npz   the sample sets

Everything but ``.work`` is small (JSON and PNG) and meant to be committed; ``.work`` holds
a ``.gitignore`` that keeps it out of git. Every record carries :func:`provenance`: the
code's commit, the CPU, torch's threads and version, and the date; each piece of work
its wall and CPU minutes (:class:`Stopwatch`). Writes are atomic.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from diffuse.errors import DataError
from diffuse.hardware import cpu_info
from diffuse.io import atomic_write_json, atomic_write_text, read_json

REPORT = "REPRODUCTION.md"
RESULT = "result.json"
WORK = ".work"
PACKAGE = Path(__file__).resolve().parent


class Store:
    """The root folder of a reproduction.

    root: the folder (created on first write).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def report(self) -> Path:
        return self.root / REPORT

    def result(self, claim: str) -> Path:
        return self.root / claim / RESULT

    def claim_file(self, claim: str, name: str) -> Path:
        return self.root / claim / name

    def model_record(self, folder: str) -> Path:
        return self.root / "models" / f"{folder}.json"

    def score(self, kind: str, identity: Any) -> Path:
        return self.root / "scores" / f"{kind}-{digest(identity)}.json"

    def run(self, folder: str) -> Path:
        return self.work / "runs" / folder

    def samples(self, identity: Any) -> Path:
        return self.work / "samples" / f"{digest(identity)}.npz"

    @property
    def work(self) -> Path:
        """The folder of large files (see :meth:`make_work`)."""
        return self.root / WORK

    def make_work(self) -> None:
        """Make the folder of large files, with a ``.gitignore`` that ignores it whole:
        called before anything is written into it."""
        if not (self.work / ".gitignore").is_file():
            atomic_write_text(
                self.work / ".gitignore", "# checkpoints and samples: never committed\n*\n"
            )

    def read(self, path: Path) -> dict | None:
        """The JSON record at ``path``, or None when there is none."""
        if not path.is_file():
            return None
        return read_json(path, DataError, "move it away and run again to remake it")

    def write(self, path: Path, record: dict) -> Path:
        atomic_write_json(path, record)
        return path


def digest(identity: Any) -> str:
    """16 hex digits of the SHA-256 of ``identity`` as canonical JSON: the name of a record
    that is the same whenever what it measures is the same."""
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def code_commit() -> str | None:
    """The git commit of this code (``+dirty`` when the package's tracked files differ from
    it; results written elsewhere do not count), or None outside a git checkout."""
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no", "--", ".")
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(PACKAGE), *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},  # a status that never takes index.lock
    )
    return done.stdout.strip()


def provenance() -> dict[str, Any]:
    """Where and with what a record was made."""
    return {
        "commit": code_commit(),
        "cpu": cpu_info().model,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


class Stopwatch:
    """Wall and CPU time of a block (CPU time of this process, all its threads), in
    minutes: ``with Stopwatch() as watch: ...; watch.minutes()``."""

    def __enter__(self) -> Stopwatch:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        self.wall = self.cpu = 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu

    def minutes(self) -> dict[str, float]:
        return {"wall_minutes": round(self.wall / 60, 3), "cpu_minutes": round(self.cpu / 60, 3)}
