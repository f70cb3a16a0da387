"""The data set every loader returns: square images as tensors in [-1, 1] with labels.

Pixels are stored as uint8 and scaled on the way out, x = p / 127.5 - 1, so 0 maps to -1
and 255 to 1 (the data scaling of Ho et al. 2020, section 3.3). Flips are drawn from a
``torch.Generator`` given per call or at construction, never from the global RNG.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from diffuse.data.readahead import read_ahead
from diffuse.data.resizing import fit_image
from diffuse.errors import DataError

UNLABELLED = -1
"""The label of every image in a set without classes."""

_FLIP_SEED = 0

DECODE_CHUNK = 256
"""Images a worker decodes per task when a folder is read into memory."""


class ImageSource(Protocol):
    """Where a data set's pixels come from: N square uint8 images of one size and mode."""

    image_size: int
    channels: int

    def __len__(self) -> int: ...

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        """The images at ``indices`` as uint8 [n, C, H, W]."""
        ...


class ArraySource:
    """Images held in memory.

    Args:
        images: uint8 array [N, H, W, C] with H == W and C in {1, 3}.
    """

    def __init__(self, images: np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != images.shape[2]:
            raise DataError(
                f"images must be uint8 [N, H, W, C] with H == W, got {images.dtype} "
                f"{list(images.shape)}"
            )
        if images.shape[3] not in (1, 3):
            raise DataError(f"images must have 1 or 3 channels, got {images.shape[3]}")
        pixels = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        self._pixels = torch.from_numpy(pixels if pixels.flags.writeable else pixels.copy())
        self.image_size = images.shape[1]
        self.channels = images.shape[3]

    def __len__(self) -> int:
        return self._pixels.shape[0]

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        return self._pixels.index_select(0, torch.as_tensor(indices, dtype=torch.long))


class FolderSource:
    """Image files decoded on demand: for folders too large to hold in memory.

    Args:
        paths: the image files, in data set order.
        image_size: side of the square every image is fitted to (see ``images.fit_image``).
        grey: decode to one grey channel instead of RGB.
    """

    def __init__(self, paths: Sequence[Path], image_size: int, grey: bool):
        self.paths = list(paths)
        self.image_size = image_size
        self.channels = 1 if grey else 3
        self._grey = grey

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        arrays = [decode_image(self.paths[i], self.image_size, self._grey) for i in indices]
        stacked = np.stack(arrays) if arrays else np.empty((0, *self._shape_hwc()), np.uint8)
        return torch.from_numpy(stacked.transpose(0, 3, 1, 2).copy())

    def load_all(self, progress: bool = True, workers: int = 0) -> ArraySource:
        """Decode every image into an :class:`ArraySource`, in ``workers`` processes
        (0 or 1: this one; see :func:`diffuse.data.readahead.read_ahead`), with a
        progress bar when ``progress``."""
        out = np.empty((len(self.paths), *self._shape_hwc()), dtype=np.uint8)
        starts = range(0, len(self.paths), DECODE_CHUNK)
        chunks = [
            list(range(start, min(len(self.paths), start + DECODE_CHUNK))) for start in starts
        ]
        # One worker would only add copies: this process waits for the images anyway.
        workers = workers if len(chunks) > 1 and workers > 1 else 0
        bar = tqdm(total=len(self.paths), desc="decoding images", unit="img", disable=not progress)
        with bar, contextlib.closing(read_ahead(self.read, chunks, workers)) as decoded:
            for chunk, pixels in zip(chunks, decoded, strict=True):
                out[chunk[0] : chunk[-1] + 1] = pixels.permute(0, 2, 3, 1).numpy()
                bar.update(len(chunk))
        return ArraySource(out)

    def _shape_hwc(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, self.channels)


class LoadedImages(NamedTuple):
    """What a loader read: pixels, labels (None if unlabelled), class names, origin."""

    source: ImageSource
    labels: np.ndarray | None
    class_names: tuple[str, ...]
    origin: str


def decode_image(path: Path, size: int, grey: bool) -> np.ndarray:
    """Read one image file as uint8 [size, size, C]; a bad file raises DataError naming it."""
    try:
        with Image.open(path) as image:
            image.load()
            return fit_image(image, size, grey)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(
            f"cannot read image {path}: {err}. The file is truncated or corrupt: "
            "replace or delete it."
        ) from err


class ImageDataset(Dataset):
    """Square images in [-1, 1] with int64 labels; a ``torch.utils.data.Dataset``.

    Args:
        source: the pixels (:class:`ArraySource` in memory, :class:`FolderSource` lazy).
        labels: int64-compatible [N], class indices in [0, len(class_names)), or None for
            an unlabelled set (every label is then ``UNLABELLED`` = -1).
        name: the data set's name ("digits", "fashion-mnist", a folder path, ...).
        split: "train", "test", or "all" for a folder.
        class_names: one name per class; empty for an unlabelled set.
        random_flip: flip each image horizontally with probability 1/2 when it is read.
        generator: draws the flips when no generator is passed per call; None uses a
            private generator seeded with 0 (the global RNG is never touched).
        origin: where the data was read from (a path), for logs and run records.

    Attributes:
        name, split, image_size, channels, num_classes (0 if unlabelled), class_names
        (tuple of str), labels (int64 tensor [N]), random_flip, in_memory, origin.
    """

    def __init__(
        self,
        source: ImageSource,
        labels: np.ndarray | torch.Tensor | None,
        *,
        name: str,
        split: str,
        class_names: Sequence[str] = (),
        random_flip: bool = False,
        generator: torch.Generator | None = None,
        origin: str = "",
    ):
        self.source = source
        self.name = name
        self.split = split
        self.image_size = source.image_size
        self.channels = source.channels
        self.class_names = tuple(class_names) if labels is not None else ()
        self.num_classes = len(self.class_names)
        self.labels = _check_labels(labels, len(source), self.num_classes, name)
        self.random_flip = random_flip
        self.generator = generator
        self.origin = origin

    @classmethod
    def from_arrays(
        cls,
        images: np.ndarray,
        labels: np.ndarray | None = None,
        *,
        name: str = "arrays",
        split: str = "train",
        class_names: Sequence[str] | None = None,
        random_flip: bool = False,
        generator: torch.Generator | None = None,
    ) -> ImageDataset:
        """A set from a uint8 array [N, H, W, C]; classes default to "0".."K-1"."""
        if labels is not None and class_names is None:
            count = int(np.max(labels)) + 1 if len(labels) else 0
            class_names = [str(k) for k in range(count)]
        return cls(
            ArraySource(images),
            labels,
            name=name,
            split=split,
            class_names=class_names or (),
            random_flip=random_flip,
            generator=generator,
        )

    @property
    def in_memory(self) -> bool:
        """True when the pixels are held in memory (reads are cheap indexing)."""
        return isinstance(self.source, ArraySource)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.get(index)

    def get(
        self, index: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image ``index`` as float32 [C, H, W] in [-1, 1] and its label (0-dim int64)."""
        x, y = self.batch([self._check_index(index)], generator)
        return x[0], y[0]

    def batch(
        self, indices: Sequence[int] | torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images at ``indices`` as float32 [n, C, H, W] in [-1, 1] and labels int64 [n].

        Flipped at random when ``random_flip``; the trainer's fast path for any set.
        """
        indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        x = to_unit_range(self.source.read(indices.tolist()))
        if self.random_flip:
            x = random_flip(x, self._own_generator() if generator is None else generator)
        return x, self.labels[indices]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole set, unflipped: x float32 [N, C, H, W] in [-1, 1], y int64 [N].

        Holds 4 bytes per value: meant for small sets that the trainer indexes directly
        (apply :func:`random_flip` to each batch yourself).
        """
        return to_unit_range(self.source.read(range(len(self)))), self.labels.clone()

    def uint8(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """Images as uint8 [n, H, W, C] at the set's size, unflipped (all when None).

        For FID reference statistics and nearest-neighbour searches.
        """
        chosen = range(len(self)) if indices is None else [int(i) for i in indices]
        return np.ascontiguousarray(self.source.read(chosen).permute(0, 2, 3, 1).numpy())

    def __repr__(self) -> str:
        classes = f"{self.num_classes} classes" if self.num_classes else "unlabelled"
        return (
            f"ImageDataset({self.name!r}, split={self.split!r}, {len(self)} images "
            f"{self.channels}x{self.image_size}x{self.image_size}, {classes})"
        )

    def _check_index(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        return index % len(self)

    def _own_generator(self) -> torch.Generator:
        if self.generator is None:
            self.generator = torch.Generator().manual_seed(_FLIP_SEED)
        return self.generator


def to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to float32 in [-1, 1]: p / 127.5 - 1."""
    return pixels.to(torch.float32) / 127.5 - 1.0


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image of a batch [n, C, H, W] left-right with probability 1/2.

    One uniform draw per image from ``generator`` (required: the global RNG is not used).
    """
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _check_labels(labels, count: int, num_classes: int, name: str) -> torch.Tensor:
    if labels is None:
        return torch.full((count,), UNLABELLED, dtype=torch.int64)
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64).reshape(-1)
    if labels.shape[0] != count:
        raise DataError(f"{name}: {labels.shape[0]} labels for {count} images")
    if count and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{name}: labels must lie in [0, {num_classes}) for {num_classes} class names, "
            f"got [{int(labels.min())}, {int(labels.max())}]"
        )
    return labels
