"""Networks: the U-Net family of DDPM, Improved DDPM and ADM.

``build_network(config)`` builds the network a configuration describes (each level
running the block recipe ``config.blocks``, drawn from ``BLOCKS``);
``config_from_dict`` reads a configuration back from its JSON form. Networks know nothing
about noise: they map ``(x, t, **conditioning)`` to a tensor.
"""

from __future__ import annotations

from torch import nn

from diffuse.nn.classifier import EncoderClassifier
from diffuse.nn.network_config import (
    BLOCKS,
    ClassifierConfig,
    EncoderConfig,
    SuperResConfig,
    UNetConfig,
    config_from_dict,
)
from diffuse.nn.superres import SuperResUNet
from diffuse.nn.unet import UNet

NETWORK_CLASSES: dict[str, type[nn.Module]] = {
    "unet": UNet,
    "superres": SuperResUNet,
    "classifier": EncoderClassifier,
}


def build_network(config: EncoderConfig) -> nn.Module:
    """The network (random weights) that ``config`` describes."""
    return NETWORK_CLASSES[config.kind](config)


__all__ = [
    "BLOCKS",
    "ClassifierConfig",
    "EncoderClassifier",
    "EncoderConfig",
    "SuperResConfig",
    "SuperResUNet",
    "UNet",
    "UNetConfig",
    "build_network",
    "config_from_dict",
]
