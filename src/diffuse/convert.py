"""Import networks released by OpenAI (guided-diffusion and improved-diffusion).

The released ``.pt`` files are plain state dicts of the reference implementation
(``UNetModel``, ``SuperResModel``, ``EncoderUNetModel``); their key layout differs from
ours by module names only (``input_blocks.4.0.in_layers.2`` is our
``encoder.levels.1.blocks.0.res.conv1``), plus 1x1 convolutions that we hold as linear
layers. :func:`openai_key_map` derives the correspondence from our network's structure,
so every configuration the reference can build converts, and the conversion checks that
each tensor of the file is used and each of our parameters filled.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffuse import presets
from diffuse.checkpoint import LAYOUT as CHECKPOINT_LAYOUT
from diffuse.checkpoint import save_checkpoint
from diffuse.errors import CheckpointError, ConfigError, MissingFileError
from diffuse.nn import (
    ClassifierConfig,
    EncoderClassifier,
    EncoderConfig,
    SuperResConfig,
    UNetConfig,
    build_network,
)
from diffuse.nn.encoder import Level
from diffuse.nn.layers import Downsample, ResBlock

# The reference constructors' keyword arguments and their defaults.
_UNET_DEFAULTS: dict[str, Any] = {
    "dropout": 0.0,
    "channel_mult": (1, 2, 4, 8),
    "conv_resample": True,
    "dims": 2,
    "num_classes": None,
    "use_checkpoint": False,
    "use_fp16": False,
    "num_heads": 1,
    "num_head_channels": -1,
    "num_heads_upsample": -1,
    "use_scale_shift_norm": False,
    "resblock_updown": False,
    "use_new_attention_order": False,
}
_REQUIRED = (
    "image_size",
    "in_channels",
    "model_channels",
    "out_channels",
    "num_res_blocks",
    "attention_resolutions",
)
_CONFIG_CLASSES = {"unet": UNetConfig, "superres": SuperResConfig, "classifier": ClassifierConfig}

_RES_BLOCK_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "embedding": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "skip": "skip_connection",
}
_ATTENTION_PARTS = {"norm": "norm", "qkv": "qkv", "proj": "proj_out"}


def config_from_openai(
    kind: str, constructor: Mapping[str, Any], *, timestep_scale: float = 1.0
) -> EncoderConfig:
    """Our configuration of the network the reference builds from ``constructor``.

    kind:           "unet" (``UNetModel``), "superres" (``SuperResModel``) or "classifier"
                    (``EncoderUNetModel``).
    constructor:    the reference constructor's keyword arguments; ``attention_resolutions``
                    are downsampling factors there, pixel sizes here.
    timestep_scale: 1000 / T for models trained with ``rescale_timesteps`` (improved-diffusion's
                    default), 1 otherwise; the constructor does not record it.
    """
    if kind not in _CONFIG_CLASSES:
        raise ConfigError(f"unknown network kind {kind!r}; known: {sorted(_CONFIG_CLASSES)}")
    defaults = dict(_UNET_DEFAULTS)
    if kind == "classifier":
        defaults["pool"] = "adaptive"
        del defaults["num_classes"]
    missing = [name for name in _REQUIRED if name not in constructor]
    unknown = sorted(set(constructor) - set(defaults) - set(_REQUIRED))
    if missing or unknown:
        raise ConfigError(
            f"reference {kind} constructor arguments: missing {missing}, unknown {unknown}"
        )
    args = {**defaults, **constructor}
    heads = args["num_heads"]
    if args["dims"] != 2 or not args["conv_resample"]:
        raise ConfigError("only 2-D networks with learned (convolutional) resampling convert")
    if args["num_heads_upsample"] not in (-1, heads):
        raise ConfigError("num_heads_upsample different from num_heads is not supported")
    size = args["image_size"]
    settings = {
        "image_size": size,
        "in_channels": args["in_channels"],
        "out_channels": args["out_channels"],
        "model_channels": args["model_channels"],
        "channel_mult": tuple(args["channel_mult"]),
        "num_res_blocks": args["num_res_blocks"],
        "attention_resolutions": tuple(size // factor for factor in args["attention_resolutions"]),
        "num_heads": heads,
        "num_head_channels": None if args["num_head_channels"] == -1 else args["num_head_channels"],
        "attention_order": "new" if args["use_new_attention_order"] else "legacy",
        "dropout": float(args["dropout"]),
        "scale_shift_norm": bool(args["use_scale_shift_norm"]),
        "resample": "resblock" if args["resblock_updown"] else "conv",
        "timestep_scale": timestep_scale,
        "gradient_checkpointing": bool(args["use_checkpoint"]),
    }
    if kind == "classifier":
        if args["pool"] not in ("attention", "adaptive"):
            raise ConfigError(f"classifier pool {args['pool']!r} is not supported")
        settings["pool"] = args["pool"]
    else:
        settings["num_classes"] = args["num_classes"]
    return _CONFIG_CLASSES[kind](**settings)


def openai_key_map(model: nn.Module) -> dict[str, str]:
    """For each parameter name of ``model``, the key of the same tensor in the reference."""
    modules: dict[str, str] = {
        "time_embed.linear1": "time_embed.0",
        "time_embed.linear2": "time_embed.2",
        "class_embed": "label_emb",
        "encoder.stem": "input_blocks.0.0",
        "out_norm": "out.0",
        "out_conv": "out.2",
        "pool.qkv": "out.2.qkv_proj",
        "pool.proj": "out.2.c_proj",
    }
    if isinstance(model, EncoderClassifier) and model.config.pool == "adaptive":
        modules["pool"] = "out.3"
    index = 1
    for number, level in enumerate(model.encoder.levels):
        ours = f"encoder.levels.{number}"
        for position, block in enumerate(level.blocks):
            _map_block(modules, f"{ours}.blocks.{position}", f"input_blocks.{index}", block)
            index += 1
        if level.resample is not None:
            _map_resampler(modules, f"{ours}.resample", f"input_blocks.{index}.0", level.resample)
            index += 1
    _map_res_block(modules, "encoder.middle.res1", "middle_block.0")
    _map_attention(modules, "encoder.middle.attn", "middle_block.1")
    _map_res_block(modules, "encoder.middle.res2", "middle_block.2")
    if hasattr(model, "decoder"):
        index = 0
        for number in reversed(range(len(model.decoder.levels))):
            level: Level = model.decoder.levels[number]
            ours = f"decoder.levels.{number}"
            for position, block in enumerate(level.blocks):
                _map_block(modules, f"{ours}.blocks.{position}", f"output_blocks.{index}", block)
                index += 1
            if level.resample is not None:
                # The upsampler shares the reference's sequential with the level's last block.
                slot = 2 if hasattr(level.blocks[-1], "attn") else 1
                theirs = f"output_blocks.{index - 1}.{slot}"
                _map_resampler(modules, f"{ours}.resample", theirs, level.resample)
    keys = {}
    for name, _ in model.named_parameters():
        owner, _, leaf = name.rpartition(".")
        if name == "pool.position":
            keys[name] = "out.2.positional_embedding"
        else:
            keys[name] = f"{modules[owner]}.{leaf}"
    return keys


def _map_res_block(modules: dict[str, str], ours: str, theirs: str) -> None:
    for part, reference in _RES_BLOCK_PARTS.items():
        modules[f"{ours}.{part}"] = f"{theirs}.{reference}"


def _map_attention(modules: dict[str, str], ours: str, theirs: str) -> None:
    for part, reference in _ATTENTION_PARTS.items():
        modules[f"{ours}.{part}"] = f"{theirs}.{reference}"


def _map_block(modules: dict[str, str], ours: str, theirs: str, block: nn.Module) -> None:
    _map_res_block(modules, f"{ours}.res", f"{theirs}.0")
    if hasattr(block, "attn"):
        _map_attention(modules, f"{ours}.attn", f"{theirs}.1")


def _map_resampler(modules: dict[str, str], ours: str, theirs: str, module: nn.Module) -> None:
    if isinstance(module, ResBlock):
        _map_res_block(modules, ours, theirs)
    else:
        modules[f"{ours}.conv"] = f"{theirs}.{'op' if isinstance(module, Downsample) else 'conv'}"


def load_openai_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Fill ``model``'s parameters from a state dict in the reference layout.

    Raises :class:`CheckpointError` naming the keys when a tensor of ``state_dict`` is left
    unused, a parameter is left unfilled, or shapes disagree; ``model`` is unchanged then.
    """
    keys = openai_key_map(model)
    wanted = set(keys.values())
    unused = sorted(set(state_dict) - wanted)
    missing = sorted(wanted - set(state_dict))
    if unused or missing:
        raise CheckpointError(
            "the state dict does not match this architecture: "
            f"{listing(missing)} missing, {listing(unused)} unused; "
            "check the preset or constructor settings"
        )
    ours = model.state_dict()
    converted, mismatched = {}, []
    for name, key in keys.items():
        tensor = state_dict[key]
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"entry {key!r} of the state dict is not a tensor")
        target = ours[name].shape
        if name == "pool.position":
            tensor = tensor.t()
        if (
            tensor.shape != target
            and tensor.numel() == target.numel()
            and _squeezes_to(tensor.shape, target)
        ):
            tensor = tensor.reshape(target)
        if tensor.shape != target:
            mismatched.append(f"{key} {tuple(tensor.shape)} vs {tuple(target)}")
        converted[name] = tensor.to(ours[name].dtype)
    if mismatched:
        raise CheckpointError(
            f"tensor shapes do not match this architecture: {listing(mismatched)}; "
            "check the preset or constructor settings"
        )
    # A model built on the meta device (no memory, no random initialisation) takes the
    # tensors themselves.
    model.load_state_dict(converted, assign=any(p.is_meta for p in model.parameters()))


