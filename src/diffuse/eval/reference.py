"""Reference statistics of a data set: computed once, cached, and read back.

A reference holds what the metrics need from the real images: the Gaussian statistics of
their pool_3 features (FID) and of their spatial features (sFID), and the pool_3
features themselves (precision/recall). Files are ``.npz`` with guided-diffusion's key
names, so its published reference batches can be read too:

- ``mu``, ``sigma``: pool_3 statistics; ``mu_s``, ``sigma_s``: spatial statistics;
- ``features``: pool_3 features, float32 [N, 2048] (ours), or ``arr_0``: the reference
  images themselves (guided-diffusion's batches; their features are computed on load);
- ``info``: JSON text naming the data set, split, count, resolution and network.

Cached files live in ``$XDG_CACHE_HOME/diffuse/ref`` (default ``~/.cache/diffuse/ref``),
one per (data set, split, count, resolution, network SHA-256); writes are atomic.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffuse.data.locate import user_cache_dir
from diffuse.errors import DataError, MissingFileError
from diffuse.eval.features import InceptionActivations, InceptionExtractor
from diffuse.eval.metrics import GaussianStatistics
from diffuse.eval.samples import SAMPLES_KEY
from diffuse.io import atomic_path


@dataclass(frozen=True)
class ReferenceStatistics:
    """What FID, sFID and precision/recall need from the real images.

    Attributes:
        pool: pool_3 feature statistics.
        spatial: spatial (mixed_6) feature statistics, or None if unknown.
        features: pool_3 features [N, 2048] for precision/recall, or None.
        info: where they came from (data set, split, n, resolution, network_sha256).
    """

    pool: GaussianStatistics
    spatial: GaussianStatistics | None = None
    features: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    @classmethod
    def from_activations(cls, activations: InceptionActivations, info: dict):
        """Statistics of activations computed with ``spatial=True``."""
        return cls(
            GaussianStatistics.of(activations.pool),
            GaussianStatistics.of(activations.spatial),
            activations.pool.astype(np.float32),
            info,
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write an .npz atomically (an existing file is replaced only when complete)."""
        arrays = {"mu": self.pool.mu, "sigma": self.pool.sigma, "info": json.dumps(self.info)}
        if self.spatial is not None:
            arrays |= {"mu_s": self.spatial.mu, "sigma_s": self.spatial.sigma}
        if self.features is not None:
            arrays["features"] = self.features
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    @classmethod
    def load(
        cls, path: str | os.PathLike, extractor: InceptionExtractor | None = None
    ) -> ReferenceStatistics:
        """Read a file written by :meth:`save` or a guided-diffusion reference batch.

        A batch that carries images (``arr_0``) but no features gets its features from
        ``extractor`` (the default network when None) for precision/recall.
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise MissingFileError(f"no reference statistics file {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (ValueError, OSError) as error:
            raise DataError(f"cannot read reference statistics {path}: {error}") from error
        if "mu" not in arrays or "sigma" not in arrays:
            raise DataError(
                f"{path} holds no reference statistics (keys mu and sigma); it has "
                f"{', '.join(arrays) or 'nothing'}"
            )
        spatial = None
        if "mu_s" in arrays and "sigma_s" in arrays:
            spatial = GaussianStatistics(arrays["mu_s"], arrays["sigma_s"])
        features = arrays.get("features")
        if features is None and SAMPLES_KEY in arrays:
            extractor = extractor or InceptionExtractor()
            features = extractor(arrays[SAMPLES_KEY]).pool.astype(np.float32)
        info = json.loads(str(arrays["info"])) if "info" in arrays else {"file": str(path)}
        return cls(GaussianStatistics(arrays["mu"], arrays["sigma"]), spatial, features, info)


def reference_cache_path(
    dataset: str,
    split: str,
    n: int | None,
    image_size: int | None,
    network: str,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Where the statistics of (data set, split, count, resolution, network) are cached.

    ``network`` is :attr:`InceptionExtractor.tag`: the weights' hash and the precision.
    """
    folder = Path(cache_dir).expanduser() if cache_dir else user_cache_dir("ref")
    name = "-".join(
        [
            dataset.replace(os.sep, "_"),
            split,
            f"n{n}" if n else "all",
            f"{image_size}px" if image_size else "native",
            network,
        ]
    )
    return folder / f"{name}.npz"


def dataset_reference(
    dataset: str,
    *,
    split: str = "train",
    n: int | None = None,
    image_size: int | None = None,
    extractor: InceptionExtractor | None = None,
    cache_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> ReferenceStatistics:
    """Reference statistics of a data set, from the cache or computed and cached.

    Args:
        dataset: a name :func:`diffuse.data.load_dataset` knows ("fashion-mnist", ...).
        split: "train" or "test".
        n: use the first n images; None uses all.
        image_size: the resolution the images are loaded at (match the samples');
            None keeps the native size.
        extractor: the network; None uses the default weights.
        cache_dir: folder of cached statistics; None uses ``~/.cache/diffuse/ref``.
        data_dir: folder searched first for the data set's files (see
            :func:`diffuse.data.load_dataset`).
        progress: show progress bars while reading the images and computing features.
    """
    from diffuse.data import load_dataset

    extractor = extractor or InceptionExtractor()
    path = reference_cache_path(dataset, split, n, image_size, extractor.tag, cache_dir)
    if path.is_file():
        return ReferenceStatistics.load(path)
    data = load_dataset(
        dataset,
        split=split,
        image_size=image_size,
        data_dir=data_dir,
        class_cond=False,
        progress=progress,
    )
    if n is not None and not 2 <= n <= len(data):
        raise DataError(f"{dataset} {split} has {len(data)} images; cannot take the first {n}")
    images = data.uint8(range(n) if n else None)
    activations = extractor(images, spatial=True, progress=progress)
    info = {
        "dataset": dataset,
        "split": split,
        "n": len(images),
        "resolution": list(images.shape[1:3]),
        "network_sha256": extractor.sha256,
        "dtype": str(extractor.dtype).removeprefix("torch."),
    }
    reference = ReferenceStatistics.from_activations(activations, info)
    reference.save(path)
    return reference
