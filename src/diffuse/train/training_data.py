"""The training images of a run, checked against the network that will learn them."""

from __future__ import annotations

from collections.abc import Callable

from diffuse.data import ImageDataset, load_dataset
from diffuse.data.catalog import canonical_name
from diffuse.data.survey import survey_data
from diffuse.errors import DataError
from diffuse.nn import ClassifierConfig
from diffuse.train.autoconfig import PADDED_SIZES, fitting_notes
from diffuse.train.spec import RunSpec


def needs_labels(spec: RunSpec) -> bool:
    """Whether the run's network takes (or predicts) class labels."""
    return spec.task == "classifier" or getattr(spec.model, "num_classes", None) is not None


def load_training_data(
    spec: RunSpec,
    split: str = "train",
    *,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
) -> ImageDataset:
    """The ``split`` of the run's data set at the network's size, labelled if needed
    (``progress``: a bar while a folder's images are decoded, in ``spec.train.workers``
    processes; ``report``, e.g. ``print``: one line per way the images are cropped,
    resized or padded to the network's size).

    A named data set must have the network's image size, be padded to it (28 -> 32) or be
    shrunk to it by a whole factor (28 -> 14: each pixel the mean of a 2x2 block, as the
    64x64 ImageNet of ADM was made); it is never enlarged. A folder of images is
    centre-cropped and resized to the network's size.
    """
    size = spec.model.image_size
    options = dict(
        split=split,
        data_dir=spec.data.data_dir,
        class_cond=needs_labels(spec),
        download=spec.data.download,
        progress=progress,
        workers=spec.train.data_workers,
    )
    survey = survey_data(spec.data.name)
    if survey.folder is not None:
        dataset = load_dataset(spec.data.name, image_size=size, survey=survey.folder, **options)
    else:
        dataset = load_dataset(spec.data.name, **options)
        native = dataset.image_size
        if native != size:
            if (native, size) not in PADDED_SIZES and not (size < native and native % size == 0):
                raise DataError(
                    f"data set {dataset.name!r} has {native}x{native} images but the network "
                    f"expects {size}x{size}; choose a preset of that size or set "
                    f"model.image_size={native} (or a whole fraction of it, e.g. {native // 2})"
                )
            dataset = load_dataset(spec.data.name, image_size=size, **options)
    check_compatible(spec, dataset)
    for note in fitting_notes(survey, size) if report else ():
        report(f"data: {note}")
    return dataset


def load_validation_data(spec: RunSpec) -> ImageDataset | None:
    """The held-out (test) split of a named data set, None for a folder of images."""
    if canonical_name(spec.data.name) is None:
        return None
    return load_training_data(spec, split="test")


def check_compatible(spec: RunSpec, dataset: ImageDataset) -> None:
    """Raise :class:`DataError` when the images or labels do not fit the network."""
    model = spec.model
    if len(dataset) == 0:
        raise DataError(f"data set {dataset.name!r} holds no images")
    if dataset.random_flip:
        raise DataError(
            f"data set {dataset.name!r} flips its images as it reads them (random_flip=True); "
            "the trainer flips each step's batch itself, the same on resuming and with any "
            "number of workers: pass the set unflipped and set train.random_flip=true"
        )
    if dataset.image_size != model.image_size:
        raise DataError(
            f"data set {dataset.name!r} has {dataset.image_size}x{dataset.image_size} images, "
            f"the network expects {model.image_size}x{model.image_size}"
        )
    if dataset.channels != model.in_channels:
        raise DataError(
            f"data set {dataset.name!r} has {dataset.channels} channel(s) per image, the "
            f"network expects {model.in_channels}; set model.in_channels={dataset.channels} "
            "(and model.out_channels to match)"
        )
    if not needs_labels(spec):
        return
    classes = model.out_channels if isinstance(model, ClassifierConfig) else model.num_classes
    field = "out_channels" if isinstance(model, ClassifierConfig) else "num_classes"
    if dataset.num_classes == 0:
        raise DataError(
            f"the network is class-conditional but data set {dataset.name!r} has no labels; "
            "put the images in one sub-folder per class, or train an unconditional model "
            "(model.num_classes=null, model.null_class=false)"
        )
    if dataset.num_classes != classes:
        raise DataError(
            f"data set {dataset.name!r} has {dataset.num_classes} classes, the network "
            f"{classes}; set model.{field}={dataset.num_classes}"
        )
