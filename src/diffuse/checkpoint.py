"""Self-describing checkpoints: a folder that loads with one call, no flags, no pickles.

Layout of a checkpoint folder::

    config.json              {"format": "diffuse-checkpoint", "version": 1,
                              "model": {"kind": ..., architecture settings},
                              "diffusion": DiffusionConfig settings or null,
                              "step": training step or null,
                              "ema_rates": [0.9999, ...],
                              "metadata": {free JSON: data set, class names, preset, ...}}
    model.safetensors        the network's weights
    ema_<rate>.safetensors   the exponential moving average of the weights, one per rate

A training run keeps its checkpoints as ``RUN/checkpoints/step-<8-digit step>/`` (the
trainer adds its optimizer and random states there); :func:`resolve_checkpoint` accepts a
run folder and takes its latest checkpoint. Writes are atomic (:mod:`diffuse.io`); loading
reads JSON and safetensors only, so it never executes code from the file. A file that is
missing, truncated or unreadable is named (:class:`~diffuse.errors.CorruptCheckpointError`),
with the run's checkpoint before it when a run folder was given.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from diffuse.diffusion.diffusion_config import DiffusionConfig
from diffuse.errors import (
    CheckpointError,
    ConfigError,
    CorruptCheckpointError,
    DiffuseError,
    MissingFileError,
    is_int_at_least,
)
from diffuse.io import atomic_directory, atomic_write_json, read_json
from diffuse.nn import build_network, config_from_dict
from diffuse.outputs import OutputLayout

FORMAT = "diffuse-checkpoint"
VERSION = 1
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
STEP_FOLDER = re.compile(r"step-\d{8}")
LAYOUT = OutputLayout(
    "checkpoint folder", CONFIG_FILE, (CONFIG_FILE, MODEL_FILE, "ema_*.safetensors")
)
"""A checkpoint folder as :func:`save_checkpoint` writes it (what ``overwrite`` may replace)."""


def ema_file(rate: float) -> str:
    """File name of the EMA weights with decay ``rate`` (``ema_0.9999.safetensors``)."""
    return f"ema_{rate}.safetensors"


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint read back by :func:`load_checkpoint`.

    model:     the network, built from the configuration, weights loaded, in eval mode.
    diffusion: the diffusion settings it was trained with, or None.
    config:    the whole ``config.json``.
    step:      the training step, or None.
    metadata:  free metadata (data set, class names, preset, ...).
    path:      the checkpoint folder that was read.
    weights:   which weights the model holds: "model" or "ema_<rate>".
    weights_file: the file they were read from, e.g. ``ema_0.9999.safetensors``.
    """

    model: nn.Module
    diffusion: DiffusionConfig | None
    config: dict[str, Any]
    step: int | None
    metadata: dict[str, Any]
    path: Path
    weights: str
    weights_file: str

    def record(self) -> dict[str, Any]:
        """Which weights these are, for the files made with them (``info.json``,
        ``nll.json``): the absolute checkpoint folder (a run folder resolved to its
        latest step), the training step, the weights and their file."""
        return {
            "checkpoint": str(self.path.resolve()),
            "step": self.step,
            "weights": self.weights,
            "weights_file": self.weights_file,
        }


