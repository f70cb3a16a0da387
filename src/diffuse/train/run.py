"""A run folder: what a training run writes, and the rules that protect it.

Layout::

    RUN/run.json                      the run's full description (RunSpec), read on --resume
    RUN/metrics.jsonl                 one JSON object per logged step
    RUN/checkpoints/step-XXXXXXXX/    checkpoints (the last K kept), see diffuse.train.state
    RUN/samples/step-XXXXXXXX.png     sample grids
    RUN/best/                         the checkpoint of the lowest FID measured while
                                      training (train.eval_every), see diffuse.train.fid_tracking
    RUN/tensorboard/                  TensorBoard events (train.tensorboard, diffuse.train.tracking)
    RUN/wandb/                        Weights & Biases' files, with train.wandb_project
    RUN/.lock                         held by the process training there (diffuse.train.lock)

A new run refuses an existing non-empty folder unless asked to overwrite it, and then
only if that folder is a run (it holds ``run.json``): the run's own entries are removed,
nothing else. ``--resume`` needs a run folder. The checks read only; nothing is written
or removed before every input has been checked.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

from diffuse.checkpoint import run_checkpoints
from diffuse.errors import ConfigError, MissingFileError
from diffuse.io import atomic_write_json, atomic_write_text
from diffuse.train.lock import LOCK_FILE
from diffuse.train.spec import RunSpec
from diffuse.train.tracking import TENSORBOARD_FOLDER, WANDB_FOLDER, Tracker

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
BEST_FOLDER = "best"
RUN_ENTRIES = (
    RUN_FILE,
    METRICS_FILE,
    "checkpoints",
    "samples",
    BEST_FOLDER,
    TENSORBOARD_FOLDER,
    WANDB_FOLDER,
)


class RunFolder:
    """The output folder of a training run.

    path: the folder (created when the run starts).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def run_file(self) -> Path:
        return self.path / RUN_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    @property
    def best(self) -> Path:
        return self.path / BEST_FOLDER

    def check_new(self, overwrite: bool) -> None:
        """Raise unless a new run may start here (read-only)."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"{self.path} is a file; give a folder for the run's output")
        if not self.path.exists() or all(p.name == LOCK_FILE for p in self.path.iterdir()):
            return
        if not self.run_file.is_file():
            raise ConfigError(
                f"{self.path} exists and is not empty, and it is not a training run; "
                "choose a new folder for --out"
            )
        if not overwrite:
            raise ConfigError(
                f"{self.path} already holds a training run; add --resume to continue it, "
                "--overwrite to delete it and start again, or choose another --out"
            )

    def read_spec(self) -> RunSpec:
        """The spec of the run to resume (read-only)."""
        if not self.run_file.is_file():
            raise MissingFileError(
                f"nothing to resume in {self.path}: it has no {RUN_FILE}; drop --resume to "
                "start a new run there"
            )
        try:
            return RunSpec.from_dict(json.loads(self.run_file.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
            raise ConfigError(
                f"{self.run_file} is unreadable ({error!r}); the run cannot be resumed. Start "
                "a new run in another folder"
            ) from None

    def start(self, spec: RunSpec, overwrite: bool) -> None:
        """Create the folder (clearing a previous run with ``overwrite``) and write run.json."""
        if overwrite:
            for name in RUN_ENTRIES:
                entry = self.path / name
                if entry.is_dir():
                    shutil.rmtree(entry)
                elif entry.exists():
                    entry.unlink()
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.run_file, spec.to_dict())

    def checkpoint_steps(self) -> list[Path]:
        """The step folders holding a checkpoint, oldest first."""
        return run_checkpoints(self.path)

    def record_at(self, step: int, key: str) -> dict[str, Any] | None:
        """The last metrics record of ``step`` that holds ``key``, or None."""
        if not self.metrics_file.is_file():
            return None
        records = read_metrics(self.metrics_file)
        return next((r for r in reversed(records) if r["step"] == step and key in r), None)

    def truncate_metrics(self, step: int) -> None:
        """Drop metrics lines logged after ``step`` (a resumed run logs them again)."""
        if not self.metrics_file.is_file():
            return
        lines = self.metrics_file.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if _line_step(line) <= step]
        if len(kept) != len(lines):
            atomic_write_text(self.metrics_file, "".join(kept))


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The objects of a metrics.jsonl file that have a numeric ``step``, in file order; a
    line that does not parse (torn by a crash while it was written) is skipped."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and is_finite_number(record.get("step")):
            records.append(record)
    return records


def is_finite_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _line_step(line: str) -> float:
    try:
        return float(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return float("inf")  # a torn last line: drop it


class MetricsLog:
    """Appends metrics to ``metrics.jsonl`` and passes their numbers to the trackers.

    run:      the run folder.
    trackers: TensorBoard, Weights & Biases (:func:`diffuse.train.tracking.open_trackers`).
    """

    def __init__(self, run: RunFolder, trackers: list[Tracker]) -> None:
        self.file = run.metrics_file.open("a", encoding="utf-8")
        self.trackers = trackers

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        values = {
            key: value
            for key, value in record.items()
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool)
        }
        for tracker in self.trackers:
            tracker.log(record["step"], values)

    def close(self) -> None:
        self.file.close()
        for tracker in self.trackers:
            tracker.close()
