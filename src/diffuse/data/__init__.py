"""Image data sets: where they are found, how they are read, and how they reach the model.

``load_dataset(name_or_path, ...)`` returns an :class:`ImageDataset` of square images in
[-1, 1] with int64 labels (-1 when unlabelled). Named sets: "digits" (embedded in
scikit-learn), "fashion-mnist" and "mnist" (IDX files), "cifar10" (binary release); any
other argument is a folder of images. See each module for its rules.
"""

from diffuse.data.catalog import DATASET_NAMES, load_dataset
from diffuse.data.dataset import (
    UNLABELLED,
    ArraySource,
    FolderSource,
    ImageDataset,
    random_flip,
    to_unit_range,
)
from diffuse.data.resizing import center_crop_resize

__all__ = [
    "DATASET_NAMES",
    "UNLABELLED",
    "ArraySource",
    "FolderSource",
    "ImageDataset",
    "center_crop_resize",
    "load_dataset",
    "random_flip",
    "to_unit_range",
]
