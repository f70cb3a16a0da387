"""diffusers' ``UNet2DModel`` built as one of our U-Nets, natively or with the same weights.

The benchmarks compare our stack with diffusers' on the same network. The translation is
the library's own (:mod:`diffuse.interop.unet2d`, which ``diffuse export diffusers`` uses):
:func:`unet2d_arguments` gives the ``UNet2DModel`` arguments whose architecture is that of
a :class:`diffuse.nn.UNet`, to build it as diffusers' users do, with diffusers' own
initialisation (for speed); :func:`diffusers_twin` also copies our weights into it, so
that both give the same output (for checking that they are the same network). Dev only:
needs diffusers.
"""

from __future__ import annotations

import torch

from diffuse.interop.unet2d import to_unet2d_state_dict, unet2d_config
from diffuse.nn import UNet


def diffusers_twin(model: UNet) -> torch.nn.Module:
    """The ``UNet2DModel`` equivalent to ``model``, holding ``model``'s weights."""
    from diffusers import UNet2DModel

    twin = UNet2DModel(**unet2d_arguments(model))
    twin.load_state_dict(to_unet2d_state_dict(model), strict=True)
    return twin.to(next(model.parameters()).device).eval()


def unet2d_arguments(model: UNet) -> dict:
    """The ``UNet2DModel(...)`` arguments of the network ``model`` is; raises
    :class:`~diffuse.errors.InexpressibleError` for what ``UNet2DModel`` cannot express."""
    return unet2d_config(model.config)
