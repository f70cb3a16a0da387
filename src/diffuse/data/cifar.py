"""CIFAR-10 (Krizhevsky 2009) from its binary-format release, never the pickled one.

The binary release ``cifar-10-binary.tar.gz`` holds ``cifar-10-batches-bin/`` with
``data_batch_1.bin`` .. ``data_batch_5.bin`` (training, 50,000 images) and
``test_batch.bin`` (10,000). Each record is 3073 bytes: the label (0..9), then 1024 red,
1024 green and 1024 blue bytes of a 32x32 image in row-major order. Records are read
from the extracted folder if there is one, else straight from the archive (nothing is
extracted, no pickle is ever loaded). ``image_size`` other than 32 resizes.
"""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path

import numpy as np

from diffuse.data.dataset import ArraySource, LoadedImages
from diffuse.data.download import RemoteFile
from diffuse.data.locate import DataSource, locate_or_download
from diffuse.data.resizing import fit_arrays
from diffuse.errors import DataError

ARCHIVE = "cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin"
SIZE = 32
RECORD_BYTES = 1 + 3 * SIZE * SIZE
CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
SPLIT_FILES = {
    "train": tuple(f"data_batch_{k}.bin" for k in range(1, 6)),
    "test": ("test_batch.bin",),
}

CIFAR10 = DataSource(
    name="cifar10",
    title="CIFAR-10 (binary version)",
    wanted=f"{FOLDER}/ or {ARCHIVE}",
    remote_files=(
        # Published on the CIFAR page (binary version, "suitable for C programs").
        RemoteFile(
            ARCHIVE,
            ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
            "c32a1d4ab5d03f1284b67883e8d87530",
        ),
    ),
)


def find_cifar(folder: Path) -> Path | None:
    """The extracted batches folder or the archive in ``folder``, or None."""
    for candidate in (folder / FOLDER, folder):
        if (candidate / "test_batch.bin").is_file():
            return candidate
    archive = folder / ARCHIVE
    return archive if archive.is_file() else None


def load_cifar10(
    split: str, image_size: int | None, data_dir: str | Path | None, download: bool
) -> LoadedImages:
    """Read the ``split`` of CIFAR-10 as 32x32 RGB (resized when ``image_size`` differs)."""
    location = locate_or_download(CIFAR10, data_dir, download, find_cifar)
    names = SPLIT_FILES[split]
    if location.is_dir():
        blobs = [(location / name, _read_file(location / name)) for name in names]
    else:
        blobs = _read_from_archive(location, names)
    parts = [parse_records(blob, path) for path, blob in blobs]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if image_size is not None:
        images = fit_arrays(images, image_size)
    return LoadedImages(ArraySource(images), labels, CLASSES, str(location))


def parse_records(blob: bytes, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Records of one batch file: images uint8 [n, 32, 32, 3] and labels int64 [n]."""
    if not blob or len(blob) % RECORD_BYTES:
        raise DataError(
            f"{path} is truncated or not a CIFAR-10 binary batch: {len(blob)} bytes is not "
            f"a whole number of {RECORD_BYTES}-byte records. Download it again."
        )
    records = np.frombuffer(blob, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CLASSES):
        raise DataError(f"{path}: label {labels.max()} is not a class in 0..9 (corrupt file)")
    images = records[:, 1:].reshape(-1, 3, SIZE, SIZE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _read_file(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"{path} is missing from the CIFAR-10 folder {path.parent}")
    return path.read_bytes()


def _read_from_archive(archive: Path, names: tuple[str, ...]) -> list[tuple[Path, bytes]]:
    """Read the members named ``names`` (matched by base name) without extracting anything."""
    blobs = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                base = Path(member.name).name
                if member.isfile() and base in names and base not in blobs:
                    blobs[base] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"{archive} is truncated or corrupt ({err}). Delete it and download it again."
        ) from err
    missing = [name for name in names if name not in blobs]
    if missing:
        raise DataError(f"{archive} lacks {', '.join(missing)}: not the CIFAR-10 binary archive")
    return [(archive / name, blobs[name]) for name in names]
