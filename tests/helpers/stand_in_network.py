"""A stand-in for the FID Inception network, for tests of what is built around it (sweeps,
the reference statistics cache, FID while training): cheap, deterministic features of 8x8
grey images."""

from __future__ import annotations

import numpy as np
import torch

from diffuse.eval.features import InceptionActivations
from diffuse.eval.preprocess import PREPROCESSING


class ProjectedPixels:
    """A stand-in for the Inception network: 'pool' features are a fixed random projection
    of the pixels (6-d), the 'spatial' and 'logits' ones parts of them."""

    has_logits = True
    sha256 = "f" * 64
    tag = "projected-pixels"
    dtype = torch.float32

    def __init__(self):
        self.calls = 0
        self.projection = np.random.default_rng(0).normal(size=(64, 6))

    def describe(self) -> dict:
        return {
            "name": "projected pixels",
            "weights": "a fixed random projection",
            "sha256": self.sha256,
            "dtype": "float32",
            "preprocessing": PREPROCESSING,
        }

    def __call__(self, images, *, spatial=False, logits=False, progress=True):
        self.calls += 1
        pool = np.asarray(images, np.float64).reshape(len(images), -1) / 255 @ self.projection
        return InceptionActivations(
            pool, pool[:, :3] if spatial else None, pool[:, :4] if logits else None
        )


def replace_inception(monkeypatch, module) -> list[ProjectedPixels]:
    """Make the command ``module`` build a :class:`ProjectedPixels` wherever it builds its
    InceptionExtractor; returns the list of those built, in order."""
    made = []

    def extractor(weights=None, **options):
        made.append(ProjectedPixels())
        return made[-1]

    monkeypatch.setattr(module, "InceptionExtractor", extractor)
    return made


def install_stand_in() -> None:
    """Make FID while training (:mod:`diffuse.train.fid_tracking`) measure with a
    :class:`ProjectedPixels`, in a process that a test starts (where its monkeypatch does
    not reach); in the test's own process use ``replace_inception``."""
    import diffuse.train.fid_tracking as fid_tracking

    fid_tracking.InceptionExtractor = lambda *args, **options: ProjectedPixels()
