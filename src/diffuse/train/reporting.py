"""What a user sees of the training loop: the progress bar and the lines of metrics.jsonl
(and of the trackers: TensorBoard, Weights & Biases).

:class:`LoopReport` takes each finished step (its loss statistics and how long it took),
keeps the bar's loss and images/s (and the last FID measured) current, and every
``log_every`` steps writes one record of the means since the last record
(:class:`Window`). Only process 0 writes.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from diffuse.train.run import MetricsLog
from diffuse.train.tracking import open_trackers

if TYPE_CHECKING:  # annotations only: the trainer imports this module
    from diffuse.train.trainer import Trainer


class Window:
    """Statistics accumulated between two lines of metrics."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.seconds = 0.0
        self.images = 0

    def add(self, summary: dict, seconds: float, images: int) -> None:
        for key, value in summary.items():
            if key != "stop" and math.isfinite(value):
                self.sums[key] = self.sums.get(key, 0.0) + value
                self.counts[key] = self.counts.get(key, 0) + 1
        self.seconds += seconds
        self.images += images

    def rate(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    def record(self, step: int, trainer: Trainer) -> dict:
        progress = trainer.state.progress
        means = {key: self.sums[key] / self.counts[key] for key in sorted(self.sums)}
        return {
            "step": step,
            **means,
            "images_per_s": self.rate(),
            "epoch": trainer.order.epoch(step),
            "skipped": progress.skipped,
            "precision": trainer.precision.name,
            "time": time.time(),
        }


class LoopReport:
    """The progress bar and the metrics log of one call of :meth:`Trainer.fit`.

    ``seconds`` is the time spent in training steps only (not checkpoints or previews),
    so that the images/s it gives measure training.
    """

    def __init__(self, trainer: Trainer) -> None:
        config = trainer.config
        self.trainer = trainer
        self.log = None
        if trainer.group.is_main:
            # A session with no step to train (resuming a finished run) starts no
            # tracker: no new TensorBoard event file, no new W&B run.
            trackers = []
            if trainer.state.progress.step < config.steps:
                trackers = open_trackers(config, trainer.run.path, trainer.spec.to_dict())
            self.log = MetricsLog(trainer.run, trackers)
        self.bar = tqdm(
            total=config.steps,
            initial=trainer.state.progress.step,
            disable=not trainer.progress_bar,
            unit="step",
        )
        self.window = Window()
        self.seconds = 0.0
        self.shown: dict[str, str] = {}  # the bar's postfix

    def step_done(self, summary: dict[str, float], seconds: float) -> None:
        """Count the step just taken; write a record when one is due."""
        config, step = self.trainer.config, self.trainer.state.progress.step
        self.seconds += seconds
        self.window.add(summary, seconds, config.batch_size)
        self.bar.update(1)
        if math.isfinite(summary["loss"]):
            self.shown.update(loss=f"{summary['loss']:.4f}", img_s=f"{self.window.rate():.0f}")
            self.bar.set_postfix(self.shown)
        if self.log and (step % config.log_every == 0 or step == config.steps):
            self.log.write(self.window.record(step, self.trainer))
            self.window = Window()

    def measured(self, record: dict) -> None:
        """A FID measurement (:mod:`diffuse.train.fid_tracking`): logged, and shown on the
        bar until the next one."""
        self.shown["fid"] = f"{record['fid']:.2f}"
        self.bar.set_postfix(self.shown)
        self.write(record)

    def write(self, record: dict) -> None:
        """One record outside the step rhythm (process 0 only)."""
        if self.log:
            self.log.write(record)

    def close(self) -> None:
        self.bar.close()
        if self.log:
            self.log.close()
