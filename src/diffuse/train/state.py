"""A training checkpoint: the checkpoint format of :mod:`diffuse.checkpoint` plus the
state that resuming needs, written together in one atomic folder.

Besides ``config.json``, ``model.safetensors`` and ``ema_<rate>.safetensors`` a training
checkpoint holds:

    optimizer.safetensors   AdamW's moments and step per parameter, keyed
                            ``<parameter name>/<state name>``
    sampler.safetensors     the timestep sampler's loss history (loss-aware sampler only)
    trainer.json            step, optimizer updates, skipped steps, AdamW's hyperparameters,
                            the gradient scaler, the seed, the data set's size and, once FID
                            has been measured while training, its history (FidHistory)

Random state needs no file: every draw of step s is seeded by (seed, s) (see
:mod:`diffuse.train.randomness`). Everything is JSON or safetensors, so resuming never
unpickles anything.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffuse.checkpoint import LAYOUT as CHECKPOINT_LAYOUT
from diffuse.checkpoint import (
    MODEL_FILE,
    check_state_dict,
    ema_file,
    read_checkpoint_config,
    read_format_json,
    read_tensors,
    run_checkpoints,
    write_checkpoint_files,
    write_tensors,
)
from diffuse.errors import CheckpointError
from diffuse.io import ASIDE_INFIX, atomic_directory, atomic_write_json

TRAINER_FILE = "trainer.json"
OPTIMIZER_FILE = "optimizer.safetensors"
SAMPLER_FILE = "sampler.safetensors"
TRAINER_FORMAT = "diffuse-trainer-state"
FID_KEY = "fid_history"
LAYOUT = replace(
    CHECKPOINT_LAYOUT,
    what="training checkpoint",
    entries=(*CHECKPOINT_LAYOUT.entries, TRAINER_FILE, OPTIMIZER_FILE, SAMPLER_FILE),
)
"""A training checkpoint folder: what saving the same step again may replace."""


@dataclass
class Progress:
    """Counters of a run, saved in ``trainer.json``.

    step:             training steps done (batches consumed), skipped ones included: the
                      data order, the random draws and the learning rate follow it, as
                      guided-diffusion's step counter does.
    updates:          optimizer updates done (steps minus skipped ones): the EMA warm-up's n.
    skipped:          steps without an update: their loss was not finite, or (fp16) the
                      gradient scaler found their gradients overflowing and skipped them.
    consecutive_bad:  non-finite losses in a row up to now (scaler skips do not count: the
                      scaler recovers from them by lowering its scale).
    """

    step: int = 0
    updates: int = 0
    skipped: int = 0
    consecutive_bad: int = 0


@dataclass
class FidHistory:
    """What FID while training (:mod:`diffuse.train.fid_tracking`) has measured: the
    lowest FID and the step it was measured at, and the last step measured (all None
    before the first measurement). Saved in ``trainer.json``, so that a resumed run
    compares its measurements with the best one before it, and measures the step it
    resumes at when a stop came before that step's measurement.
    """

    best_fid: float | None = None
    best_step: int | None = None
    last_step: int | None = None

    def add(self, fid: float, step: int) -> bool:
        """Note the measurement ``fid`` of ``step``; whether it is the lowest so far."""
        self.last_step = int(step)
        if self.best_fid is not None and not fid < self.best_fid:
            return False
        self.best_fid, self.best_step = float(fid), int(step)
        return True


@dataclass
class TrainingState:
    """The objects a checkpoint saves and restores.

    model:      the network (unwrapped).
    ema:        its :class:`~diffuse.train.ema.EMA`.
    optimizer:  the AdamW optimizer over ``model``'s parameters.
    sampler:    the timestep sampler.
    precision:  the :class:`~diffuse.train.precision.Precision` (gradient scaler).
    progress:   the counters.
    fid:        what FID while training has measured.
    """

    model: nn.Module
    ema: Any
    optimizer: torch.optim.Optimizer
    sampler: Any
    precision: Any
    progress: Progress
    fid: FidHistory = field(default_factory=FidHistory)


def step_folder(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:08d}"


def save_training_checkpoint(
    folder: Path,
    state: TrainingState,
    *,
    diffusion,
    metadata: dict[str, Any],
    extra: dict[str, Any],
) -> Path:
    """Write ``state`` as the checkpoint folder ``folder``, atomically (replacing it).

    diffusion: the DiffusionConfig stored with the model.
    metadata:  the checkpoint's free metadata (preset, data set, classes, settings).
    extra:     more entries for ``trainer.json`` (seed, data set size).
    """
    ema = {rate: state.ema.state(rate) for rate in state.ema.rates}
    with atomic_directory(folder, LAYOUT, overwrite=True) as tmp:
        write_checkpoint_files(
            tmp,
            state.model,
            diffusion=diffusion,
            ema=ema,
            step=state.progress.step,
            metadata=metadata,
        )
        write_tensors(tmp / OPTIMIZER_FILE, _optimizer_tensors(state.model, state.optimizer))
        sampler_state = state.sampler.state_dict()
        if sampler_state:
            write_tensors(tmp / SAMPLER_FILE, {k: v.contiguous() for k, v in sampler_state.items()})
        groups = [
            {k: v for k, v in group.items() if k != "params"}
            for group in state.optimizer.state_dict()["param_groups"]
        ]
        fid = {FID_KEY: asdict(state.fid)} if state.fid.last_step is not None else {}
        atomic_write_json(
            tmp / TRAINER_FILE,
            {
                "format": TRAINER_FORMAT,
                "version": 1,
                **asdict(state.progress),
                "param_groups": groups,
                "scaler": state.precision.state_dict(),
                **fid,
                **extra,
            },
        )
    return folder


def load_training_checkpoint(folder: Path, state: TrainingState) -> dict[str, Any]:
    """Restore ``state`` in place from the checkpoint ``folder``; return its ``trainer.json``.

    Every file is read before anything is restored, so when one is missing, corrupt
    (:class:`~diffuse.errors.CorruptCheckpointError`) or of another architecture
    (:class:`CheckpointError`) the error names it and ``state`` is untouched: an earlier
    checkpoint can be loaded into it instead.
    """
    config = read_checkpoint_config(folder)
    expected = state.model.config.to_dict()
    if config["model"] != expected:
        changed = sorted(k for k in expected if config["model"].get(k) != expected[k])
        raise CheckpointError(
            f"{folder} holds a different network (settings {changed} differ from the run's); "
            "resume with the run's own settings"
        )
    trainer = read_format_json(folder / TRAINER_FILE, TRAINER_FORMAT)
    absent = sorted(set(state.ema.rates) - set(config["ema_rates"]))
    if absent:
        raise CheckpointError(
            f"{folder} holds no EMA weights at the rates {absent} (only at "
            f"{config['ema_rates']}); resume with the run's own train.ema_rates"
        )
    network = state.model.state_dict()
    model = _fitting_weights(folder / MODEL_FILE, network)
    ema = {rate: _fitting_weights(folder / ema_file(rate), network) for rate in state.ema.rates}
    optimizer = _optimizer_state(state.model, state.optimizer, folder / OPTIMIZER_FILE, trainer)
    sampler = read_tensors(folder / SAMPLER_FILE) if state.sampler.state_dict() else None
    try:
        progress = Progress(**{k: int(trainer[k]) for k in asdict(Progress())})
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{folder / TRAINER_FILE} lacks its counters ({error})") from None
    fid = _fid_history(trainer.get(FID_KEY), folder / TRAINER_FILE)
    state.model.load_state_dict(model)
    state.ema.load(ema)
    state.optimizer.load_state_dict(optimizer)
    if sampler is not None:
        state.sampler.load_state_dict(sampler)
    state.precision.load_state_dict(trainer.get("scaler", {}))
    state.progress = progress
    state.fid = fid
    return trainer


def _fitting_weights(file: Path, network: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of the weights ``file``, checked to fit the state dict ``network``."""
    tensors = read_tensors(file)
    check_state_dict(tensors, network, str(file))
    return tensors


