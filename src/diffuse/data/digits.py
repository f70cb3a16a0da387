"""scikit-learn's 8x8 handwritten digits: the embedded default, nothing to download.

1,797 grey images of the digits 0..9 (the UCI optical-recognition set as shipped inside
scikit-learn, ``sklearn.datasets.load_digits``), with values 0..16 scaled to 0..255 by
``round(v * 255 / 16)``.

Split (fixed, independent of any random generator or library version): image i belongs
to the test split when i % 6 == 5, else to train, giving 1,498 training and 299 test
images with every class in both.
"""

from __future__ import annotations

import numpy as np

from diffuse.data.dataset import ArraySource, LoadedImages
from diffuse.data.mnist import DIGIT_CLASSES
from diffuse.data.resizing import fit_arrays

NATIVE_SIZE = 8
TEST_EVERY = 6
MAX_VALUE = 16


def split_indices(count: int, split: str) -> np.ndarray:
    """Indices of ``split`` ("train" or "test") among ``count`` digits (see module docstring)."""
    is_test = np.arange(count) % TEST_EVERY == TEST_EVERY - 1
    return np.flatnonzero(is_test if split == "test" else ~is_test)


def load_digits(split: str, image_size: int | None) -> LoadedImages:
    """The ``split`` of the digits as grey uint8 (resized when ``image_size`` is not 8)."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    keep = split_indices(len(bunch.target), split)
    pixels = np.rint(bunch.images[keep] * (255 / MAX_VALUE)).astype(np.uint8)[:, :, :, None]
    if image_size is not None:
        pixels = fit_arrays(pixels, image_size)
    return LoadedImages(
        ArraySource(pixels), bunch.target[keep], DIGIT_CLASSES, "scikit-learn (load_digits)"
    )
