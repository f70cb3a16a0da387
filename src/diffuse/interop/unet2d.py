"""Our U-Net as diffusers' ``UNet2DModel``: its constructor arguments and its weights.

The two are the same DDPM/ADM design: a sinusoidal timestep embedding (cosines first,
frequencies ``10000 ** (-i / half)``, diffusers' ``flip_sin_to_cos=True, freq_shift=0``)
through a two-layer SiLU MLP four times as wide as the first level, a class embedding
added to it, residual blocks with additive or scale-shift conditioning (diffusers'
``resnet_time_scale_shift="default"`` / ``"scale_shift"``), self-attention after each
block of the attention levels, a middle block residual-attention-residual, skips
concatenated on the way up, convolutional or BigGAN resampling (``downsample_type`` /
``upsample_type`` ``"conv"`` or ``"resnet"``), GroupNorm with eps 1e-5 everywhere.

Some of our networks have no ``UNet2DModel`` form: :func:`unet2d_problems` names what
stops one, :func:`unet2d_config` gives the arguments of one that has, and
:func:`unet_config_from_unet2d` reads such arguments back (naming what diffuse cannot
build). :func:`unet2d_module_names` derives the correspondence of the weights from our
network's structure, so the conversion of the weights, both ways, is one renaming plus
the split of our fused q, k, v projection into diffusers' ``to_q``, ``to_k``, ``to_v``.

Pure data: nothing here imports diffusers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from diffuse.convert import listing
from diffuse.errors import CheckpointError, InexpressibleError
from diffuse.nn import UNet, UNetConfig
from diffuse.nn.layers import ResBlock, SelfAttention
from diffuse.nn.network_config import DEFAULT_BLOCKS, EncoderConfig

NORM_EPS = 1e-5  # the eps of every GroupNorm of ours (torch's default)

# Our residual block's parts and their names in diffusers' ResnetBlock2D.
RESNET_PARTS = {
    "norm1": "norm1",
    "conv1": "conv1",
    "embedding": "time_emb_proj",
    "norm2": "norm2",
    "conv2": "conv2",
    "skip": "conv_shortcut",
}
# Our attention's parts and their names in diffusers' Attention; the fused projection
# ``qkv`` is three layers there.
ATTENTION_PARTS: dict[str, str | tuple[str, ...]] = {
    "norm": "group_norm",
    "qkv": ("to_q", "to_k", "to_v"),
    "proj": "to_out.0",
}
# UNet2DModel's block types, by (attention, resampling) of a level.
DOWN_BLOCKS = {
    (True, "conv"): "AttnDownBlock2D",
    (True, "resblock"): "AttnDownBlock2D",
    (False, "conv"): "DownBlock2D",
    (False, "resblock"): "ResnetDownsampleBlock2D",
}
UP_BLOCKS = {
    (True, "conv"): "AttnUpBlock2D",
    (True, "resblock"): "AttnUpBlock2D",
    (False, "conv"): "UpBlock2D",
    (False, "resblock"): "ResnetUpsampleBlock2D",
}
# diffusers' names of our two resamplers, in downsample_type / upsample_type.
RESAMPLE_TYPES = {"conv": "conv", "resblock": "resnet"}
# Our networks that are not a denoising U-Net, as the reason they have no UNet2DModel form.
OTHER_NETWORKS = {
    "superres": "an upsampler network (UNet2DModel takes no low-resolution image)",
    "classifier": "a noisy classifier (not a denoising U-Net)",
}
# The UNet2DModel settings diffuse's network has no alternative to.
FIXED_SETTINGS: dict[str, Any] = {
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "mid_block_type": "UNetMidBlock2D",
    "mid_block_scale_factor": 1,
    "downsample_padding": 1,
    "act_fn": "silu",
    "add_attention": True,
    "class_embed_type": None,
}


def attention_widths(config: EncoderConfig) -> list[int]:
    """Channels of every attention layer's input: the attention levels' widths, then the
    middle block's (the last level's)."""
    widths = [
        width for level, width in enumerate(config.level_channels) if config.uses_attention(level)
    ]
    return [*widths, config.level_channels[-1]]


def unet2d_problems(config: EncoderConfig) -> list[str]:
    """What in ``config`` ``UNet2DModel`` cannot express, one entry each (empty: nothing)."""
    if config.kind != "unet":
        return [OTHER_NETWORKS.get(config.kind, f"a {config.kind} network")]
    problems = []
    if config.timestep_scale != 1.0:
        problems.append(
            f"timestep_scale={config.timestep_scale} (UNet2DModel embeds the timestep index "
            "unscaled)"
        )
    if config.level_channels[0] != config.model_channels:
        problems.append(
            f"channel_mult[0]={config.channel_mult[0]} (UNet2DModel's timestep features are "
            f"as wide as its first level, {config.level_channels[0]} channels, ours "
            f"model_channels={config.model_channels})"
        )
    if tuple(config.blocks) != DEFAULT_BLOCKS:
        problems.append(
            f"blocks={','.join(config.blocks)} (UNet2DModel's levels run a residual block "
            f"and, where they attend, self-attention: the recipe {','.join(DEFAULT_BLOCKS)})"
        )
    if config.embedding_channels != 4 * config.model_channels:
        problems.append(
            f"embedding_channels={config.embedding_channels} (UNet2DModel's timestep "
            f"embedding is 4 x model_channels = {4 * config.model_channels} wide)"
        )
    heads = {width: config.attention_heads(width) for width in attention_widths(config)}
    head_widths = sorted({width // count for width, count in heads.items()})
    if len(head_widths) > 1 and set(heads.values()) != {1}:
        problems.append(
            f"attention heads of {', '.join(map(str, head_widths))} channels (UNet2DModel "
            "has one attention_head_dim for every layer; num_head_channels gives one)"
        )
    return problems


def unet2d_config(config: UNetConfig) -> dict[str, Any]:
    """The ``UNet2DModel(**arguments)`` that is the network ``config`` describes.

    Raises :class:`InexpressibleError` naming each problem of :func:`unet2d_problems`.
    """
    problems = unet2d_problems(config)
    if problems:
        raise InexpressibleError("diffusers' UNet2DModel", problems)
    attention = [config.uses_attention(level) for level in range(config.levels)]
    heads = {width: config.attention_heads(width) for width in attention_widths(config)}
    head_widths = {width // count for width, count in heads.items()}
    # One head everywhere over layers of several widths: diffusers' None (a head per layer
    # as wide as the layer).
    head_dim = head_widths.pop() if len(head_widths) == 1 else None
    resample = RESAMPLE_TYPES[config.resample]
    rows = None
    if config.num_classes is not None:
        rows = config.num_classes + (1 if config.null_class else 0)
    return {
        "sample_size": config.image_size,
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "block_out_channels": list(config.level_channels),
        "layers_per_block": config.num_res_blocks,
        "down_block_types": [DOWN_BLOCKS[(a, config.resample)] for a in attention],
        "up_block_types": [UP_BLOCKS[(a, config.resample)] for a in reversed(attention)],
        "downsample_type": resample,
        "upsample_type": resample,
        "attention_head_dim": head_dim,
        "norm_num_groups": config.norm_groups,
        # Without it the middle attention of a scale-shift network has no GroupNorm.
        "attn_norm_num_groups": config.norm_groups,
        "norm_eps": NORM_EPS,
        "resnet_time_scale_shift": "scale_shift" if config.scale_shift_norm else "default",
        "dropout": config.dropout,
        "num_class_embeds": rows,
        "time_embedding_dim": None,
        **FIXED_SETTINGS,
    }


def unet_config_from_unet2d(arguments: Mapping[str, Any]) -> UNetConfig:
    """Our configuration of the ``UNet2DModel`` built from ``arguments`` (every constructor
    argument, defaults included).

    The network has no null class (diffusers does not mark one) and heads of
    ``attention_head_dim`` channels. Raises :class:`InexpressibleError` naming every
    setting diffuse's network cannot reproduce.
    """
    args = dict(arguments)
    problems = [
        f"{name}={args.get(name)!r} (diffuse's network has {value!r})"
        for name, value in FIXED_SETTINGS.items()
        if args.get(name) != value
    ]
    widths = [int(width) for width in args["block_out_channels"]]
    if args.get("time_embedding_dim") not in (None, 4 * widths[0]):
        problems.append(
            f"time_embedding_dim={args['time_embedding_dim']} (diffuse's is 4 x the first "
            f"level's {widths[0]} channels)"
        )
    if not math.isclose(args["norm_eps"], NORM_EPS, rel_tol=1e-6):
        problems.append(f"norm_eps={args['norm_eps']} (diffuse's GroupNorms use {NORM_EPS})")
    shift = args["resnet_time_scale_shift"]
    if shift not in ("default", "scale_shift"):
        problems.append(f"resnet_time_scale_shift={shift!r} (diffuse's: default, scale_shift)")
    groups, attn_groups = args["norm_num_groups"], args.get("attn_norm_num_groups")
    if attn_groups is None and shift != "default":
        problems.append(
            "attn_norm_num_groups=None with scale_shift (the middle attention has no "
            "GroupNorm; diffuse's always has one)"
        )
    elif attn_groups not in (None, groups):
        problems.append(
            f"attn_norm_num_groups={attn_groups} (diffuse's attention uses norm_num_groups="
            f"{groups})"
        )
    size = args["sample_size"]
    if isinstance(size, list | tuple):
        if len(set(size)) != 1:
            problems.append(f"sample_size={list(size)} (diffuse's images are square)")
        size = size[0]
    attention, resample = _levels(args, len(widths), problems)
    head_dim = args["attention_head_dim"]
    if head_dim is not None:
        uneven = sorted({w for w, a in zip(widths, attention, strict=True) if a} | {widths[-1]})
        uneven = [w for w in uneven if w % head_dim]
        if uneven:
            problems.append(
                f"attention_head_dim={head_dim} does not divide the attention layers' "
                f"{', '.join(map(str, uneven))} channels"
            )
    mult = tuple(w // widths[0] if w % widths[0] == 0 else w / widths[0] for w in widths)
    if [int(m * widths[0]) for m in mult] != widths:
        problems.append(f"block_out_channels={widths} (not multiples of {widths[0]} diffuse keeps)")
    if problems:
        raise InexpressibleError("diffuse's U-Net", problems)
    return UNetConfig(
        image_size=int(size),
        in_channels=args["in_channels"],
        out_channels=args["out_channels"],
        model_channels=widths[0],
        channel_mult=mult,
        num_res_blocks=args["layers_per_block"],
        attention_resolutions=tuple(int(size) >> level for level, a in enumerate(attention) if a),
        num_heads=1,
        num_head_channels=head_dim,
        attention_order="new",
        dropout=float(args["dropout"]),
        scale_shift_norm=shift == "scale_shift",
        resample=resample,
        norm_groups=groups,
        num_classes=args["num_class_embeds"],
    )


def _levels(args: Mapping[str, Any], levels: int, problems: list[str]) -> tuple[list[bool], str]:
    """Which levels have attention, and the resampling of the network, from the block
    types (``problems`` gets what diffuse's network cannot have)."""
    down = [_block_type(name) for name in args["down_block_types"]]
    up = [_block_type(name) for name in args["up_block_types"]]
    if not len(down) == len(up) == levels:
        problems.append(f"{len(down)} down and {len(up)} up blocks for {levels} levels")
        return [False] * levels, "conv"
    known_down = {name: key for key, name in DOWN_BLOCKS.items()}
    known_up = {name: key for key, name in UP_BLOCKS.items()}
    unknown = [name for name in down if name not in known_down]
    unknown += [name for name in up if name not in known_up]
    if unknown:
        problems.append(
            f"blocks {sorted(set(unknown))} (diffuse's levels are {sorted(known_down)}"
            f" and {sorted(known_up)})"
        )
        return [False] * levels, "conv"
    attention = [known_down[name][0] for name in down]
    if attention != [known_up[name][0] for name in reversed(up)]:
        problems.append(
            f"attention in the down blocks {down} and the up blocks {up} at different "
            "levels (diffuse's levels have it on both sides or neither)"
        )
    # Each resampler's kind: a block without attention has its own, one with attention
    # follows downsample_type / upsample_type; the last down and up blocks have none.
    types = {value: key for key, value in RESAMPLE_TYPES.items()}
    kinds = set()
    for names, known, option in (
        (down[:-1], known_down, "downsample_type"),
        (up[:-1], known_up, "upsample_type"),
    ):
        for name in names:
            has_attention, kind = known[name]
            if has_attention:
                kind = types.get(args[option])
                if kind is None:
                    problems.append(f"{option}={args[option]!r} (diffuse's: conv, resnet)")
                    continue
            kinds.add(kind)
    if len(kinds) > 1:
        problems.append(
            "convolutional and residual (BigGAN) resampling in one network (diffuse's "
            "network has one kind)"
        )
    return attention, kinds.pop() if len(kinds) == 1 else "conv"


def _block_type(name: str) -> str:
    """A block type as diffusers' ``get_down_block`` / ``get_up_block`` read it (they drop a
    ``UNetRes`` prefix)."""
    return name[len("UNetRes") :] if name.startswith("UNetRes") else name


# ------------------------------------------------------------------------------ weights


def unet2d_module_names(model: UNet) -> dict[str, str | tuple[str, ...]]:
    """For each of our modules holding weights, the ``UNet2DModel`` module holding the same
    weights: one name, or three (``to_q``, ``to_k``, ``to_v``) for an attention's fused
    projection ``qkv``."""
    names: dict[str, str | tuple[str, ...]] = {
        "time_embed.linear1": "time_embedding.linear_1",
        "time_embed.linear2": "time_embedding.linear_2",
        "class_embed": "class_embedding",
        "encoder.stem": "conv_in",
        "out_norm": "conv_norm_out",
        "out_conv": "conv_out",
    }

    def block(ours: str, theirs: str, module: nn.Module) -> None:
        if isinstance(module, ResBlock):
            parts = RESNET_PARTS
        elif isinstance(module, SelfAttention):
            parts = ATTENTION_PARTS
        else:  # a convolutional resampler: diffusers' Downsample2D / Upsample2D
            parts = {"conv": "conv"}
        for part, name in parts.items():
            names[f"{ours}.{part}"] = (
                tuple(f"{theirs}.{n}" for n in name)
                if isinstance(name, tuple)
                else f"{theirs}.{name}"
            )

    def level(ours: str, theirs: str, module: nn.Module, resampler: str) -> None:
        for j, unit in enumerate(module.blocks):  # default recipe: res, then attn where used
            block(f"{ours}.blocks.{j}.res", f"{theirs}.resnets.{j}", unit.res)
            if hasattr(unit, "attn"):
                block(f"{ours}.blocks.{j}.attn", f"{theirs}.attentions.{j}", unit.attn)
        if module.resample is not None:
            block(f"{ours}.resample", f"{theirs}.{resampler}.0", module.resample)

    for i, down in enumerate(model.encoder.levels):
        level(f"encoder.levels.{i}", f"down_blocks.{i}", down, "downsamplers")
    middle = model.encoder.middle
    block("encoder.middle.res1", "mid_block.resnets.0", middle.res1)
    block("encoder.middle.attn", "mid_block.attentions.0", middle.attn)
    block("encoder.middle.res2", "mid_block.resnets.1", middle.res2)
    count = len(model.decoder.levels)
    for i, up in enumerate(model.decoder.levels):
        level(f"decoder.levels.{i}", f"up_blocks.{count - 1 - i}", up, "upsamplers")
    return names


def to_unet2d_state_dict(model: UNet) -> dict[str, torch.Tensor]:
    """``model``'s weights under ``UNet2DModel``'s names (contiguous tensors)."""
    names = unet2d_module_names(model)
    state: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        keys = _their_keys(names, key)
        tensor = tensor.detach()
        if len(keys) == 3:
            tensor = _qkv_to_new_order(tensor, _attention_of(model, key))
        for name, part in zip(keys, tensor.chunk(len(keys)), strict=True):
            state[name] = part.contiguous()
    return state


def from_unet2d_state_dict(
    model: UNet, state: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The state dict of ``model`` held by ``state``, a ``UNet2DModel``'s weights.

    Raises :class:`CheckpointError` naming the tensors of ``state`` left unused, the
    parameters left unfilled and the shapes that disagree.
    """
    names = unet2d_module_names(model)
    ours = model.state_dict()
    sources = {key: _their_keys(names, key) for key in ours}
    used = {name for keys in sources.values() for name in keys}
    unused, missing = sorted(set(state) - used), sorted(used - set(state))
    if unused or missing:
        raise CheckpointError(
            f"the UNet2DModel weights do not match its config: {listing(missing)} missing, "
            f"{listing(unused)} unused"
        )
    converted, mismatched = {}, []
    for key, keys in sources.items():
        tensor = torch.cat([state[name] for name in keys])
        if len(keys) == 3:
            tensor = _qkv_from_new_order(tensor, _attention_of(model, key))
        if tensor.shape != ours[key].shape:
            mismatched.append(f"{'+'.join(keys)} {tuple(tensor.shape)} vs {tuple(ours[key].shape)}")
        converted[key] = tensor.to(ours[key].dtype)
    if mismatched:
        raise CheckpointError(
            f"the UNet2DModel weights do not match its config: shapes differ in "
            f"{listing(mismatched)}"
        )
    return converted


def _their_keys(names: Mapping[str, str | tuple[str, ...]], key: str) -> tuple[str, ...]:
    """The ``UNet2DModel`` tensors that make up our tensor ``key`` (three for a fused q, k, v
    projection, concatenated in that order)."""
    owner, _, leaf = key.rpartition(".")
    theirs = names[owner]
    return tuple(f"{name}.{leaf}" for name in (theirs if isinstance(theirs, tuple) else (theirs,)))


def _attention_of(model: UNet, key: str) -> SelfAttention:
    """The attention layer whose fused projection holds the tensor ``key`` (``...qkv.weight``)."""
    return model.get_submodule(key.rsplit(".", 2)[0])


def _qkv_to_new_order(tensor: torch.Tensor, attention: SelfAttention) -> torch.Tensor:
    """Rows of a fused projection as (q/k/v, head, channel), diffusers' order (ours when
    ``attention.order`` is "new"; "legacy" holds (head, q/k/v, channel))."""
    if attention.order != "legacy":
        return tensor
    return _swap_leading(tensor, (attention.heads, 3))


def _qkv_from_new_order(tensor: torch.Tensor, attention: SelfAttention) -> torch.Tensor:
    """The inverse of :func:`_qkv_to_new_order`."""
    if attention.order != "legacy":
        return tensor
    return _swap_leading(tensor, (3, attention.heads))


def _swap_leading(tensor: torch.Tensor, groups: tuple[int, int]) -> torch.Tensor:
    """``tensor`` with its rows, grouped as ``groups + (rest,)``, reordered to
    ``(groups[1], groups[0], rest)``."""
    grouped = tensor.reshape(*groups, -1, *tensor.shape[1:])
    return grouped.transpose(0, 1).reshape(tensor.shape)