def _fid_history(saved: Any, file: Path) -> FidHistory:
    """The :class:`FidHistory` of a trainer.json entry (empty in a run that never measured)."""
    if saved is None:
        return FidHistory()
    try:
        history = FidHistory(
            float(saved["best_fid"]), int(saved["best_step"]), int(saved["last_step"])
        )
    except (KeyError, TypeError, ValueError):
        history = FidHistory(math.nan, -1, -1)
    if not (math.isfinite(history.best_fid) and min(history.best_step, history.last_step) >= 0):
        raise CheckpointError(
            f"{file}: {FID_KEY} {saved!r} is not a best FID, its step and the last step measured"
        )
    return history


def prune_checkpoints(run_dir: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` latest complete checkpoints (:func:`run_checkpoints`),
    step folders without a ``config.json`` (a deletion killed halfway) and stale temporary
    folders; returns what was deleted."""
    folder = run_dir / "checkpoints"
    complete = run_checkpoints(run_dir)
    broken = [p for p in folder.glob("step-*") if p.is_dir() and p not in complete]
    stale = [p for p in folder.glob(".step-*") if p.is_dir()]
    removed = complete[: max(len(complete) - keep, 0)] + broken + stale
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the hidden folders that an atomic write of ``folder`` killed halfway left
    beside it (``.NAME.*.tmp``, ``.NAME.old-*``); returns them. When ``folder`` itself is
    missing, because the write was killed between moving the old version aside and moving
    the new one in, the old version is put back instead of deleted."""
    stale = sorted(p for p in folder.parent.glob(f".{folder.name}.*") if p.is_dir())
    aside = [p for p in stale if p.name.startswith(f".{folder.name}{ASIDE_INFIX}")]
    if aside and not folder.exists():
        aside[-1].rename(folder)
        stale.remove(aside[-1])
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def _optimizer_tensors(
    model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, torch.Tensor]:
    names = {id(p): name for name, p in model.named_parameters()}
    tensors = {}
    for parameter, values in optimizer.state.items():
        for key, value in values.items():
            tensors[f"{names[id(parameter)]}/{key}"] = (
                torch.as_tensor(value).detach().cpu().contiguous()
            )
    return tensors


def _laid_out_like(value: torch.Tensor, parameter: torch.Tensor) -> torch.Tensor:
    """A moment tensor with its parameter's memory layout (channels_last for convolution
    weights): saved contiguous, it must come back strided as its parameter, since the fused
    AdamW kernel walks a parameter and its moments in memory order."""
    if value.shape != parameter.shape:  # the step count, a scalar
        return value
    return torch.empty_like(parameter, dtype=value.dtype).copy_(value)


def _optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, file: Path, trainer: dict[str, Any]
) -> dict[str, Any]:
    """The optimizer's ``state_dict`` rebuilt from the safetensors file and trainer.json."""
    tensors = read_tensors(file)
    order = {id(p): i for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, parameter in model.named_parameters():
        entries = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.split("/", 1)[0] == name}
        for key, value in entries.items():
            if value.dim() and value.shape != parameter.shape:
                raise CheckpointError(
                    f"{file}: {name}/{key} has shape {tuple(value.shape)}, the parameter "
                    f"{tuple(parameter.shape)}; the optimizer state belongs to another network"
                )
        if entries:
            state[order[id(parameter)]] = {
                key: _laid_out_like(value, parameter) for key, value in entries.items()
            }
    groups = trainer.get("param_groups")
    current = optimizer.state_dict()["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(current):
        raise CheckpointError(f"{file.parent / TRAINER_FILE} lacks the optimizer's settings")
    restored = []
    for saved, group in zip(groups, current, strict=True):
        merged = {**saved, "params": group["params"]}
        if "betas" in merged:
            merged["betas"] = tuple(merged["betas"])
        restored.append(merged)
    return {"state": state, "param_groups": restored}
