"""Are generated digits the digits that were asked for? The main job's quality measure.

A multinomial logistic regression (scikit-learn) is fitted to the real 8x8 digits of the
train split, on sklearn's own 0..16 pixel scale. Generated samples of each class are
brought to that scale and classified; the recognition rate is the fraction classified
as the class they were generated for. For scale, the same classifier's accuracy on the
held-out real digits (the test split) is reported too: a perfect generator would score
about that.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffuse.checkpoint import load_checkpoint
from diffuse.data.digits import MAX_VALUE, split_indices
from diffuse.diffusion.diffusion_config import DiffusionConfig
from diffuse.errors import CheckpointError
from diffuse.rendering import to_uint8
from diffuse.train.preview import sample_images


@dataclass(frozen=True)
class Recognition:
    """The result of :func:`recognition_rate`.

    rate:           fraction of samples recognised as their class.
    per_class:      that fraction for each class [10].
    real_accuracy:  the classifier's accuracy on the real held-out digits.
    samples:        number of samples classified.
    settings:       how they were sampled (sampler, steps, cfg_weight, weights, seed).
    """

    rate: float
    per_class: list[float]
    real_accuracy: float
    samples: int
    settings: dict


def digit_classifier():
    """(logistic regression fitted to the real train-split digits, its test accuracy)."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    digits = load_digits()
    train = split_indices(len(digits.target), "train")
    test = split_indices(len(digits.target), "test")
    classifier = LogisticRegression(max_iter=5000)
    classifier.fit(digits.data[train], digits.target[train])
    return classifier, float(classifier.score(digits.data[test], digits.target[test]))


def to_digit_features(images: torch.Tensor) -> np.ndarray:
    """Images [N, 1, 8, 8] in [-1, 1] -> [N, 64] on sklearn's 0..16 scale (as stored, via uint8)."""
    pixels = to_uint8(images).reshape(len(images), -1).astype(np.float64)
    return pixels * (MAX_VALUE / 255.0)


def recognition_rate(
    checkpoint: str | Path,
    *,
    per_class: int = 50,
    sampler: str | None = None,
    steps: int | None = None,
    cfg_weight: float | None = None,
    weights: str = "auto",
    seed: int = 1,
    device: str = "cpu",
) -> Recognition:
    """Generate ``per_class`` digits of each class from ``checkpoint`` and classify them.

    checkpoint: a checkpoint folder or a run folder (its latest checkpoint).
    sampler, steps, cfg_weight: as the run's sample grids when None (its ``train``
                metadata).
    weights:    which weights to load ("auto": the EMA of the largest rate).
    seed:       sample i draws its noise from (seed, i); the grids of a run use its
                training seed, so the default measures other samples than the grid shows.
    """
    loaded = load_checkpoint(checkpoint, weights=weights, device=device)
    model, meta = loaded.model, loaded.metadata
    config = model.config
    if (config.image_size, config.in_channels, getattr(config, "num_classes", None)) != (8, 1, 10):
        raise CheckpointError(
            f"{loaded.path} is not a class-conditional 8x8 grey model of 10 classes; the "
            "recognition rate is defined for models of the digits"
        )
    train = meta.get("train", {})
    settings = {
        "sampler": sampler or train.get("sample_sampler", "ddim"),
        "steps": steps or train.get("sample_steps", 50),
        "cfg_weight": cfg_weight if cfg_weight is not None else train.get("cfg_weight", 0.0),
        "weights": loaded.weights,
        "seed": seed,
    }
    labels = torch.arange(10).repeat_interleave(per_class)
    diffusion = loaded.diffusion or DiffusionConfig()
    images = sample_images(
        model,
        diffusion,
        len(labels),
        labels=labels,
        sampler=settings["sampler"],
        steps=settings["steps"],
        cfg_weight=settings["cfg_weight"],
        seed=seed,
    )
    classifier, real_accuracy = digit_classifier()
    predicted = classifier.predict(to_digit_features(images))
    correct = predicted == labels.numpy()
    return Recognition(
        rate=float(correct.mean()),
        per_class=[float(correct[labels.numpy() == k].mean()) for k in range(10)],
        real_accuracy=real_accuracy,
        samples=len(labels),
        settings=settings,
    )
