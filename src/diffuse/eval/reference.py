"""Reference statistics: what the metrics need from the real images, computed once and cached.

The reference images are read as the samples are, so ``diffuse eval SAMPLES --ref REF``
gives the number the Python functions give (FID convention: every image goes to the
Inception network at its own size and is resized to 299x299 by the network's resize,
:mod:`diffuse.eval.preprocess`):

- a data set name: its split at its native resolution, as ``load_dataset(name).uint8()``;
- a folder (or .npy): every image at its own size, as :func:`~diffuse.eval.samples.load_samples`
  reads samples (so all of one size);
- with ``image_size=N`` (``--ref-size N``), an explicit choice: the images are fitted to NxN
  as the training data are (a named set padded or resized, a folder's images centre-cropped
  and resized, :func:`diffuse.data.load_dataset`), e.g. to measure against the data as a
  model trained at N saw it.

What is kept depends on the metrics asked for: FID needs the mean and covariance of the
pool_3 features, sFID those of the spatial features, precision/recall the pool_3 features
themselves, KID pool_3 features too. Statistics take 8 D (D + 1) bytes whatever the image
count (32 MB for pool_3); when the float32 features of N < 2 (D + 1) images take less, the
features are stored instead and the statistics computed from them on load (the network
outputs float32, so nothing is lost). KID compares random subsets of 1000 features, so
of a larger set it needs only a random sample: up to :data:`KID_REFERENCE_LIMIT` (10,000)
features are kept for it (82 MB), drawn once with a fixed seed. Files are ``.npz`` with
guided-diffusion's key names, so its published reference batches can be read too:

- ``mu``, ``sigma``: pool_3 statistics; ``mu_s``, ``sigma_s``: spatial statistics;
- ``features``: pool_3 features, float32 [N, 2048] (precision/recall; FID when N < 4098;
  KID when N <= 10,000), or ``arr_0``: the reference images themselves (guided-diffusion's
  batches; their features are computed on load); ``features_s``: spatial features
  [N, 2023] (N < 4048); ``features_kid``: a random 10,000 of the pool_3 features of a
  larger set, for KID alone;
- ``info``: JSON text naming the data set, split, count, resolution, network and the
  content's fingerprint.

Cached entries and when they are reused: :mod:`diffuse.eval.cache`; writes are atomic.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from diffuse.data.catalog import FOLDER_SPLIT, canonical_name, load_dataset
from diffuse.errors import ConfigError, DataError, MissingFileError
from diffuse.eval.cache import array_fingerprint, entry_path, files_fingerprint
from diffuse.eval.features import InceptionActivations, InceptionExtractor
from diffuse.eval.metrics import GaussianStatistics
from diffuse.eval.samples import SAMPLES_KEY, load_samples
from diffuse.io import atomic_path

PARTS = ("fid", "kid", "sfid", "pr")  # what a reference serves; the Inception Score needs nothing
KID_REFERENCE_LIMIT = 10_000  # pool_3 features kept for KID (a random sample of larger sets)


def _smaller_than_statistics(features: np.ndarray) -> bool:
    """Whether float32 features [N, D] take less room than their float64 statistics:
    4 N D bytes against 8 D (D + 1), i.e. N < 2 (D + 1)."""
    n, dim = features.shape
    return n < 2 * (dim + 1)


def _of_features(features: np.ndarray | None) -> GaussianStatistics | None:
    return None if features is None else GaussianStatistics.of(features)


def kid_sample(features: np.ndarray, limit: int) -> np.ndarray:
    """``limit`` rows of ``features`` drawn at random without replacement (seed 0, so the
    same reference gives the same sample), in their original order."""
    chosen = torch.randperm(len(features), generator=torch.Generator().manual_seed(0))[:limit]
    return features[np.sort(chosen.numpy())]


@dataclass(frozen=True)
class ReferenceStatistics:
    """What FID, KID, sFID and precision/recall need from the real images.

    Attributes:
        pool: pool_3 feature statistics (FID), or None if not kept.
        spatial: spatial (mixed_6) feature statistics (sFID), or None if not kept.
        features: all the pool_3 features [N, 2048] float32 (precision/recall, KID), or None.
        info: where they came from (data set, split, n, resolution, network_sha256, ...).
        spatial_features: spatial features [N, 2023] float32, kept only when they are
            smaller than ``spatial`` (then stored in its place).
        kid_features: a random sample of :data:`KID_REFERENCE_LIMIT` pool_3 features of a
            larger set, kept for KID when ``features`` are not.
    """

    pool: GaussianStatistics | None = None
    spatial: GaussianStatistics | None = None
    features: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    spatial_features: np.ndarray | None = None
    kid_features: np.ndarray | None = None

    @property
    def parts(self) -> frozenset[str]:
        """The metrics (of :data:`PARTS`) this reference serves."""
        held = {
            "fid": self.pool,
            "kid": self.kid_reference,
            "sfid": self.spatial,
            "pr": self.features,
        }
        return frozenset(name for name, value in held.items() if value is not None)

    @property
    def kid_reference(self) -> np.ndarray | None:
        """The pool_3 features KID compares the samples with: all of them when kept, else
        the random sample kept for KID, else None."""
        return self.features if self.features is not None else self.kid_features

    @property
    def n(self) -> int | None:
        """How many reference images, or None when a statistics file does not say."""
        if "n" in self.info:
            return int(self.info["n"])
        held = self.features if self.features is not None else self.spatial_features
        return None if held is None else len(held)

    def describe(self) -> str:
        """One line on what the statistics are of, e.g. "6 images of digits train at 8x8
        (native size)"."""
        count = "an unknown number of images" if self.n is None else f"{self.n} images"
        names = [str(self.info[key]) for key in ("dataset", "split") if key in self.info]
        names = [name for name in names if name != FOLDER_SPLIT]
        what = " ".join(names) or self.info.get("file", "a statistics file")
        if "resolution" not in self.info:
            return f"{count} of {what}"
        height, width = self.info["resolution"]
        size = self.info.get("image_size")
        fitted = f"fitted to {size}x{size}" if size else "native size"
        return f"{count} of {what} at {height}x{width} ({fitted})"

    @classmethod
    def from_activations(
        cls, activations: InceptionActivations, info: dict, parts: Iterable[str] = PARTS
    ):
        """What ``parts`` (of :data:`PARTS`) need from the activations; sFID needs them
        computed with ``spatial=True``. Statistics are taken of the float32 features, so
        that they equal the ones recomputed from stored features."""
        parts = set(parts)
        pool = activations.pool.astype(np.float32)
        keep_pool = (
            "pr" in parts
            or ("fid" in parts and _smaller_than_statistics(pool))
            or ("kid" in parts and len(pool) <= KID_REFERENCE_LIMIT)
        )
        spatial = activations.spatial.astype(np.float32) if "sfid" in parts else None
        return cls(
            _of_features(pool) if "fid" in parts or keep_pool else None,
            _of_features(spatial),
            pool if keep_pool else None,
            info,
            spatial if spatial is not None and _smaller_than_statistics(spatial) else None,
            kid_sample(pool, KID_REFERENCE_LIMIT) if "kid" in parts and not keep_pool else None,
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write an .npz atomically (an existing file is replaced only when complete)."""
        arrays = {"info": json.dumps(self.info)}
        if self.features is not None:
            arrays["features"] = self.features
        if self.pool is not None and not (
            self.features is not None and _smaller_than_statistics(self.features)
        ):
            arrays |= {"mu": self.pool.mu, "sigma": self.pool.sigma}
        if self.kid_features is not None:
            arrays["features_kid"] = self.kid_features
        if self.spatial_features is not None:
            arrays["features_s"] = self.spatial_features
        elif self.spatial is not None:
            arrays |= {"mu_s": self.spatial.mu, "sigma_s": self.spatial.sigma}
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
        if not {"mu", "sigma"} <= set(arrays) and "features" not in arrays:
            raise DataError(
                f"{path} holds no reference statistics (keys mu and sigma, or features); it "
                f"has {', '.join(arrays) or 'nothing'}"
            )
        features = arrays.get("features")
        if features is None and SAMPLES_KEY in arrays:
            extractor = extractor or InceptionExtractor()
            features = extractor(arrays[SAMPLES_KEY]).pool.astype(np.float32)
        info = json.loads(str(arrays["info"])) if "info" in arrays else {"file": str(path)}
        return cls(
            _statistics(arrays, "mu", "sigma", features if "mu" not in arrays else None),
            _statistics(arrays, "mu_s", "sigma_s", arrays.get("features_s")),
            features,
            info,
            arrays.get("features_s"),
            arrays.get("features_kid"),
        )


def _statistics(arrays: dict, mu: str, sigma: str, features) -> GaussianStatistics | None:
    """Stored statistics, else those of stored features small enough to stand for them."""
    if mu in arrays and sigma in arrays:
        return GaussianStatistics(arrays[mu], arrays[sigma])
    if features is not None and _smaller_than_statistics(features):
        return GaussianStatistics.of(features)
    return None


@dataclass(frozen=True)
class ReferenceSource:
    """The images a reference names, and what identifies them in the cache.

    Attributes:
        info: what they are (``dataset`` name or resolved folder, ``split``, ``image_size``).
        label: a short readable name for the cache file ("digits-train-n6-native").
        read: returns the images, uint8 [N, H, W(, C)].
        fingerprint: returns a hash of the content (:mod:`diffuse.eval.cache`).
    """

    info: dict
    label: str
    read: Callable[[], np.ndarray]
    fingerprint: Callable[[], str]


def reference_source(
    ref: str | os.PathLike,
    *,
    split: str = "train",
    n: int | None = None,
    image_size: int | None = None,
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> ReferenceSource:
    """The images of a data set name or a folder (.npy), as the module docstring says.

    A named set is read at once (its fingerprint hashes the pixels); a folder only when
    :attr:`ReferenceSource.read` is called (its fingerprint lists its files). ``progress``
    shows a bar while a folder's images are decoded.
    """
    if n is not None and n < 2:
        raise ConfigError(f"reference statistics need at least 2 images, not n={n}")
    name = canonical_name(ref)
    size = f"{image_size}px" if image_size else "native"
    count = f"n{n}" if n else "all"
    if name is not None:
        data = load_dataset(
            name,
            split=split,
            image_size=image_size,
            data_dir=data_dir,
            class_cond=False,
            progress=progress,
        )
        _check_count(n, len(data), f"{name} {split}")
        images = data.uint8(range(n) if n else None)
        info = {"dataset": name, "split": split, "image_size": image_size}
        return ReferenceSource(
            info,
            f"{name}-{split}-{count}-{size}",
            lambda: images,
            lambda: array_fingerprint(images),
        )
    path = Path(ref).expanduser().resolve()
    if split != "train":
        raise ConfigError(
            f"a folder of images has no {split!r} split: give the folder that holds those "
            "images as --ref"
        )
    if not path.exists():
        raise MissingFileError(
            f"no reference {path}: give a data set name, a folder of images or a statistics .npz"
        )

    def read() -> np.ndarray:
        if image_size is None:
            images = load_samples(path, one_size_hint=" (or fit them to one: --ref-size N)")
        else:
            images = load_dataset(
                path, image_size=image_size, class_cond=False, progress=progress
            ).uint8()
        _check_count(n, len(images), str(path))
        return images[:n]

    info = {"dataset": str(path), "split": FOLDER_SPLIT, "image_size": image_size}
    return ReferenceSource(
        info, f"{path.name}-{count}-{size}", read, lambda: files_fingerprint(path)
    )


def _check_count(n: int | None, available: int, what: str) -> None:
    if n is not None and n > available:
        raise DataError(f"{what} has {available} images; cannot take the first {n}")


def reference_images(ref: str | os.PathLike, **options) -> np.ndarray:
    """The uint8 images ``diffuse eval --ref REF`` measures against (same options as
    :func:`reference_source`): compute their features with
    :func:`~diffuse.eval.features.inception_features` to get the command's numbers."""
    return reference_source(ref, **options).read()


def dataset_reference(
    ref: str | os.PathLike,
    *,
    metrics: Iterable[str] = PARTS,
    split: str = "train",
    n: int | None = None,
    image_size: int | None = None,
    extractor: InceptionExtractor | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
) -> ReferenceStatistics:
    """Reference statistics of a data set or folder, from the cache or computed and cached.

    Args:
        ref: a name :func:`diffuse.data.load_dataset` knows ("fashion-mnist", ...) or a
            folder of images (see the module docstring for how each is read).
        metrics: the metrics the statistics are for (of "fid", "kid", "sfid", "pr"; "is"
            needs none): only what they need is computed and stored. A cached entry that lacks
            some is recomputed with all it had and all that is asked.
        split: "train" or "test" for a named set.
        n: use the first n images; None uses all.
        image_size: None reads the images at their own size (the FID convention); N fits
            them to NxN as training does (an explicit choice, ``--ref-size``).
        extractor: the network; None uses the default weights.
        cache_dir: folder of cached statistics; None uses the user's cache
            (:mod:`diffuse.eval.cache`).
        use_cache: False neither reads nor writes the cache.
        data_dir: folder searched first for a named set's files (see
            :func:`diffuse.data.load_dataset`).
        progress: show a progress bar while computing features.
        report: called with one line saying where the statistics came from or were written
            (the command line prints it); None says nothing.
    """
    source = reference_source(
        ref, split=split, n=n, image_size=image_size, data_dir=data_dir, progress=progress
    )
    return source_reference(
        source,
        n,
        metrics=metrics,
        extractor=extractor,
        cache_dir=cache_dir,
        use_cache=use_cache,
        progress=progress,
        report=report,
    )


def source_reference(
    source: ReferenceSource,
    n: int | None,
    *,
    metrics: Iterable[str] = PARTS,
    extractor: InceptionExtractor | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
) -> ReferenceStatistics:
    """Reference statistics of the images of ``source``, from the cache or computed and
    cached: :func:`dataset_reference` for any :class:`ReferenceSource` (e.g. the images a
    training run learns from). ``n`` is the image count the source was asked for (None:
    all), part of the cache entry's identity; the other arguments as for
    :func:`dataset_reference`.
    """
    parts = set(metrics) & set(PARTS)
    if not parts:
        return ReferenceStatistics(info=source.info)
    extractor = extractor or InceptionExtractor()
    report = report or (lambda line: None)
    identity = {**source.info, "n": n, "network": extractor.tag}
    path = entry_path(identity, f"{source.label}-{extractor.tag}", cache_dir)
    fingerprint = source.fingerprint()
    cached, why = _cached_entry(path, fingerprint) if use_cache else (None, "")
    if cached is not None and parts <= cached.parts:
        report(f"reference statistics ({_names(cached.parts)}) read from the cache {path}")
        return cached
    if cached is not None:
        why = f"adding {_names(parts - cached.parts)} to the cached {_names(cached.parts)}"
        parts |= cached.parts
    images = source.read()
    activations = extractor(images, spatial="sfid" in parts, progress=progress)
    info = {
        **source.info,
        "n": len(images),
        "resolution": list(images.shape[1:3]),
        "network_sha256": extractor.sha256,
        "dtype": str(extractor.dtype).removeprefix("torch."),
        "fingerprint": fingerprint,
    }
    reference = ReferenceStatistics.from_activations(activations, info, parts)
    if not use_cache:
        report(f"reference statistics ({_names(parts)}) computed, not cached")
        return reference
    reference.save(path)
    report(f"reference statistics ({_names(parts)}) written to {path}{why and f' ({why})'}")
    return reference


def _cached_entry(path: Path, fingerprint: str) -> tuple[ReferenceStatistics | None, str]:
    """The entry at ``path`` if it is readable and of the same content, else (None, why not)."""
    if not path.is_file():
        return None, ""
    try:
        cached = ReferenceStatistics.load(path)
    except DataError:
        return None, "the cached entry was unreadable"
    if cached.info.get("fingerprint") != fingerprint:
        return None, "the reference changed since it was cached"
    return cached, ""


def _names(parts: Iterable[str]) -> str:
    return ", ".join(name for name in PARTS if name in parts) or "none"
