"""A checkpoint as a diffusers pipeline folder, and such a folder as a checkpoint.

:func:`export_diffusers` writes what ``DDPMPipeline.save_pretrained`` writes, so that
``UNet2DModel.from_pretrained(OUT / "unet")`` and ``DDPMPipeline`` / ``DDIMPipeline
.from_pretrained(OUT)`` load it with no code of ours::

    OUT/model_index.json                 the pipeline: DDPMPipeline, its unet and scheduler
    OUT/unet/config.json                 UNet2DModel's arguments (diffuse.interop.unet2d)
    OUT/unet/diffusion_pytorch_model.safetensors
    OUT/scheduler/scheduler_config.json  DDPMScheduler's (diffuse.interop.scheduler)
    OUT/diffuse.json                     what diffusers has no place for (below)

A checkpoint without diffusion settings (``convert openai --reference-config``) gives
``unet/`` alone. ``diffuse.json`` keeps the checkpoint's exact network and diffusion
settings and its metadata (class names, data set): which label is the null class of
classifier-free guidance, the loss, the attention's q, k, v layout, so that
:func:`convert_diffusers_folder` restores the checkpoint exactly. Everything else is read
from diffusers' own files, so a folder made with diffusers converts too; a
``diffuse.json`` that no longer describes the folder's network is ignored, with a warning.

Both directions need the optional diffusers package (``pip install 'diffuse[diffusers]'``);
nothing else in diffuse does. Weights are read from safetensors files only, never from
pickles.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from diffuse.checkpoint import LAYOUT as CHECKPOINT_LAYOUT
from diffuse.checkpoint import load_checkpoint, read_tensors, save_checkpoint
from diffuse.diffusion import DiffusionConfig
from diffuse.errors import (
    CheckpointError,
    ConfigError,
    DiffuseError,
    DiffuseWarning,
    InexpressibleError,
    MissingFileError,
)
from diffuse.interop.scheduler import (
    diffusion_from_scheduler,
    scheduler_config,
    scheduler_problems,
)
from diffuse.interop.unet2d import (
    from_unet2d_state_dict,
    to_unet2d_state_dict,
    unet2d_config,
    unet2d_problems,
    unet_config_from_unet2d,
)
from diffuse.io import atomic_directory, atomic_write_json, read_json
from diffuse.nn import UNetConfig, build_network, config_from_dict
from diffuse.outputs import OutputLayout

SIDECAR = "diffuse.json"
FORMAT = "diffuse-diffusers-export"
VERSION = 1
UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"
LAYOUT = OutputLayout(
    "diffusers export",
    SIDECAR,
    (SIDECAR, "model_index.json", "unet", "unet/*", "scheduler", "scheduler/*"),
)
"""An exported folder (what ``overwrite`` may replace)."""
INSTALL_HINT = "pip install 'diffuse[diffusers]' (or pip install 'diffusers>=0.30')"


def require_diffusers() -> ModuleType:
    """The diffusers package; :class:`ConfigError` saying how to install it if missing."""
    try:
        return importlib.import_module("diffusers")
    except ImportError:
        raise ConfigError(
            f"the diffusers bridge needs the diffusers package, which is not installed: {INSTALL_HINT}"
        ) from None


def export_diffusers(
    checkpoint: str | Path, output: str | Path, *, weights: str = "auto", overwrite: bool = False
) -> Path:
    """Write the checkpoint ``checkpoint`` as the diffusers folder ``output`` (see the module).

    checkpoint: a checkpoint folder or a training run's folder (its latest checkpoint).
    output:     the folder to write, atomically; untouched on any error.
    weights:    "auto" (the EMA weights of the largest rate, else the raw ones), "model"
                or "ema_<rate>".
    overwrite:  replace an earlier export at ``output`` (never a folder holding anything else).

    Raises :class:`InexpressibleError` naming everything of the network and the diffusion
    settings that diffusers cannot express, before anything is written.
    """
    diffusers = require_diffusers()
    LAYOUT.check(output, overwrite)  # before reading the checkpoint
    loaded = load_checkpoint(checkpoint, weights=weights)
    config, diffusion = loaded.model.config, loaded.diffusion
    problems = unet2d_problems(config)
    if diffusion is not None:
        problems += scheduler_problems(diffusion)
    if problems:
        raise InexpressibleError("diffusers", problems, f"nothing was written to {output}")
    with torch.device("meta"):
        unet = diffusers.UNet2DModel(**unet2d_config(config))
    unet.load_state_dict(to_unet2d_state_dict(loaded.model), strict=True, assign=True)
    sidecar = {
        "format": FORMAT,
        "version": VERSION,
        "model": config.to_dict(),
        "diffusion": None if diffusion is None else diffusion.to_dict(),
        "metadata": loaded.metadata,
        "exported_from": loaded.record(),
    }
    with atomic_directory(output, LAYOUT, overwrite=overwrite, nested=True) as tmp:
        if diffusion is None:
            unet.save_pretrained(tmp / "unet", safe_serialization=True)
        else:
            scheduler = diffusers.DDPMScheduler(**scheduler_config(diffusion))
            pipeline = diffusers.DDPMPipeline(unet=unet, scheduler=scheduler)
            pipeline.save_pretrained(tmp, safe_serialization=True)
        atomic_write_json(tmp / SIDECAR, sidecar)
    return Path(output)


def convert_diffusers_folder(
    source: str | Path, output: str | Path, *, overwrite: bool = False
) -> Path:
    """Convert the diffusers folder ``source`` into our checkpoint folder ``output``.

    source:    a pipeline folder (``unet/`` with a ``UNet2DModel``, and ``scheduler/``, whose
               settings become the diffusion settings; without it there are none), or a
               ``UNet2DModel`` folder itself.
    output:    the checkpoint folder to write (atomically; untouched on any error).
    overwrite: replace an existing checkpoint folder (never a folder holding anything else).

    Raises :class:`InexpressibleError` naming every setting of the network and the
    scheduler that diffuse cannot reproduce, and :class:`CheckpointError` when the weights
    do not fill the network exactly.
    """
    diffusers = require_diffusers()
    CHECKPOINT_LAYOUT.check(output, overwrite)  # before reading the source
    source = Path(source)
    unet_dir = _unet_folder(source)
    arguments = _arguments(diffusers.UNet2DModel, unet_dir / "config.json")
    problems: list[str] = []
    config = diffusion = None
    try:
        config = unet_config_from_unet2d(arguments)
    except InexpressibleError as error:
        problems += error.problems
    scheduler_file = source / "scheduler" / "scheduler_config.json"
    if scheduler_file.is_file():
        try:
            diffusion = diffusion_from_scheduler(
                _arguments(_scheduler_class(diffusers, scheduler_file), scheduler_file),
                learns_variance=arguments["out_channels"] == 2 * arguments["in_channels"],
            )
        except InexpressibleError as error:
            problems += error.problems
    if problems:
        raise InexpressibleError("diffuse", problems, f"nothing was written to {output}")
    config, diffusion, metadata = _with_sidecar(source / SIDECAR, config, diffusion)
    with torch.device("meta"):
        model = build_network(config)
    state = _read_unet_weights(unet_dir)
    model.load_state_dict(from_unet2d_state_dict(model, state), assign=True)
    model.to(memory_format=torch.channels_last)
    metadata = {**metadata, "converted_from": source.resolve().name, "source_format": "diffusers"}
    return save_checkpoint(
        output, model, diffusion=diffusion, metadata=metadata, overwrite=overwrite
    )


def _unet_folder(source: Path) -> Path:
    """The folder of the ``UNet2DModel``: ``source/unet``, or ``source`` itself."""
    if not source.is_dir():
        raise MissingFileError(f"{source} is not a folder; give a diffusers pipeline folder")
    for folder in (source / "unet", source):
        if (folder / "config.json").is_file():
            return folder
    raise MissingFileError(
        f"{source} holds no unet/config.json: give a diffusers pipeline folder (with unet/ "
        "and scheduler/, as save_pretrained writes it) or a UNet2DModel folder"
    )


def _read_json(file: Path) -> dict[str, Any]:
    data = read_json(file, ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"{file} does not hold a JSON object")
    return data


def _arguments(cls: type, file: Path) -> dict[str, Any]:
    """Every constructor argument of ``cls`` as the configuration ``file`` gives it: its
    values over the constructor's defaults, as diffusers' ``from_config`` takes them."""
    data = _read_json(file)
    name = data.get("_class_name", cls.__name__)
    if name != cls.__name__:
        raise ConfigError(f"{file} describes a {name}, not a {cls.__name__}")
    parameters = inspect.signature(cls.__init__).parameters
    defaults = {
        key: p.default for key, p in parameters.items() if p.default is not inspect.Parameter.empty
    }
    return defaults | {key: value for key, value in data.items() if key in parameters}


def _scheduler_class(diffusers: ModuleType, file: Path) -> type:
    """The diffusers scheduler class ``file`` names (DDPMScheduler, DDIMScheduler, ...)."""
    name = _read_json(file).get("_class_name")
    cls = getattr(diffusers, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        raise ConfigError(f"{file} names {name!r}, which is not a diffusers scheduler")
    wanted = {"num_train_timesteps", "beta_schedule", "prediction_type"}
    if not wanted <= set(inspect.signature(cls.__init__).parameters):
        raise ConfigError(
            f"{file}: a {name} has no discrete beta schedule diffuse can read "
            "(DDPMScheduler and DDIMScheduler have one)"
        )
    return cls


def _read_unet_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The ``UNet2DModel`` weights of ``folder``: one safetensors file, or the shards its
    index names. Pickled ``.bin`` weights are refused (they could execute code)."""
    index = folder / f"{UNET_WEIGHTS}.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map", {})
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            state.update(read_tensors(folder / shard))
        return state
    if not (folder / UNET_WEIGHTS).is_file() and any(folder.glob("*.bin")):
        raise CheckpointError(
            f"{folder} holds pickled .bin weights only; diffuse reads safetensors: resave them "
            "with UNet2DModel.from_pretrained(...).save_pretrained(..., safe_serialization=True)"
        )
    return read_tensors(folder / UNET_WEIGHTS)


