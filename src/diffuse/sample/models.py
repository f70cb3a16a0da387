"""Checkpoints read for sampling, each checked for the role it is given before any weights
are loaded: a diffusion model (U-Net with diffusion settings), an upsampler, a classifier."""

from __future__ import annotations

from pathlib import Path

import torch

from diffuse.checkpoint import LoadedCheckpoint, load_checkpoint, read_checkpoint_config
from diffuse.diffusion import DiffusionConfig
from diffuse.errors import CheckpointError

DIFFUSION_KINDS = ("unet", "superres")


def _kind(path: str | Path) -> tuple[str | None, dict]:
    config = read_checkpoint_config(path)
    model = config["model"] if isinstance(config["model"], dict) else {}
    return model.get("kind"), config


def load_diffusion_model(
    path: str | Path,
    *,
    upsampler: bool = False,
    weights: str = "auto",
    device: str | torch.device = "cpu",
) -> LoadedCheckpoint:
    """Load a diffusion model (``upsampler``: an upsampler) from a checkpoint or run folder."""
    kind, config = _kind(path)
    role = "an upsampler" if upsampler else "a diffusion model"
    wanted = ("superres",) if upsampler else DIFFUSION_KINDS
    if kind not in wanted:
        what = "a noisy classifier" if kind == "classifier" else f"a {kind!r} network"
        raise CheckpointError(f"{path} holds {what}, not {role}; give {role} checkpoint")
    if config["diffusion"] is None:
        raise CheckpointError(
            f"{path} holds a network without diffusion settings, so it cannot be sampled; "
            "save it with its DiffusionConfig"
        )
    return load_checkpoint(path, weights=weights, device=device)


def load_classifier(
    path: str | Path,
    diffusion: DiffusionConfig,
    *,
    weights: str = "auto",
    device: str | torch.device = "cpu",
) -> LoadedCheckpoint:
    """Load a noisy classifier trained on the noise schedule of ``diffusion`` (the network
    is ``.model``)."""
    kind, config = _kind(path)
    if kind != "classifier":
        raise CheckpointError(f"{path} holds a {kind!r} network, not a noisy classifier")
    own = config["diffusion"]
    if own is not None and (own.get("schedule"), own.get("timesteps")) != (
        diffusion.schedule,
        diffusion.timesteps,
    ):
        raise CheckpointError(
            f"{path} was trained on the {own.get('schedule')} schedule with "
            f"{own.get('timesteps')} steps, the model on the {diffusion.schedule} schedule with "
            f"{diffusion.timesteps}; a classifier only guides the noise levels it learned"
        )
    return load_checkpoint(path, weights=weights, device=device)
