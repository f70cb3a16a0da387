"""The denoising U-Net of DDPM, Improved DDPM and ADM (one implementation, configured).

DDPM (Ho et al. 2020, appendix B): a PixelCNN++-like U-Net with GroupNorm, a sinusoidal
timestep embedding added in every residual block and self-attention at 16x16. Improved
DDPM (Nichol & Dhariwal 2021, appendix A, and its class-conditional ImageNet models) adds
class embeddings to the timestep embedding and adaptive GroupNorm; ADM (Dhariwal & Nichol
2021, section 3) adds more heads, attention at several resolutions and BigGAN resampling
blocks. Every variant is a :class:`~diffuse.nn.network_config.UNetConfig`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffuse.errors import ConfigError, DataError
from diffuse.nn.encoder import Level, Network, level_block, resampler
from diffuse.nn.layers import GroupNorm32, run_block, zero_init
from diffuse.nn.network_config import UNetConfig


class Decoder(nn.Module):
    """The upward levels: each block takes the previous features concatenated with one
    skip connection of the encoder, in reverse order; levels end with upsampling.

    config:        the network's settings.
    in_channels:   channels of the middle block's output.
    skip_channels: channels of the encoder's skip features, in the order produced.

    ``levels[i]`` works at the resolution of the encoder's level ``i``; they run from the
    last to the first.
    """

    def __init__(self, config: UNetConfig, in_channels: int, skip_channels: list[int]):
        super().__init__()
        self.checkpointed = config.gradient_checkpointing
        pending = list(skip_channels)
        channels = in_channels
        levels = []
        for level in reversed(range(config.levels)):
            width = config.level_channels[level]
            blocks = []
            for _ in range(config.num_res_blocks + 1):
                blocks.append(level_block(config, level, channels + pending.pop(), width))
                channels = width
            up = resampler(config, channels, "up") if level > 0 else None
            levels.append(Level(blocks, up))
        self.levels = nn.ModuleList(reversed(levels))
        self.out_channels = channels

    def forward(
        self,
        h: torch.Tensor,
        skips: list[torch.Tensor],
        emb: torch.Tensor,
        tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        checkpointed = self.checkpointed and self.training
        for level in reversed(self.levels):
            for block in level.blocks:
                h = run_block(block, checkpointed, torch.cat([h, skips.pop()], dim=1), emb, tokens)
            if level.resample is not None:
                h = run_block(level.resample, checkpointed, h, emb)
        return h


class UNet(Network):
    """The U-Net ``model(x, t, y=None)`` predicting noise (or x0, v, ...) and variances.

    config:        the architecture (:class:`UNetConfig`); kept as ``self.config``.
    stem_channels: channels the first convolution sees (default ``config.in_channels``;
                   the upsampler adds the low-resolution image's).

    ``x`` [N, in_channels, S, S] noisy images, ``t`` [N] integer timestep indices 0..T-1
    (embedded as ``t * timestep_scale``), ``y`` [N] class labels of a class-conditional
    model; ``y=None`` selects the null class when the model has one. Returns
    [N, out_channels, S, S]. A fresh model outputs zeros (zero-initialised output layers).
    """

    def __init__(self, config: UNetConfig, stem_channels: int | None = None):
        super().__init__(config, stem_channels or config.in_channels)
        self.class_embed = None
        if config.num_classes is not None:
            rows = config.num_classes + (1 if config.null_class else 0)
            self.class_embed = nn.Embedding(rows, config.embedding_channels)
        self.class_tokens = "clsatn" in config.blocks
        self.decoder = Decoder(config, self.encoder.out_channels, self.encoder.skip_channels)
        self.out_norm = GroupNorm32(config.norm_groups, self.decoder.out_channels)
        self.out_conv = zero_init(
            nn.Conv2d(self.decoder.out_channels, config.out_channels, 3, padding=1)
        )
        self.to(memory_format=torch.channels_last)

    @property
    def num_classes(self) -> int | None:
        """Number of real classes of a class-conditional model, None if unconditional."""
        return self.config.num_classes

    @property
    def null_class(self) -> int | None:
        """The label meaning "no label" (classifier-free guidance), None if absent."""
        return self.config.num_classes if self.config.null_class else None

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None):
        self.check_input(x, t)
        return self.denoise(x, t, y)

    def denoise(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The U-Net proper on the stem input ``x`` (inputs already checked).

        The class embedding is added to the timestep embedding (as Improved DDPM's
        class-conditional models do);
        a recipe with class attention also gets both, activated, as two tokens [N, 2, E].
        """
        time = self.embed_timesteps(t)
        label = self.embed_labels(y, x.shape[0], x.device)
        emb = time + label
        tokens = F.silu(torch.stack([time, label], dim=1)) if self.class_tokens else None
        h, skips = self.encode(x, emb, tokens)
        h = self.decoder(h, skips, F.silu(emb), tokens)
        return self.out_conv(self.out_norm(h, silu=True)).contiguous()

    def embed_labels(self, y: torch.Tensor | None, n: int, device: torch.device):
        """Class embedding [N, E] of labels ``y`` (0 when unconditional)."""
        if self.class_embed is None:
            if y is not None:
                raise ConfigError("this network is unconditional: call it without class labels y")
            return 0
        if y is None:
            if self.null_class is None:
                raise ConfigError(
                    f"this network is conditioned on {self.num_classes} classes and has no "
                    "null class: pass labels y"
                )
            y = torch.full((n,), self.null_class, dtype=torch.long, device=device)
        if y.shape != (n,):
            raise DataError(f"labels y must have shape [{n}], got {tuple(y.shape)}")
        return self.class_embed(y)