def write_checkpoint_files(
    folder: str | Path,
    model: nn.Module,
    *,
    diffusion: DiffusionConfig | None = None,
    ema: Mapping[float, Mapping[str, torch.Tensor]] | None = None,
    step: int | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write the checkpoint files of ``model`` into the existing ``folder``.

    For writers that assemble a folder of their own inside one atomic write (the trainer);
    everyone else calls :func:`save_checkpoint`. Every argument is checked before the first
    file is written.

    model:     one of our networks (a ``torch.compile`` or DDP wrapper is unwrapped).
    diffusion: the diffusion settings to store with it.
    ema:       EMA weights by decay rate, each a state dict with the model's keys and shapes.
    step:      the training step.
    metadata:  JSON-serialisable free metadata.
    """
    folder = Path(folder)
    model = _unwrap(model)
    if not hasattr(model, "config") or not hasattr(model.config, "to_dict"):
        raise ConfigError(f"{type(model).__name__} is not a diffuse network (no .config)")
    weights = _to_save(model.state_dict())
    ema_weights = {}
    for rate, state in (ema or {}).items():
        if not (isinstance(rate, float) and 0.0 < rate < 1.0 and math.isfinite(rate)):
            raise ConfigError(f"EMA rate {rate!r} must be a float between 0 and 1")
        check_state_dict(_to_save(state), weights, f"EMA weights at rate {rate}")
        ema_weights[rate] = _to_save(state)
    if step is not None and not is_int_at_least(step, 0):
        raise ConfigError(f"step must be a non-negative integer or None, got {step!r}")
    if diffusion is not None and not isinstance(diffusion, DiffusionConfig):
        raise ConfigError(f"diffusion must be a DiffusionConfig, got {type(diffusion).__name__}")
    config = {
        "format": FORMAT,
        "version": VERSION,
        "model": model.config.to_dict(),
        "diffusion": diffusion.to_dict() if diffusion is not None else None,
        "step": step,
        "ema_rates": sorted(ema_weights),
        "metadata": dict(metadata or {}),
    }
    try:
        json.dumps(config, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"checkpoint metadata must be plain JSON: {error}") from None
    write_tensors(folder / MODEL_FILE, weights)
    for rate, state in ema_weights.items():
        write_tensors(folder / ema_file(rate), state)
    atomic_write_json(folder / CONFIG_FILE, config)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    diffusion: DiffusionConfig | None = None,
    ema: Mapping[float, Mapping[str, torch.Tensor]] | None = None,
    step: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save ``model`` as a checkpoint folder at ``path``, atomically; returns the path.

    The folder appears complete or not at all; an existing folder is replaced only with
    ``overwrite=True``, only when it is a checkpoint folder and nothing else
    (:data:`LAYOUT`), and stays intact if anything fails. Arguments as for
    :func:`write_checkpoint_files`.
    """
    path = Path(path)
    with atomic_directory(path, LAYOUT, overwrite=overwrite) as tmp:
        write_checkpoint_files(
            tmp, model, diffusion=diffusion, ema=ema, step=step, metadata=metadata
        )
    return path


def run_checkpoints(run_dir: str | Path) -> list[Path]:
    """The checkpoint folders ``checkpoints/step-XXXXXXXX`` of a run folder that hold a
    ``config.json``, oldest first (a temporary or partly deleted folder is not one)."""
    return sorted(
        child
        for child in (Path(run_dir) / "checkpoints").glob("step-*")
        if STEP_FOLDER.fullmatch(child.name) and (child / CONFIG_FILE).is_file()
    )


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder ``path`` names: itself if it holds ``config.json``, or the
    latest ``checkpoints/step-XXXXXXXX`` of a run folder."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"checkpoint {path} does not exist")
    if (path / CONFIG_FILE).is_file():
        return path
    steps = run_checkpoints(path)
    if not steps:
        raise MissingFileError(
            f"{path} is neither a checkpoint folder (with {CONFIG_FILE}) nor a run folder "
            "with checkpoints/step-XXXXXXXX/ inside"
        )
    return steps[-1]


def read_format_json(file: Path, format_name: str) -> dict[str, Any]:
    """The JSON object in a checkpoint's ``file``, checked to say ``"format": format_name``."""
    if not file.exists():
        raise CorruptCheckpointError(f"{file} is missing; the checkpoint is incomplete")
    data = read_json(file, CorruptCheckpointError, "the checkpoint is corrupt")
    if not isinstance(data, dict) or data.get("format") != format_name:
        raise CheckpointError(f"{file} is not a {format_name} file")
    return data


def read_checkpoint_config(path: str | Path) -> dict[str, Any]:
    """The validated ``config.json`` of the checkpoint at ``path`` (see :func:`resolve_checkpoint`)."""
    folder = resolve_checkpoint(path)
    file = folder / CONFIG_FILE
    with _naming_an_earlier_checkpoint(path, folder):
        config = read_format_json(file, FORMAT)
    if config.get("version") != VERSION:
        raise CheckpointError(
            f"{file} has format version {config.get('version')!r}; this diffuse reads {VERSION}"
        )
    for key in ("model", "diffusion", "step", "ema_rates", "metadata"):
        if key not in config:
            raise CheckpointError(f"{file} lacks the entry {key!r}; the checkpoint is incomplete")
    return config


def load_checkpoint(
    path: str | Path, *, weights: str = "auto", device: str | torch.device = "cpu"
) -> LoadedCheckpoint:
    """Load the checkpoint at ``path`` (a checkpoint folder or a run folder).

    path:    checkpoint folder, or run folder whose latest checkpoint is taken.
    weights: "auto" (the EMA weights of the largest rate if any, else the raw weights),
             "model", or "ema_<rate>" as listed in ``ema_rates``.
    device:  where the model is placed.

    Every weights file of the checkpoint must be whole (a truncated one is named even when
    other weights are asked for: the checkpoint is damaged).
    """
    folder = resolve_checkpoint(path)
    with _naming_an_earlier_checkpoint(path, folder):
        return _load_checkpoint_folder(folder, weights, device)


def _load_checkpoint_folder(
    folder: Path, weights: str, device: str | torch.device
) -> LoadedCheckpoint:
    config = read_checkpoint_config(folder)
    try:
        model_config = config_from_dict(config["model"])
        diffusion = (
            DiffusionConfig.from_dict(config["diffusion"])
            if config["diffusion"] is not None
            else None
        )
    except (DiffuseError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{folder / CONFIG_FILE}: {error}") from None
    available = {"model": MODEL_FILE} | {
        f"ema_{rate}": ema_file(rate) for rate in config["ema_rates"]
    }
    if weights == "auto":
        weights = f"ema_{max(config['ema_rates'])}" if config["ema_rates"] else "model"
    if weights not in available:
        raise CheckpointError(
            f"checkpoint {folder} has no weights {weights!r}; available: {sorted(available)}"
        )
    state = read_tensors(folder / available[weights])
    for name in sorted(set(available.values()) - {available[weights]}):
        check_tensors_file(folder / name)
    with torch.device("meta"):
        model = build_network(model_config)
    check_state_dict(state, model.state_dict(), f"{folder / available[weights]}")
    model.load_state_dict(state, assign=True)
    model = model.to(device=device, memory_format=torch.channels_last).eval()
    return LoadedCheckpoint(
        model=model,
        diffusion=diffusion,
        config=config,
        step=config["step"],
        metadata=config["metadata"],
        path=folder,
        weights=weights,
        weights_file=available[weights],
    )


def load_pretrained(
    path: str | Path, *, weights: str = "auto", device: str | torch.device = "cpu"
) -> nn.Module:
    """Just the network of :func:`load_checkpoint`."""
    return load_checkpoint(path, weights=weights, device=device).model


def read_tensors(file: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; :class:`CorruptCheckpointError` if missing or corrupt."""
    with _corrupt_tensors_named(Path(file)):
        return load_file(str(file))


def check_tensors_file(file: str | Path) -> None:
    """Raise :class:`CorruptCheckpointError` unless ``file`` is a whole safetensors file: its
    header reads and its tensors fill the file exactly (reads the header only)."""
    with _corrupt_tensors_named(Path(file)), safe_open(str(file), "pt"):
        pass


def write_tensors(file: str | Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """Save ``tensors`` as the safetensors file ``file``. An I/O failure is raised as the
    :class:`OSError` it is (safetensors reports it as a SafetensorError quoting the OS
    error number), so that a full disk is recognised as one."""
    try:
        save_file(dict(tensors), str(file), metadata={"format": "pt"})
    except SafetensorError as error:
        number = re.search(r"\(os error (\d+)\)", str(error))
        if number is None:
            raise
        code = int(number.group(1))
        raise OSError(code, os.strerror(code), str(file)) from None


@contextlib.contextmanager
def _corrupt_tensors_named(file: Path) -> Iterator[None]:
    """Raise a missing ``file``, or a failure to read it in the block, as a
    :class:`CorruptCheckpointError` naming it."""
    if not file.is_file():
        raise CorruptCheckpointError(f"{file} is missing; the checkpoint is incomplete")
    try:
        yield
    except (SafetensorError, OSError, ValueError) as error:
        raise CorruptCheckpointError(
            f"{file} is not a readable safetensors file ({error}); the checkpoint is corrupt"
        ) from None


@contextlib.contextmanager
def _naming_an_earlier_checkpoint(path: str | Path, folder: Path) -> Iterator[None]:
    """When ``path`` is a run folder whose latest checkpoint ``folder`` is damaged, name the
    checkpoint before it in the error: a user gives that one to use it instead."""
    try:
        yield
    except CorruptCheckpointError as error:
        earlier = [p for p in run_checkpoints(path) if p < folder] if Path(path) != folder else []
        if not earlier:
            raise
        raise CorruptCheckpointError(
            f"{error}; to use the checkpoint before it, give {earlier[-1]}"
        ) from None


def check_state_dict(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], what: str
) -> None:
    """Raise :class:`CheckpointError` naming the keys that differ in name or shape."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{key} {tuple(state[key].shape)} vs {tuple(expected[key].shape)}"
        for key in set(state) & set(expected)
        if state[key].shape != expected[key].shape
    )
    if missing or unexpected or wrong:
        parts = [
            f"{label}: {_listing(keys)}"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shapes differ", wrong),
            )
            if keys
        ]
        raise CheckpointError(
            f"{what} belong to another architecture ({'; '.join(parts)}); "
            "load them with the configuration they were saved with"
        )


def _to_save(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous copies (safetensors stores row-major tensors only)."""
    return {key: value.detach().to("cpu").contiguous() for key, value in state.items()}


def _unwrap(model: nn.Module) -> nn.Module:
    """The network inside a ``torch.compile`` or DistributedDataParallel wrapper."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _listing(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}{f', ... ({len(keys)} in all)' if len(keys) > limit else ''}"
