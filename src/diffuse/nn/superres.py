"""The upsampler of ADM (Dhariwal & Nichol 2021, appendix A; after Nichol & Dhariwal 2021,
section 6 and Saharia et al. 2021): the U-Net conditioned on a low-resolution image.

The low-resolution image is resized bilinearly to the output size and concatenated to the
noisy input along the channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from diffuse.errors import ConfigError, DataError
from diffuse.nn.network_config import SuperResConfig
from diffuse.nn.unet import UNet


class SuperResUNet(UNet):
    """``model(x, t, y=None, low_res=...)``: a :class:`UNet` also given ``low_res``.

    config: the architecture (:class:`SuperResConfig`); ``in_channels`` counts the channels
            of ``x`` alone, the first convolution sees twice as many.

    ``low_res`` [N, in_channels, h, w] is the low-resolution image in [-1, 1], of size
    ``low_res_size`` when the configuration sets one.
    """

    def __init__(self, config: SuperResConfig):
        super().__init__(config, stem_channels=2 * config.in_channels)

    @property
    def low_res_size(self) -> int | None:
        """Height and width of the low-resolution input, None if any size is accepted."""
        return self.config.low_res_size

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        low_res: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self.check_input(x, t)
        if low_res is None:
            raise ConfigError("the upsampler needs the low-resolution image: pass low_res=")
        size = self.low_res_size
        if (
            low_res.dim() != 4
            or low_res.shape[:2] != x.shape[:2]
            or (size is not None and tuple(low_res.shape[2:]) != (size, size))
        ):
            expected = f"{size}, {size}" if size is not None else "h, w"
            raise DataError(
                f"low_res must have shape [{x.shape[0]}, {self.in_channels}, {expected}], "
                f"got {tuple(low_res.shape)}"
            )
        upsampled = F.interpolate(
            low_res.to(x.dtype), size=x.shape[-2:], mode="bilinear", align_corners=False
        )
        return self.denoise(torch.cat([x, upsampled], dim=1), t, y)
