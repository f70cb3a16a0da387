"""Where training metrics go besides ``metrics.jsonl``: TensorBoard and Weights & Biases.

``RUN/metrics.jsonl`` is always written (``diffuse plot RUN`` draws it). Two optional
trackers receive the same numbers, keyed by the training step:

- TensorBoard, ``train.tensorboard``: 'auto' (the default) writes ``RUN/tensorboard/``
  when the ``tensorboard`` package is installed (``pip install 'diffuse[tensorboard]'``),
  'on' requires it, 'off' never writes it. View with ``tensorboard --logdir RUN``.
- Weights & Biases, ``train.wandb_project``: every logged line also goes to a W&B run in
  that project, named after the run folder, with the run's settings as its config and
  its local files under ``RUN/wandb/``. Needs ``pip install wandb`` (then ``wandb login``,
  or ``WANDB_MODE=offline``). A resumed training starts a new W&B run from its step on.

:func:`check_trackers` raises before anything is written when a tracker asked for is not
installed; :func:`open_trackers` starts those of a run. Only process 0 tracks.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol

from diffuse.errors import ConfigError
from diffuse.train.train_config import TrainConfig

TENSORBOARD_FOLDER = "tensorboard"
WANDB_FOLDER = "wandb"


class Tracker(Protocol):
    """Receives the numbers of each metrics line."""

    def log(self, step: int, values: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def _summary_writer():
    """TensorBoard's ``SummaryWriter`` class, or None when tensorboard is not installed."""
    try:
        return importlib.import_module("torch.utils.tensorboard").SummaryWriter
    except ImportError:
        return None


def _wandb():
    """The ``wandb`` module, or None when it is not installed."""
    try:
        return importlib.import_module("wandb")
    except ImportError:
        return None


def check_trackers(config: TrainConfig) -> None:
    """Raise :class:`ConfigError` naming the fix when a tracker ``config`` asks for is
    not installed."""
    if config.tensorboard == "on" and _summary_writer() is None:
        raise ConfigError(
            "train.tensorboard is 'on' but the tensorboard package is not installed: "
            "pip install 'diffuse[tensorboard]', or set train.tensorboard=auto"
        )
    if config.wandb_project is not None and _wandb() is None:
        raise ConfigError(
            f"train.wandb_project is {config.wandb_project!r} but wandb is not installed: "
            "pip install 'diffuse[wandb]', or drop the setting (train.wandb_project=null)"
        )


class TensorBoardTracker:
    """Scalars of every metric in TensorBoard event files under ``folder``."""

    def __init__(self, writer_class, folder: Path) -> None:
        self.writer = writer_class(str(folder))

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """A Weights & Biases run that receives every metrics line."""

    def __init__(self, wandb, project: str, run_path: Path, settings: dict[str, Any]) -> None:
        folder = run_path / WANDB_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=project, name=run_path.resolve().name, dir=str(folder), config=settings
        )

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


def open_trackers(config: TrainConfig, run_path: Path, settings: dict[str, Any]) -> list[Tracker]:
    """The trackers ``config`` asks for, started for the run in ``run_path`` whose full
    settings (``RunSpec.to_dict()``) are ``settings``."""
    trackers: list[Tracker] = []
    writer_class = None if config.tensorboard == "off" else _summary_writer()
    if writer_class is not None:
        trackers.append(TensorBoardTracker(writer_class, run_path / TENSORBOARD_FOLDER))
    if config.wandb_project is not None:
        try:
            trackers.append(WandbTracker(_wandb(), config.wandb_project, run_path, settings))
        except BaseException:  # W&B failed to start (not logged in, ...): close the others
            for tracker in trackers:
                tracker.close()
            raise
    return trackers