def _with_sidecar(
    file: Path, config: UNetConfig, diffusion: DiffusionConfig | None
) -> tuple[UNetConfig, DiffusionConfig | None, dict[str, Any]]:
    """The settings and metadata of the checkpoint a folder was exported from, when its
    ``diffuse.json`` describes the same network and process as the diffusers files (which
    say less: no null class, no loss, one q, k, v layout); else ``config`` and
    ``diffusion`` as read, with a warning when a ``diffuse.json`` was there."""
    if not file.is_file():
        return config, diffusion, {}
    try:
        data = _read_json(file)
        if data.get("format") != FORMAT:
            raise ConfigError(f"it is not a {FORMAT} file")
        saved = config_from_dict(data["model"])
        same_network = saved.kind == "unet" and unet2d_config(saved) == unet2d_config(config)
        saved_diffusion = None
        if data["diffusion"] is not None:
            saved_diffusion = DiffusionConfig.from_dict(data["diffusion"])
    except (DiffuseError, KeyError, TypeError) as error:
        warnings.warn(f"{file} is ignored: {error}", DiffuseWarning, stacklevel=3)
        return config, diffusion, {}
    if not same_network:
        warnings.warn(
            f"{file} describes another network than the folder's UNet2DModel (changed since "
            "the export?); it is ignored and the settings come from diffusers' files",
            DiffuseWarning,
            stacklevel=3,
        )
        return config, diffusion, {}
    if (
        diffusion is not None
        and saved_diffusion is not None
        and dataclasses.replace(saved_diffusion, loss=diffusion.loss) == diffusion
    ):
        diffusion = saved_diffusion  # the same process, with the loss it was trained with
    return saved, diffusion, dict(data.get("metadata") or {})
