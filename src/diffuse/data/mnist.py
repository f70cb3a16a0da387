"""MNIST (LeCun et al. 1998) and Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from IDX files.

Both are 28x28 grey images in 10 classes, 60,000 for training and 10,000 for testing,
published as ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``. The files may be
gzip-compressed or not, and may be named ``train-images.idx3-ubyte`` (with a dot) as in
some copies. See :mod:`diffuse.data.locate` for where they are looked for.

Sizes: ``image_size`` None or 28 keeps 28x28; 32 pads 2 black pixels on every side
(-1 after scaling; the DDPM papers train 32x32 models on such padded digits); any other
size resizes with :func:`diffuse.data.resizing.fit_arrays`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffuse.data.dataset import ArraySource, LoadedImages
from diffuse.data.download import RemoteFile
from diffuse.data.idx import read_idx
from diffuse.data.locate import DataSource, locate_or_download
from diffuse.data.resizing import fit_arrays
from diffuse.errors import DataError

NATIVE_SIZE = 28
PADDED_SIZE = 32

_FASHION_HOMES = (
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
_MNIST_HOMES = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# Published MD5 digests of the gzip files (the Fashion-MNIST README; torchvision's MNIST list).
_FASHION_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGIT_CLASSES = tuple(str(k) for k in range(10))

_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
_KINDS = ("images-idx3", "labels-idx1")


def _idx_source(
    name: str, title: str, homes: tuple[str, ...], digests: dict[str, str], how_to_get: str = ""
) -> DataSource:
    remote_files = tuple(
        RemoteFile(file, tuple(home + file for home in homes), md5) for file, md5 in digests.items()
    )
    wanted = "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"
    return DataSource(name, title, wanted, remote_files, how_to_get)


IDX_SETS = {
    "fashion-mnist": (
        _idx_source(
            "fashion-mnist",
            "Fashion-MNIST",
            _FASHION_HOMES,
            _FASHION_MD5,
            "On Debian/Ubuntu: `apt install dataset-fashion-mnist` "
            "(installs /usr/share/datasets/fashion-mnist/).",
        ),
        FASHION_CLASSES,
    ),
    "mnist": (_idx_source("mnist", "MNIST", _MNIST_HOMES, _MNIST_MD5), DIGIT_CLASSES),
}
"""Name -> (where to find it, class names)."""


def find_idx_pair(folder: Path, split: str) -> tuple[Path, Path] | None:
    """The (images, labels) files of ``split`` in ``folder``, or None if either is missing."""
    found = []
    for kind in _KINDS:
        stem, suffix = kind.split("-")
        prefix = _SPLIT_PREFIX[split]
        names = [f"{prefix}-{stem}-{suffix}-ubyte", f"{prefix}-{stem}.{suffix}-ubyte"]
        paths = [folder / n for name in names for n in (name, name + ".gz")]
        match = next((p for p in paths if p.is_file()), None)
        if match is None:
            return None
        found.append(match)
    return found[0], found[1]


def load_idx_set(
    name: str,
    split: str,
    image_size: int | None,
    data_dir: str | Path | None,
    download: bool,
) -> LoadedImages:
    """Read the ``split`` of ``name`` ("fashion-mnist" or "mnist")."""
    source, classes = IDX_SETS[name]
    remote = tuple(r for r in source.remote_files if r.name.startswith(_SPLIT_PREFIX[split]))
    images_path, labels_path = locate_or_download(
        source, data_dir, download, lambda folder: find_idx_pair(folder, split), remote
    )
    images, labels = read_idx(images_path), read_idx(labels_path)
    _check_pair(images, labels, images_path, labels_path, len(classes))
    pixels = images[:, :, :, None]
    if image_size == PADDED_SIZE:
        border = (PADDED_SIZE - NATIVE_SIZE) // 2
        pixels = np.pad(pixels, ((0, 0), (border, border), (border, border), (0, 0)))
    elif image_size is not None:
        pixels = fit_arrays(pixels, image_size)
    return LoadedImages(ArraySource(pixels), labels, classes, str(images_path.parent))


def _check_pair(images, labels, images_path: Path, labels_path: Path, num_classes: int) -> None:
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(
            f"{images_path}: expected uint8 images [N, 28, 28], got {images.dtype} "
            f"{list(images.shape)}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{labels_path}: expected uint8 labels [N], got {list(labels.shape)}")
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels: the two files are from different sets."
        )
    if labels.size and labels.max() >= num_classes:
        raise DataError(f"{labels_path}: label {labels.max()} is not a class in 0..9")
