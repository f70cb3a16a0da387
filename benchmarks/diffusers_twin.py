"""diffusers' ``UNet2DModel`` built as one of our U-Nets, natively or with the same weights.

The benchmarks compare our stack with diffusers' on the same network: this module gives
the ``UNet2DModel`` arguments whose architecture is that of a :class:`diffuse.nn.UNet`
(the two are the same DDPM/ADM design: sinusoidal timestep MLP with cosines first,
residual blocks with additive or scale-shift conditioning, self-attention after each
block of the attention levels, a middle block res-attn-res, skips concatenated on the
way up). :func:`unet2d_arguments` builds it as diffusers' users do, with diffusers' own
initialisation (for speed); :func:`diffusers_twin` copies our weights into it key by key,
so that both give the same output (for checking that they are the same network). Dev
only: needs diffusers.
"""

from __future__ import annotations

import torch

from diffuse.nn import UNet
from diffuse.nn.layers import SelfAttention


def diffusers_twin(model: UNet) -> torch.nn.Module:
    """The ``UNet2DModel`` equivalent to ``model``, holding ``model``'s weights."""
    from diffusers import UNet2DModel

    twin = UNet2DModel(**unet2d_arguments(model))
    state = twin_state_dict(model)
    missing = set(twin.state_dict()) ^ set(state)
    if missing:
        raise ValueError(f"the two layouts differ in {sorted(missing)[:8]}")
    twin.load_state_dict(state)
    return twin.to(next(model.parameters()).device).eval()


def unet2d_arguments(model: UNet) -> dict:
    """The ``UNet2DModel(...)`` arguments of the network ``model`` is.

    Raises ValueError for what ``UNet2DModel`` cannot express: a timestep scale other
    than 1, or heads of different widths (it takes one ``attention_head_dim``).
    """
    config = model.config
    if config.timestep_scale != 1.0:
        raise ValueError("UNet2DModel embeds the timestep itself: timestep_scale must be 1")
    widths = config.level_channels
    head_widths = {
        module.proj.in_features // module.heads
        for module in model.modules()
        if isinstance(module, SelfAttention)
    }
    if len(head_widths) != 1:
        raise ValueError(f"UNet2DModel has one head width, this network {sorted(head_widths)}")
    attention = [
        config.image_size // 2**level in config.attention_resolutions
        for level in range(config.levels)
    ]
    biggan = config.resample == "resblock"
    down = "ResnetDownsampleBlock2D" if biggan else "DownBlock2D"
    up = "ResnetUpsampleBlock2D" if biggan else "UpBlock2D"
    return dict(
        sample_size=config.image_size,
        in_channels=model.encoder.stem.in_channels,
        out_channels=config.out_channels,
        block_out_channels=widths,
        layers_per_block=config.num_res_blocks,
        dropout=config.dropout,
        down_block_types=tuple("AttnDownBlock2D" if attn else down for attn in attention),
        up_block_types=tuple("AttnUpBlock2D" if attn else up for attn in reversed(attention)),
        attention_head_dim=head_widths.pop(),
        norm_num_groups=config.norm_groups,
        attn_norm_num_groups=config.norm_groups,  # else the middle attention has no GroupNorm
        resnet_time_scale_shift="scale_shift" if config.scale_shift_norm else "default",
        downsample_type="resnet" if biggan else "conv",
        upsample_type="resnet" if biggan else "conv",
        num_class_embeds=None if model.class_embed is None else model.class_embed.num_embeddings,
        flip_sin_to_cos=True,
        freq_shift=0,
    )


def twin_state_dict(model: UNet) -> dict[str, torch.Tensor]:
    """Our weights under diffusers' key names."""
    state: dict[str, torch.Tensor] = {}

    def put(prefix: str, module: torch.nn.Module, names: dict[str, str] | None = None) -> None:
        """Each entry ``head.tail`` of ``module`` as ``prefix.names[head].tail``."""
        for key, value in module.state_dict().items():
            head, _, tail = key.partition(".")
            head = head if names is None else names[head]
            state[".".join(filter(None, (prefix, head, tail)))] = value

    resnet = {
        "norm1": "norm1",
        "conv1": "conv1",
        "embedding": "time_emb_proj",
        "norm2": "norm2",
        "conv2": "conv2",
        "skip": "conv_shortcut",
    }

    def put_attention(prefix: str, attn) -> None:
        heads, width = attn.heads, attn.proj.in_features
        weight, bias = attn.qkv.weight, attn.qkv.bias
        if attn.order == "legacy":  # rows (head, q/k/v, channel) -> (q/k/v, head, channel)
            weight = weight.view(heads, 3, -1, width).transpose(0, 1).reshape(3 * width, width)
            bias = bias.view(heads, 3, -1).transpose(0, 1).reshape(3 * width)
        for name, w, b in zip(
            ("to_q", "to_k", "to_v"), weight.chunk(3), bias.chunk(3), strict=True
        ):
            state[f"{prefix}.{name}.weight"], state[f"{prefix}.{name}.bias"] = w, b
        put(f"{prefix}.group_norm", attn.norm)
        put(f"{prefix}.to_out.0", attn.proj)

    put("time_embedding", model.time_embed, {"linear1": "linear_1", "linear2": "linear_2"})
    if model.class_embed is not None:
        put("class_embedding", model.class_embed)
    put("conv_in", model.encoder.stem)

    def put_level(prefix: str, level, sampler: str) -> None:
        for j, block in enumerate(level.blocks):
            put(f"{prefix}.resnets.{j}", block.res, resnet)
            if block.attn is not None:
                put_attention(f"{prefix}.attentions.{j}", block.attn)
        if level.resample is not None:
            names = resnet if hasattr(level.resample, "norm1") else None
            put(f"{prefix}.{sampler}.0", level.resample, names)

    for i, level in enumerate(model.encoder.levels):
        put_level(f"down_blocks.{i}", level, "downsamplers")
    middle = model.encoder.middle
    put("mid_block.resnets.0", middle.res1, resnet)
    put_attention("mid_block.attentions.0", middle.attn)
    put("mid_block.resnets.1", middle.res2, resnet)
    for i, level in enumerate(reversed(model.decoder.levels)):
        put_level(f"up_blocks.{i}", level, "upsamplers")
    put("conv_norm_out", model.out_norm)
    put("conv_out", model.out_conv)
    return state
