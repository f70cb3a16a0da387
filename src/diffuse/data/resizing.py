"""Bringing single images to a data set's square size and channel count.

The resizing follows ADM's data pipeline (Dhariwal & Nichol 2021, `image_datasets.py` of
guided-diffusion): halve the image with a BOX filter while its smaller side is at least
twice the target, then resize with BICUBIC so the smaller side equals the target, then
cut the centred square. The BOX halvings keep downsampling from aliasing; the one
bicubic step lands on the exact size.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# PIL modes that hold one grey channel. Palette ("P") images count as colour: their
# palette may hold any colour, and telling a grey palette apart is not worth the surprise.
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L"})


def center_crop_resize(image: Image.Image, size: int) -> Image.Image:
    """Resize ``image`` so its smaller side is ``size``, then cut the centred square.

    BOX halvings while the smaller side is >= 2 * size, one BICUBIC resize to the exact
    size, then a centre crop: the recipe of ADM's ``center_crop_arr``.
    """
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(side // 2 for side in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    new_size = tuple(round(side * scale) for side in image.size)
    if new_size != image.size:
        image = image.resize(new_size, resample=Image.BICUBIC)
    width, height = image.size
    left, top = (width - size) // 2, (height - size) // 2
    return image.crop((left, top, left + size, top + size))


def describe_fit(width: int, height: int, size: int) -> str | None:
    """What :func:`center_crop_resize` does to a ``width`` x ``height`` image, in words
    ("centre-cropped to 16x16 and resized to 8x8"), or None when it keeps it as it is.

    It resizes before it crops; the words crop first, in the image's own pixels, which
    cuts the same centred square.
    """
    side = min(width, height)
    steps = []
    if width != height:
        steps.append(f"centre-cropped to {side}x{side}")
    if side != size:
        steps.append(f"{'shrunk' if side > size else 'enlarged'} to {size}x{size}")
    return " and ".join(steps) or None


def to_mode(image: Image.Image, grey: bool) -> Image.Image:
    """Convert ``image`` to 8-bit grey ("L") or to "RGB".

    16-bit grey is scaled to 8 bits (value / 257) rather than clipped. Alpha is dropped
    without compositing and palettes are expanded, as ADM's ``convert("RGB")`` does.
    """
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    target = "L" if grey else "RGB"
    return image if image.mode == target else image.convert(target)


def fit_image(image: Image.Image, size: int, grey: bool) -> np.ndarray:
    """``image`` as a uint8 array [size, size, C] (C = 1 if ``grey`` else 3)."""
    fitted = center_crop_resize(to_mode(image, grey), size)
    array = np.asarray(fitted, dtype=np.uint8)
    return array[:, :, None] if grey else array


def fit_arrays(images: np.ndarray, size: int) -> np.ndarray:
    """Resize a uint8 stack [N, H, W, C] (C = 1 or 3) with :func:`center_crop_resize`."""
    n, height, width, channels = images.shape
    if height == width == size:
        return images
    grey = channels == 1
    out = np.empty((n, size, size, channels), dtype=np.uint8)
    for i, array in enumerate(images):
        image = Image.fromarray(array[:, :, 0] if grey else array)
        out[i] = fit_image(image, size, grey)
    return out
