"""``load_dataset``: one entry point for every named data set and for folders of images."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from diffuse.data.cifar import load_cifar10
from diffuse.data.dataset import ImageDataset, LoadedImages
from diffuse.data.digits import load_digits
from diffuse.data.folder import FolderSurvey, load_folder
from diffuse.data.mnist import load_idx_set
from diffuse.errors import ConfigError, is_int_at_least

DATASET_NAMES = ("digits", "fashion-mnist", "mnist", "cifar10")
"""The named data sets; anything else is taken as a folder of images."""

SPLITS = ("train", "test")
FOLDER_SPLIT = "all"


def load_dataset(
    name_or_path: str | os.PathLike,
    *,
    split: str = "train",
    image_size: int | None = None,
    data_dir: str | os.PathLike | None = None,
    class_cond: bool = True,
    random_flip: bool = False,
    download: bool = True,
    in_memory: bool | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    workers: int = 0,
    survey: FolderSurvey | None = None,
) -> ImageDataset:
    """Load a named data set or a folder of images as an :class:`ImageDataset`.

    Args:
        name_or_path: "digits" (scikit-learn's 8x8 digits, embedded), "fashion-mnist",
            "mnist", "cifar10" (case, "-" and "_" ignored), or a folder of images. A
            folder that shares a name with a data set is given as "./digits".
        split: "train" or "test" for a named set. A folder has no split: it must be
            left at "train" and the set's ``split`` reads "all".
        image_size: side of the square images; None keeps the native size (8, 28, 32;
            for a folder the smallest image side). Fashion-MNIST/MNIST at 32 are padded
            with black, every other change of size resizes.
        data_dir: a folder searched first for a named set's files, and where they are
            downloaded (see :mod:`diffuse.data.locate`).
        class_cond: keep the labels; False makes the set unlabelled (labels -1).
        random_flip: flip images left-right at random when read.
        download: allow downloading a named set that is found nowhere locally.
        in_memory: for folders, decode every image once up front (True) or on every read
            (False); None decides by size (up to 1 GiB of pixels in memory).
        generator: draws the random flips when no generator is passed per call.
        progress: show a progress bar while a folder's images are decoded.
        workers: processes that decode a folder's images into memory (0: this one).
        survey: the folder's :class:`~diffuse.data.folder.FolderSurvey` when it was made
            already (its images listed and their headers read), so it is not made again.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if image_size is not None and not is_int_at_least(image_size, 1):
        raise ConfigError(f"image_size must be a positive integer or None, got {image_size!r}")
    name = canonical_name(name_or_path)
    if name is None:
        if split != "train":
            raise ConfigError(
                f"a folder of images has no {split!r} split: load the folder that holds "
                "those images instead"
            )
        folder = survey if survey is not None else Path(name_or_path)
        loaded = load_folder(folder, image_size, class_cond, in_memory, progress, workers)
        name, split = str(name_or_path), FOLDER_SPLIT
    else:
        loaded = _load_named(name, split, image_size, data_dir, download)
    return ImageDataset(
        loaded.source,
        loaded.labels if class_cond else None,
        name=name,
        split=split,
        class_names=loaded.class_names,
        random_flip=random_flip,
        generator=generator,
        origin=loaded.origin,
    )


def canonical_name(name_or_path: str | os.PathLike) -> str | None:
    """The data set name ``name_or_path`` stands for, or None if it is a path.

    Raises ConfigError listing the known names for a bare word that is neither a known
    name nor an existing path.
    """
    if not isinstance(name_or_path, str):
        return None
    key = name_or_path.lower().replace("-", "").replace("_", "")
    for name in DATASET_NAMES:
        if key == name.replace("-", ""):
            return name
    looks_like_path = os.sep in name_or_path or name_or_path.startswith((".", "~"))
    if looks_like_path or Path(name_or_path).exists():
        return None
    raise ConfigError(
        f"unknown data set {name_or_path!r}: known names are {', '.join(DATASET_NAMES)}; "
        "or give the path of a folder of images"
    )


def _load_named(
    name: str, split: str, image_size: int | None, data_dir, download: bool
) -> LoadedImages:
    if name == "digits":
        return load_digits(split, image_size)
    if name == "cifar10":
        return load_cifar10(split, image_size, data_dir, download)
    return load_idx_set(name, split, image_size, data_dir, download)
