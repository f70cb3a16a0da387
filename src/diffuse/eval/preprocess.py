"""Turn uint8 images into the FID Inception's input, as the published numbers were made.

TensorFlow's Inception graph resized its input with the legacy ``resize_bilinear``
(``align_corners=False``, no half-pixel centres): output pixel ``i`` samples the input at
``i * in_size / 299``, clamped at the border. NVIDIA's TorchScript port reproduces this
with ``affine_grid`` + ``grid_sample`` (bilinear, border padding, ``align_corners=False``)
and an affine translation of ``1/in_size - 1/299`` in normalised coordinates; we do the
same. Grey images are resized as one channel and then copied to three, which is the
same as copying first. Finally pixels are mapped from 0..255 by ``(x - 128) / 128``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from diffuse.errors import DataError
from diffuse.eval.inception import INPUT_SIZE

# What :func:`to_inception_input` does, in words: printed and recorded beside the metrics.
PREPROCESSING = {
    "resize": "bilinear, TensorFlow 1 legacy alignment (align_corners=False, no half-pixel "
    "centres, edges clamped)",
    "size": INPUT_SIZE,
    "pixels": "(x - 128) / 128",
    "grey": "copied to 3 channels",
}


def resize_like_tensorflow(x: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """Bilinear resize of float [N, C, H, W] to [N, C, size, size], TF1-legacy alignment."""
    n, c, height, width = x.shape
    if (height, width) == (size, size):
        return x
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = 1.0 / width - 1.0 / size
    theta[:, 1, 2] = 1.0 / height - 1.0 / size
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def check_images(images, what: str = "images") -> None:
    """Refuse anything but uint8 [N, H, W] or [N, H, W, C] with C in (1, 3) and N >= 1.

    ``images`` is a numpy array (memory maps included) or a torch tensor; ``what`` names
    it in the error.
    """
    shape = tuple(images.shape)
    dtype = str(images.dtype).removeprefix("torch.")
    if dtype != "uint8":
        raise DataError(
            f"{what} have dtype {dtype}; the FID Inception takes uint8 pixels 0..255 "
            "(convert model outputs in [-1, 1] with ((x + 1) * 127.5).round().clip(0, 255)"
            ".astype('uint8'))"
        )
    if len(shape) == 4 and shape[-1] not in (1, 3) and shape[1] in (1, 3):
        raise DataError(
            f"{what} have shape {list(shape)}, which looks channels-first [N, C, H, W]; "
            "pass channels-last [N, H, W, C] (numpy: images.transpose(0, 2, 3, 1))"
        )
    if len(shape) not in (3, 4) or (len(shape) == 4 and shape[-1] not in (1, 3)):
        raise DataError(
            f"{what} have shape {list(shape)}; expected [N, H, W] (grey) or [N, H, W, C] "
            "with C = 1 (grey) or 3 (RGB)"
        )
    if shape[0] == 0 or min(shape[1:3]) == 0:
        raise DataError(f"{what} are empty (shape {list(shape)})")


def to_inception_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W] or [N, H, W, C] -> float32 [N, 3, 299, 299] in [-1, 127/128]."""
    check_images(images)
    x = images.to(torch.float32)
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    x = resize_like_tensorflow(x)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return (x - 128.0) / 128.0
