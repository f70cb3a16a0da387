"""The noisy classifier of ADM (Dhariwal & Nichol 2021, section 4.1).

The U-Net's encoder half (the same :class:`~diffuse.nn.encoder.Encoder`), trained on noisy
images x_t to predict p(y | x_t, t); its gradient with respect to x_t guides sampling
(classifier guidance, algorithms 1 and 2 of that paper).
"""

from __future__ import annotations

import torch
from torch import nn

from diffuse.nn.encoder import Network
from diffuse.nn.layers import AttentionPool, GroupNorm32, zero_init
from diffuse.nn.network_config import ClassifierConfig


class EncoderClassifier(Network):
    """``classifier(x, t)`` -> logits [N, out_channels] of the classes of noisy images.

    config: the architecture (:class:`ClassifierConfig`); kept as ``self.config``.

    The final features are normalised, activated and pooled: by attention pooling, or by
    their spatial mean and a zero-initialised linear layer.
    """

    def __init__(self, config: ClassifierConfig):
        super().__init__(config, config.in_channels)
        channels = self.encoder.out_channels
        self.out_norm = GroupNorm32(config.norm_groups, channels)
        if config.pool == "attention":
            heads = config.attention_heads(channels)
            size = config.resolutions[-1]
            self.pool = AttentionPool(size, channels, heads, config.out_channels)
        else:
            self.pool = zero_init(nn.Linear(channels, config.out_channels))
        self.to(memory_format=torch.channels_last)

    @property
    def num_classes(self) -> int:
        """Number of classes the logits are over."""
        return self.config.out_channels

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.check_input(x, t)
        h, _ = self.encode(x, self.embed_timesteps(t))
        h = self.out_norm(h, silu=True)
        if self.config.pool == "attention":
            return self.pool(h)
        return self.pool(h.mean(dim=(2, 3)))
