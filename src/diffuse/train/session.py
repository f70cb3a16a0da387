"""Start or resume a training run: the functions behind ``diffuse train``.

``train(spec, out)`` starts a run in the folder ``out``; ``resume(out)`` continues the run
there from its latest readable checkpoint with the settings saved in ``out/run.json``.
Both work on one process or under ``torchrun`` (every process calls them; process 0
writes, holding the run folder's lock). Every input is checked before anything is
written, so a bad input leaves an existing run as it was.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from diffuse.data import ImageDataset
from diffuse.errors import ConfigError, CorruptCheckpointError, DiffuseWarning
from diffuse.train.distributed import ProcessGroup, setup, teardown
from diffuse.train.lock import check_run_unlocked, hold_run_lock
from diffuse.train.run import RunFolder
from diffuse.train.spec import RunSpec, split_key
from diffuse.train.trainer import Trainer, TrainResult
from diffuse.train.training_data import check_compatible, load_training_data, load_validation_data

# Settings a resumed run may change: they do not alter what the steps compute (compiled
# steps only round differently). FID while training can be switched on or measured more
# or less often.
RESUMABLE_CHANGES = frozenset(
    {
        "train.eval_every",
        "train.steps",
        "train.compile",
        "train.log_every",
        "train.tensorboard",
        "train.wandb_project",
        "train.checkpoint_every",
        "train.keep_checkpoints",
        "train.sample_every",
        "train.sample_columns",
        "train.sample_sampler",
        "train.sample_steps",
        "train.cfg_weight",
        "train.workers",
    }
)
# What a FID measurement is: a resumed run may change it only while it has measured
# nothing, so that every FID it compares with its best was measured the same way.
MEASUREMENT_SETTINGS = frozenset(
    {
        "train.eval_samples",
        "train.eval_sampler",
        "train.eval_steps",
        "train.eval_cfg",
        "train.eval_reference",
    }
)


def train(
    spec: RunSpec,
    out: str | Path,
    *,
    overwrite: bool = False,
    dataset: ImageDataset | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    stop_at: int | None = None,
) -> TrainResult:
    """Train ``spec`` from scratch, writing the run into ``out``.

    spec:      what to train (see :func:`diffuse.train.spec_from_preset`).
    out:       the run folder; it must be new or empty, or a run to replace (``overwrite``).
    overwrite: delete the run already in ``out`` (its checkpoints too) and start again.
    dataset:   the training images, instead of loading ``spec.data``.
    device:    "cpu", "cuda", ... (None: CUDA when available).
    progress:  show progress bars (the images decoded, the steps trained).
    stop_at:   stop after this step with a checkpoint (the schedule still spans
               ``spec.train.steps``); :func:`resume` continues as if it had not stopped.
    """
    run = RunFolder(out)
    check_run_unlocked(run.path)
    run.check_new(overwrite)
    group = setup(device)
    try:
        trainer = _trainer(spec, run, dataset, group, progress)
        with _run_lock(run, group):
            if group.is_main:
                run.check_new(overwrite)  # again: a run may have started since
            group.barrier()
            if group.is_main:
                run.start(spec, overwrite)
            group.barrier()
            return trainer.fit(stop_at)
    finally:
        teardown(group)


def resume(
    out: str | Path,
    *,
    changes: Mapping[str, Any] | None = None,
    data_dir: str | None = None,
    dataset: ImageDataset | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    stop_at: int | None = None,
) -> TrainResult:
    """Continue the run in ``out`` from its latest checkpoint (or from the start if it has
    none), with the settings of ``out/run.json``. A damaged latest checkpoint (a file
    missing, truncated or unreadable) is passed over for the one before it, with a
    :class:`~diffuse.errors.DiffuseWarning` naming the file.

    changes:  new values for the settings in ``RESUMABLE_CHANGES`` (e.g. a larger
              ``train.steps``), and for those of ``MEASUREMENT_SETTINGS`` while the run
              has measured no FID; any other change is refused.
    data_dir: where to look for a named data set now (the run's data set is the same).
    Other arguments as for :func:`train`.
    """
    run = RunFolder(out)
    spec = run.read_spec()
    check_run_unlocked(run.path)
    changes = dict(changes or {})
    refused = sorted(set(changes) - RESUMABLE_CHANGES - MEASUREMENT_SETTINGS)
    for key in refused:
        split_key(key)
    if refused:
        raise ConfigError(
            f"a resumed run keeps its settings; {', '.join(refused)} cannot change (only "
            f"{', '.join(sorted(RESUMABLE_CHANGES))} can). Start a new run to change them"
        )
    spec = spec.with_overrides(changes)
    if data_dir is not None:
        spec = replace(spec, data=replace(spec.data, data_dir=str(data_dir)))
    group = setup(device)
    try:
        trainer = _trainer(spec, run, dataset, group, progress)
        with _run_lock(run, group):
            _resume_from_latest_readable(trainer, run.checkpoint_steps(), group.is_main)
            _check_measurements_kept(changes, trainer)
            group.barrier()
            if group.is_main:
                if changes or data_dir is not None:
                    run.start(spec, overwrite=False)
                run.truncate_metrics(trainer.state.progress.step)
            group.barrier()
            return trainer.fit(stop_at)
    finally:
        teardown(group)


def _run_lock(run: RunFolder, group: ProcessGroup) -> contextlib.AbstractContextManager:
    """The run folder's lock, held by the process that writes (process 0)."""
    return hold_run_lock(run.path) if group.is_main else contextlib.nullcontext()


def _check_measurements_kept(changes: Mapping[str, Any], trainer: Trainer) -> None:
    """Refuse a change of what a FID measurement is once the run has measured one."""
    redefined = sorted(set(changes) & MEASUREMENT_SETTINGS)
    history = trainer.state.fid
    if redefined and history.last_step is not None:
        raise ConfigError(
            f"{', '.join(redefined)} cannot change: the run has measured FID (best "
            f"{history.best_fid:.4g} at step {history.best_step}) with its settings, and its "
            "next measurements compare with those. Start a new run to measure differently"
        )


def _resume_from_latest_readable(trainer: Trainer, checkpoints: list[Path], warn: bool) -> None:
    """Resume from the latest of ``checkpoints`` (oldest first) that reads: a damaged one
    is named (a warning when ``warn``) and the one before it tried. No checkpoint at all
    leaves the run at its start."""
    for index in reversed(range(len(checkpoints))):
        try:
            trainer.resume(checkpoints[index])
            return
        except CorruptCheckpointError as error:
            if index == 0:
                raise CorruptCheckpointError(
                    f"{error}; no earlier checkpoint to resume from (move "
                    f"{checkpoints[0]} away to train the run again from step 0)"
                ) from None
            if warn:
                message = f"{error}; resuming from {checkpoints[index - 1]} instead"
                warnings.warn(message, DiffuseWarning, stacklevel=2)


def _trainer(spec, run, dataset, group, progress) -> Trainer:
    """The trainer of ``spec``; a classifier is evaluated on the held-out split at the end."""
    if dataset is None:
        report = print if group.is_main else None
        dataset = load_training_data(spec, progress=progress and group.is_main, report=report)
    else:
        check_compatible(spec, dataset)
    validation = None
    if spec.task == "classifier" and dataset.split == "train" and group.is_main:
        validation = load_validation_data(spec)
    return Trainer(spec, dataset, run, group, progress, validation)
