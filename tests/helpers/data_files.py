"""Data files written by tests: IDX and CIFAR-10 bytes, archives, images."""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file: 0, 0, type code, ndim, big-endian sizes, big-endian values."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int16): 0x0B, np.dtype(np.float32): 0x0D}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    sizes = np.array(array.shape, dtype=">u4").tobytes()
    return header + sizes + array.astype(array.dtype.newbyteorder(">")).tobytes()


def fake_images(n: int, seed: int, shape=(28, 28)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def write_idx_split(folder: Path, split: str, n: int, seed: int = 0, gz: bool = True):
    """Write a fake MNIST-format split; return (images, labels)."""
    prefix = {"train": "train", "test": "t10k"}[split]
    images = fake_images(n, seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
        data = idx_bytes(array)
        name = f"{prefix}-{kind}-ubyte"
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return images, labels


def cifar_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    """CIFAR-10 binary records: label byte, then the R, G and B planes."""
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return np.concatenate([labels[:, None].astype(np.uint8), planes], axis=1).tobytes()


def write_cifar_folder(folder: Path, per_batch: int = 3):
    """Fake cifar-10-batches-bin; return (train images, train labels, test images, labels)."""
    batches = folder / "cifar-10-batches-bin"
    batches.mkdir(parents=True)
    rng = np.random.default_rng(5)
    names = [f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]
    arrays = []
    for name in names:
        images = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).astype(np.uint8)
        (batches / name).write_bytes(cifar_bytes(images, labels))
        arrays.append((images, labels))
    train_x = np.concatenate([a[0] for a in arrays[:5]])
    train_y = np.concatenate([a[1] for a in arrays[:5]])
    return train_x, train_y, arrays[5][0], arrays[5][1]


def tar_gz(source_folder: Path, archive: Path) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source_folder, arcname=source_folder.name)


def save_image(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path)


def assert_box_means(got: np.ndarray, means: np.ndarray) -> None:
    """PIL's BOX filter in 8-bit fixed point: within 1 of the exact mean, 1/2 on average."""
    error = np.abs(got.astype(np.float64) - means)
    assert error.max() <= 1.0 and error.mean() <= 0.5


def scaled(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels.astype(np.float32) / 127.5 - 1.0)
