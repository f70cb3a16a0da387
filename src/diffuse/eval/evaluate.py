"""Evaluate a set of samples against reference statistics: the metrics ADM reports.

``evaluate(images, reference)`` runs the network once over the samples and returns
FID, KID, sFID, Inception Score and precision/recall (whichever are asked for and possible),
as ``diffuse eval`` prints them, and warns (:class:`SmallSampleWarning`) when FID is
measured on fewer images than the features have dimensions.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np

from diffuse.errors import ConfigError, DiffuseWarning
from diffuse.eval.features import InceptionExtractor
from diffuse.eval.metrics import (
    fid,
    fid_bootstrap,
    inception_score,
    kid,
    precision_recall,
    precision_recall_with_noise,
)
from diffuse.eval.reference import ReferenceStatistics
from diffuse.eval.weights import LOGITS_HINT

METRICS = ("fid", "kid", "sfid", "is", "pr")


class SmallSampleWarning(DiffuseWarning):
    """FID (or sFID) of a set with fewer images than feature dimensions (2048 for pool_3).

    The covariance of N < D vectors is singular (rank N - 1), and the FID estimator is
    biased upwards, the more so the fewer the images (Chong & Forsyth 2020, "Effectively
    Unbiased FID"): such values can be compared only between equal counts, not with
    published FIDs (50,000 samples).
    """


def small_sample_message(n_samples: int, n_reference: int | None, dim: int) -> str | None:
    """The warning for FID of ``n_samples`` against ``n_reference`` images (None: unknown)
    with ``dim``-dimensional features, or None when both sets have at least ``dim``."""
    if n_samples >= dim and (n_reference is None or n_reference >= dim):
        return None
    reference = "an unknown number of" if n_reference is None else str(n_reference)
    return (
        f"FID from {n_samples} samples and {reference} reference images, fewer than the "
        f"{dim} feature dimensions: the covariance is singular and FID is biased upwards; "
        "compare it only with FIDs of the same counts (published FIDs use 50,000 samples)"
    )


def parse_metrics(text: str | Iterable[str] | None, has_logits: bool) -> tuple[str, ...]:
    """Metric names from "fid,kid,sfid,is,pr"; None means all the weights support."""
    if text is None:
        return tuple(name for name in METRICS if has_logits or name != "is")
    names = [part.strip().lower() for part in (text.split(",") if isinstance(text, str) else text)]
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        raise ConfigError(f"unknown metrics {unknown or names}; choose from {', '.join(METRICS)}")
    if "is" in names and not has_logits:
        raise ConfigError(f"the Inception Score needs the network's logits layer: {LOGITS_HINT}")
    return tuple(dict.fromkeys(names))


def evaluate(
    images,
    reference: ReferenceStatistics,
    *,
    metrics: str | Iterable[str] | None = None,
    extractor: InceptionExtractor | None = None,
    k: int = 3,
    replicates: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Metrics of uint8 sample images [N, H, W(, C)] against ``reference``.

    Returns a dict with ``fid``, ``kid`` and ``kid_std`` (:func:`~diffuse.eval.metrics.kid`:
    mean and spread over its subsets), ``sfid``, ``is`` and ``is_std``, ``precision`` and
    ``recall`` for the metrics asked for (None: all the network supports); ``k`` is the
    precision/recall neighbourhood size. With ``replicates`` >= 2 the result also has
    the noise of FID, precision and recall from this many samples against this reference,
    as standard deviations: ``fid_sd`` over that many bootstrap resamples of the samples
    (:func:`~diffuse.eval.metrics.fid_bootstrap`), ``precision_sd`` and ``recall_sd``
    from :func:`~diffuse.eval.metrics.precision_recall_with_noise` (that many halvings). Warns
    once (:class:`SmallSampleWarning`) when FID or sFID is asked for and either set has
    fewer images than the 2048 feature dimensions.
    """
    extractor = extractor or InceptionExtractor()
    chosen = parse_metrics(metrics, extractor.has_logits)
    if "fid" in chosen and reference.pool is None:
        raise ConfigError("the reference has no pool_3 statistics (mu, sigma) for FID")
    if "kid" in chosen and reference.kid_reference is None:
        raise ConfigError(
            "the reference has no pool_3 features for KID (a file of statistics only); give "
            "the data set or folder itself as the reference"
        )
    if "sfid" in chosen and reference.spatial is None:
        raise ConfigError("the reference has no spatial statistics (mu_s, sigma_s) for sFID")
    if "pr" in chosen and reference.features is None:
        raise ConfigError("the reference has no features (or images) for precision/recall")
    activations = extractor(
        images, spatial="sfid" in chosen, logits="is" in chosen, progress=progress
    )
    if "fid" in chosen or "sfid" in chosen:
        message = small_sample_message(len(images), reference.n, activations.pool.shape[1])
        if message is not None:
            warnings.warn(message, SmallSampleWarning, stacklevel=2)
    results: dict[str, float] = {}
    if "fid" in chosen:
        results["fid"] = fid(activations.pool, reference.pool)
        if replicates >= 2:
            values = fid_bootstrap(activations.pool, reference.pool, replicates)
            results["fid_sd"] = float(np.std(values, ddof=1))
    if "kid" in chosen:
        results["kid"], results["kid_std"] = kid(reference.kid_reference, activations.pool)
    if "sfid" in chosen:
        results["sfid"] = fid(activations.spatial, reference.spatial)
    if "is" in chosen:
        results["is"], results["is_std"] = inception_score(activations.logits)
    if "pr" in chosen:
        if replicates >= 2:
            names = ("precision", "recall", "precision_sd", "recall_sd")
            values = precision_recall_with_noise(
                reference.features, activations.pool, k=k, splits=replicates
            )
            results |= dict(zip(names, values, strict=True))
        else:
            results["precision"], results["recall"] = precision_recall(
                reference.features, activations.pool, k=k
            )
    return results