def read_openai_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a released ``.pt`` file, read without unpickling code
    (``torch.load(weights_only=True)``)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle, zip and runtime errors alike
        raise CheckpointError(
            f"{path} is not a plain PyTorch state dict readable with weights_only=True "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return dict(state)


def convert_openai_checkpoint(
    source: str | Path,
    output: str | Path,
    *,
    preset: str | None = None,
    reference: Mapping[str, Any] | None = None,
    timestep_scale: float = 1.0,
    overwrite: bool = False,
) -> Path:
    """Convert the released checkpoint ``source`` into our checkpoint folder ``output``.

    source:         a ``.pt`` state dict of guided-diffusion or improved-diffusion.
    output:         the checkpoint folder to write (atomically; untouched on any error).
    preset:         the preset the file belongs to (e.g. "adm-imagenet64"); its diffusion
                    settings are stored with the weights.
    reference:      instead of a preset, ``{"kind": ..., "constructor": {...}}`` as in the
                    fixture files; no diffusion settings are stored then.
    timestep_scale: with ``reference``, see :func:`config_from_openai`.
    overwrite:      replace an existing ``output`` checkpoint folder (never a folder
                    holding anything else).
    """
    if (preset is None) == (reference is None):
        raise ConfigError("name exactly one of a preset or a reference constructor")
    CHECKPOINT_LAYOUT.check(output, overwrite)  # before reading the source
    metadata: dict[str, Any] = {"converted_from": Path(source).name}
    if preset is not None:
        chosen = presets.get(preset)
        config, diffusion = chosen.model_config, chosen.diffusion
        metadata.update(preset=preset, source=chosen.source)
    else:
        if not isinstance(reference, Mapping) or not {"kind", "constructor"} <= set(reference):
            raise ConfigError('a reference must hold "kind" and "constructor"')
        config = config_from_openai(
            reference["kind"], reference["constructor"], timestep_scale=timestep_scale
        )
        diffusion = None
        metadata["reference_constructor"] = dict(reference["constructor"])
    state = read_openai_state_dict(source)
    with torch.device("meta"):
        model = build_network(config)
    load_openai_state_dict(model, state)
    model.to(memory_format=torch.channels_last)
    return save_checkpoint(
        output, model, diffusion=diffusion, metadata=metadata, overwrite=overwrite
    )


def from_openai(
    kind: str,
    constructor: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    *,
    timestep_scale: float = 1.0,
) -> nn.Module:
    """Our network equal to the reference's ``kind`` built from ``constructor`` and loaded
    with ``state_dict`` (reference layout), in eval mode. See :func:`config_from_openai`."""
    model = build_network(config_from_openai(kind, constructor, timestep_scale=timestep_scale))
    load_openai_state_dict(model, state_dict)
    return model.eval()


def _squeezes_to(shape: torch.Size, target: torch.Size) -> bool:
    """Whether ``shape`` is ``target`` with trailing singleton dims (1x1 convolutions)."""
    return tuple(shape[: len(target)]) == tuple(target) and all(
        d == 1 for d in shape[len(target) :]
    )


def listing(names: list[str], limit: int = 8) -> str:
    """``names`` for a message: their count, and the first ``limit`` of them."""
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return f"{len(names)} ({shown}{', ...' if len(names) > limit else ''})"
