"""A training run's curves: loss, learning rate, speed and FID against the step.

``RUN/metrics.jsonl`` holds one JSON object per logged step (:class:`~diffuse.train.run.
MetricsLog`): ``step``, ``loss``, ``lr``, ``images_per_s``, ... and, in runs that measure
it while training, ``fid`` (a line of its own may carry only ``step`` and ``fid``). Each
curve takes the lines that carry its key, so curves logged at different intervals share
one step axis. ``plot_run`` draws them as stacked panels into a PNG (``diffuse plot``).
"""

from __future__ import annotations

import os
from pathlib import Path

from diffuse.errors import DataError, MissingFileError
from diffuse.outputs import check_output_file
from diffuse.plots import plot_panels
from diffuse.train.run import RunFolder, is_finite_number, read_metrics

# The metrics drawn, in panel order: key in metrics.jsonl and the panel's label.
CURVES = (
    ("loss", "training loss"),
    ("lr", "learning rate"),
    ("images_per_s", "images / s"),
    ("fid", "FID"),
    ("accuracy", "accuracy"),  # a noisy classifier's runs
)
DEFAULT_FILE = "metrics.png"


def curves(records: list[dict]) -> list[tuple[str, list[float], list[float]]]:
    """``(label, steps, values)`` of every metric of :data:`CURVES` that ``records``
    carry, each from the records that hold a finite number for it."""
    found = []
    for key, label in CURVES:
        points = [(r["step"], r[key]) for r in records if is_finite_number(r.get(key))]
        if points:
            found.append((label, [step for step, _ in points], [value for _, value in points]))
    return found


def plot_run(run: str | os.PathLike, out: str | os.PathLike | None = None,
             *, overwrite: bool = False) -> Path:  # fmt: skip
    """Draw the curves of the training run in the folder ``run`` into the PNG ``out``
    (default ``RUN/metrics.png``); returns its path. Everything is checked before the file
    is written: the run exists, it has logged metrics, and ``out`` is new (or
    ``overwrite``)."""
    folder = RunFolder(run)
    if not folder.run_file.is_file():
        raise MissingFileError(
            f"{run} is not a training run (it has no {folder.run_file.name}); give the "
            "--out folder of a diffuse train"
        )
    target = check_output_file(
        folder.path / DEFAULT_FILE if out is None else out, overwrite, ".png"
    )
    records = read_metrics(folder.metrics_file) if folder.metrics_file.is_file() else []
    panels = curves(records)
    if not panels:
        raise DataError(
            f"{run} has no metrics yet: {folder.metrics_file.name} gets a line every "
            "train.log_every steps; plot again once the run has trained that far"
        )
    plot_panels(target, panels, xlabel="training step", title=folder.path.resolve().name)
    return target
