"""Small random networks for the sampling tests (8x8 grey base, classifier, 16x16 upsampler).

Each is built under a forked, seeded random state (so building leaves the global random
state alone) and gets random output layers: a fresh network outputs zeros.
:func:`randomized` redraws every parameter instead (for checks that each weight lands
where it should).
"""

from __future__ import annotations

import torch

from diffuse.diffusion import DiffusionConfig
from diffuse.nn import ClassifierConfig, SuperResConfig, UNetConfig, build_network

SMALL = dict(
    model_channels=16,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(),
    num_head_channels=16,
    norm_groups=8,
)
# A 16x16 RGB network with learned variances (6 output channels) and attention at 8x8,
# the base of the architecture tests.
RGB_16 = dict(
    image_size=16,
    in_channels=3,
    out_channels=6,
    model_channels=16,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(8,),
    norm_groups=8,
)
DIFFUSION = DiffusionConfig("cosine", 1000, "eps", "fixed_small", "mse")


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """The model with every parameter redrawn (a fresh model outputs zeros)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
    return model


def _build(config, seed: int, output: str):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        network = build_network(config)
        torch.nn.init.normal_(getattr(network, output).weight, std=0.1)
    return network.eval()


def base_unet(*, num_classes=10, null_class=True, channels=1, seed=0, image_size=8):
    config = UNetConfig(
        image_size=image_size,
        in_channels=channels,
        out_channels=channels,
        num_classes=num_classes,
        null_class=null_class,
        **SMALL,
    )
    return _build(config, seed, "out_conv")


def classifier(*, image_size=8, classes=10, seed=1):
    config = ClassifierConfig(
        image_size=image_size, in_channels=1, out_channels=classes, pool="adaptive", **SMALL
    )
    return _build(config, seed, "pool")


def upsampler(*, low_res_size=8, num_classes=10, seed=2):
    config = SuperResConfig(
        image_size=16,
        in_channels=1,
        out_channels=1,
        low_res_size=low_res_size,
        num_classes=num_classes,
        **SMALL,
    )
    return _build(config, seed, "out_conv")
