"""Sample-quality metrics on Inception activations: FID, sFID, KID, Inception Score, P/R.

All of them take features computed by :mod:`diffuse.eval.features` (or any other
network): FID and sFID are the same Fréchet distance on pool_3 and on spatial features;
KID compares the pool_3 features themselves, without a Gaussian model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import log_softmax, logsumexp

from diffuse.errors import DataError, is_int_at_least


@dataclass(frozen=True)
class GaussianStatistics:
    """Mean and covariance of a feature set: what FID compares.

    Attributes:
        mu: mean feature, float64 [D].
        sigma: unbiased covariance (``np.cov``), float64 [D, D].
    """

    mu: np.ndarray
    sigma: np.ndarray

    @classmethod
    def of(cls, features: np.ndarray) -> GaussianStatistics:
        """Statistics of features [N, D], N >= 2, computed in float64."""
        features = _check_features(features, "features")
        if len(features) < 2:
            raise DataError(f"a covariance needs at least 2 feature vectors, got {len(features)}")
        return cls(features.mean(axis=0), np.cov(features, rowvar=False))


def _check_features(features, what: str) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) == 0:
        raise DataError(f"{what} must be a non-empty array [N, D], got shape {features.shape}")
    if not np.isfinite(features).all():
        raise DataError(f"{what} contain NaN or infinite values")
    return features


def _paired_features(real, fake, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and fake feature sets [N, D] as tensors of ``dtype``, checked, of equal D."""
    real_t, fake_t = (
        torch.from_numpy(_check_features(x, what).astype(dtype, copy=False))
        for x, what in ((real, "real features"), (fake, "fake features"))
    )
    if real_t.shape[1] != fake_t.shape[1]:
        raise DataError(f"real features are {real_t.shape[1]}-d, fake {fake_t.shape[1]}-d")
    return real_t, fake_t


def trace_sqrt_product(sigma_1: np.ndarray, sigma_2: np.ndarray) -> float:
    """tr((sigma_1 sigma_2)^(1/2)) for symmetric positive semi-definite matrices.

    Factor sigma_1 = F F^T from its eigendecomposition (F = V_r diag(sqrt(w_r)) over the
    r eigenvalues above round-off). The non-zero eigenvalues of sigma_1 sigma_2 =
    F (F^T sigma_2) are those of the symmetric PSD r x r matrix F^T sigma_2 F, so the trace
    of the square root is the sum of their square roots. Symmetric eigendecompositions are
    backward stable and never produce the complex parts or non-convergence that a general
    matrix square root (``scipy.linalg.sqrtm``) meets on the rank-deficient covariances of
    N < D samples. Eigenvalues below the round-off level (largest * size * machine epsilon,
    the rank tolerance of ``np.linalg.matrix_rank``) count as 0, so that square roots of
    ~1e-16 noise do not add up to a bias over thousands of null directions.
    """
    factor = psd_factor(sigma_1)
    return sum_of_square_roots(factor.T @ sigma_2 @ factor)


def psd_factor(sigma: np.ndarray) -> np.ndarray:
    """F [D, r] with sigma = F F^T, from the eigendecomposition of the symmetric PSD
    ``sigma`` (eigenvalues below round-off dropped)."""
    eigenvalues, eigenvectors = np.linalg.eigh(sigma)
    kept = eigenvalues > _round_off(eigenvalues)
    return eigenvectors[:, kept] * np.sqrt(eigenvalues[kept])


def sum_of_square_roots(gram: np.ndarray) -> float:
    """The sum of the square roots of the eigenvalues of a symmetric PSD matrix (those
    below round-off count as 0): tr(gram^(1/2))."""
    eigenvalues = np.linalg.eigvalsh((gram + gram.T) / 2.0)
    kept = eigenvalues > _round_off(eigenvalues)
    return float(np.sqrt(eigenvalues[kept]).sum())


def _round_off(eigenvalues: np.ndarray) -> float:
    return max(eigenvalues.max(initial=0.0), 0.0) * len(eigenvalues) * np.finfo(np.float64).eps


def frechet_distance(a: GaussianStatistics, b: GaussianStatistics) -> float:
    """Squared Fréchet (2-Wasserstein) distance between two Gaussians.

    d^2 = |mu_a - mu_b|^2 + tr(sigma_a + sigma_b - 2 (sigma_a sigma_b)^(1/2))
    (Dowson & Landau 1982; the FID of Heusel et al. 2017, Sec. 4 "Fréchet Inception
    Distance").
    """
    if a.mu.shape != b.mu.shape or a.sigma.shape != b.sigma.shape:
        raise DataError(
            f"cannot compare statistics of {a.mu.shape[0]}-d and {b.mu.shape[0]}-d features "
            "(pool_3 features are 2048-d, sFID's spatial features 2023-d)"
        )
    diff = a.mu - b.mu
    trace = np.trace(a.sigma) + np.trace(b.sigma) - 2.0 * trace_sqrt_product(a.sigma, b.sigma)
    return float(diff @ diff + trace)


def fid(a, b) -> float:
    """Fréchet distance between two feature sets, each features [N, D] or its statistics.

    With pool_3 features this is FID (Heusel et al. 2017); with the spatial mixed_6
    features it is sFID (Nash et al. 2021), as ADM (Dhariwal & Nichol 2021) reports both.
    """
    stats = [x if isinstance(x, GaussianStatistics) else GaussianStatistics.of(x) for x in (a, b)]
    return frechet_distance(*stats)


def fid_bootstrap(
    features, reference: GaussianStatistics, replicates: int, seed: int = 0
) -> np.ndarray:
    """FID of ``replicates`` bootstrap resamples (N rows drawn with replacement) of the
    sample features [N, D] against fixed reference statistics: their spread is the
    sampling noise of FID(features, reference) from N samples (Efron 1979).

    Fast because the reference is factored once, sigma_ref = F F^T (:func:`psd_factor`):
    with the centred resample X_c and sigma = X_c^T X_c / (N - 1), the non-zero
    eigenvalues of F^T sigma F equal those of the N x N matrix (X_c F)(X_c F)^T / (N - 1),
    so each replicate is one product and one symmetric eigendecomposition of the smaller
    side, not a D x D covariance. Each value equals :func:`fid` of its resample. One
    ``seed`` draws the same rows for every set of N: sets whose sample i came from the same
    noise stay paired, and the spread of their replicates' differences is the noise of the
    difference of their FIDs.
    """
    features = _check_features(features, "features")
    if len(features) < 2:
        raise DataError(f"a bootstrap of FID needs at least 2 feature vectors, got {len(features)}")
    if replicates < 1:
        raise ValueError(f"replicates must be at least 1, got {replicates}")
    factor = psd_factor(reference.sigma)
    projected = features @ factor  # [N, r]: each row's coordinates in the reference factor
    reference_trace = np.trace(reference.sigma)
    rng = np.random.default_rng(seed)
    n = len(features)
    values = np.empty(replicates)
    for i in range(replicates):
        rows = rng.integers(0, n, n)
        resample, coordinates = features[rows], projected[rows]
        mean = resample.mean(axis=0)
        centred = resample - mean
        coordinates = coordinates - coordinates.mean(axis=0)
        small = coordinates @ coordinates.T if n < factor.shape[1] else coordinates.T @ coordinates
        shift = mean - reference.mu
        trace = (centred * centred).sum() / (n - 1) + reference_trace
        values[i] = shift @ shift + trace - 2.0 * sum_of_square_roots(small / (n - 1))
    return values


KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def polynomial_kernel(rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """k(x, y) = (x.y / d + 1)^3 for every pair: KID's kernel (Binkowski et al. 2018,
    Sec. 3), d the feature dimension."""
    return (rows @ columns.T / rows.shape[1] + 1.0) ** 3


def unbiased_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased estimate of the squared MMD between the laws of the rows of ``x`` [m, d]
    and ``y`` [n, d] under :func:`polynomial_kernel` (Gretton et al. 2012, Lemma 6):

    MMD_u^2 = sum_{i!=j} k(x_i, x_j) / (m (m-1)) + sum_{i!=j} k(y_i, y_j) / (n (n-1))
              - 2 sum_{i,j} k(x_i, y_j) / (m n)

    The diagonal k(x_i, x_i) is left out, so the estimate can be slightly negative when
    both sets come from one distribution.
    """
    m, n = len(x), len(y)
    k_xx, k_yy = polynomial_kernel(x, x), polynomial_kernel(y, y)
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * polynomial_kernel(x, y).mean())


def kid(
    real,
    fake,
    *,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs", Sec. 3):
    mean and standard deviation of :func:`unbiased_mmd2` over random subsets.

    Each of ``subsets`` rounds draws m = min(subset_size, len(real), len(fake)) vectors
    of each set without replacement and estimates MMD^2 on them, as Binkowski et al.,
    torch-fidelity and clean-fid do (100 subsets of 1000 by default, theirs too). The
    standard deviation over the subsets (``np.std``, as torch-fidelity reports it)
    estimates the standard error of an estimate from m vectors of each set: the "±"
    that KID is published with. When m is the size of both sets, every subset holds all
    the vectors and it is 0, which then says nothing about the uncertainty. Computed in
    float64. ``generator`` draws the subsets (default: seeded with 0, so the same
    features always give the same KID).
    """
    real_t, fake_t = _paired_features(real, fake, np.float64)
    if not is_int_at_least(subsets, 1):
        raise DataError(f"KID needs at least 1 subset, got {subsets!r}")
    m = min(subset_size, len(real_t), len(fake_t))
    if m < 2:
        raise DataError(
            f"KID needs subsets of at least 2 vectors of each set, got {len(real_t)} real, "
            f"{len(fake_t)} fake and subset_size={subset_size}"
        )
    generator = generator or torch.Generator().manual_seed(0)
    estimates = [
        unbiased_mmd2(
            real_t[torch.randperm(len(real_t), generator=generator)[:m]],
            fake_t[torch.randperm(len(fake_t), generator=generator)[:m]],
        )
        for _ in range(subsets)
    ]
    return float(np.mean(estimates)), float(np.std(estimates))


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Inception Score exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016, Sec. 4), mean and std.

    ``logits`` [N, classes] are split into ``splits`` consecutive parts (boundaries at
    i * N // splits, as the original code and StyleGAN's metrics); p(y) is each part's mean
    of p(y|x).
    """
    logits = _check_features(logits, "logits")
    if not 1 <= splits <= len(logits):
        raise DataError(f"cannot split {len(logits)} logit vectors into {splits} parts")
    log_p = log_softmax(logits, axis=1)
    scores = []
    for i in range(splits):
        part = log_p[i * len(log_p) // splits : (i + 1) * len(log_p) // splits]
        log_marginal = logsumexp(part, axis=0) - np.log(len(part))
        kl = (np.exp(part) * (part - log_marginal)).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


def squared_distances(rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """|r - c|^2 for every pair, via |r|^2 - 2 r.c + |c|^2 (one matrix product), >= 0."""
    distances = rows.square().sum(1, keepdim=True) - 2.0 * rows @ columns.T
    return (distances + columns.square().sum(1)).clamp_(min=0.0)


def kth_neighbour_radii(features: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    """Squared distance of every vector to its k-th nearest other vector in the same set."""
    if len(features) <= k:
        raise DataError(f"the k={k} nearest neighbours need more than {k} feature vectors")
    radii = [
        squared_distances(features[start : start + batch_size], features)
        .topk(k + 1, dim=1, largest=False)  # the smallest is the vector itself (distance 0)
        .values[:, k]
        for start in range(0, len(features), batch_size)
    ]
    return torch.cat(radii)


def precision_recall(
    real: np.ndarray, fake: np.ndarray, *, k: int = 3, batch_size: int = 1024
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, Sec. 2, eq. 1-2).

    Each set's manifold is the union of balls around its vectors with radius the distance
    to the k-th nearest neighbour. Precision: fraction of ``fake`` inside the real manifold;
    recall: fraction of ``real`` inside the fake manifold. ADM reports k = 3 on pool_3
    features. Distances are computed in float32, ``batch_size`` rows at a time, so memory
    grows as batch_size x N (50k x 50k sets work).
    """
    real_t, fake_t = _paired_features(real, fake, np.float32)
    fake_inside, recall = _manifold_coverage(
        real_t, fake_t, [torch.arange(len(fake_t))], k, batch_size
    )
    return float(fake_inside.double().mean()), float(recall[0])


def precision_recall_with_noise(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    k: int = 3,
    splits: int = 20,
    batch_size: int = 1024,
    seed: int = 0,
) -> tuple[float, float, float, float]:
    """:func:`precision_recall`'s precision and recall, then their standard deviations over
    draws of this many ``fake`` samples, the real set fixed: the noise of the two. One pass
    over the distances gives all four.

    Precision is the mean of one indicator per fake sample (inside the fixed real
    manifold or not), so its noise is their standard error, sqrt(p (1 - p) / N). Recall
    is no such mean: every fake sample's ball depends on its neighbours, so a bootstrap
    resample (whose duplicates are each other's nearest neighbours) misjudges it. Its noise
    comes from ``splits`` random halvings of the fake set instead: each half's recall, with
    the radii within that half, is an estimate from N/2 samples, so the difference of the
    two halves has variance 2 var(N/2) = 4 var(N), taking the variance as proportional to
    1/N. On Gaussian features both agree with the spread over fresh sample sets (tested).
    """
    real_t, fake_t = _paired_features(real, fake, np.float32)
    n = len(fake_t)
    if not is_int_at_least(splits, 1):
        raise DataError(f"the recall noise needs at least 1 split, got {splits!r}")
    if n // 2 <= k:
        raise DataError(f"halves of {n} fake vectors are too small for k={k} neighbours")
    generator = torch.Generator().manual_seed(seed)
    subsets = [torch.arange(n)]  # the whole set, then the halves of each split
    for _ in range(splits):
        order = torch.randperm(n, generator=generator)
        subsets += [order[: n // 2], order[n // 2 : 2 * (n // 2)]]
    fake_inside, recalls = _manifold_coverage(real_t, fake_t, subsets, k, batch_size)
    precision = float(fake_inside.double().mean())
    precision_sd = math.sqrt(precision * (1.0 - precision) / n)
    recall_sd = float((recalls[1::2] - recalls[2::2]).square().mean().sqrt()) / 2.0
    return precision, float(recalls[0]), precision_sd, recall_sd


def _manifold_coverage(
    real: torch.Tensor,
    fake: torch.Tensor,
    subsets: list[torch.Tensor],
    k: int,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which fake vectors lie inside the real manifold (bool [N_fake]), and for each subset
    of the fake vectors (index tensors) the fraction of real vectors inside the manifold
    of that subset alone (float64 [len(subsets)]). One pass over the real-to-fake
    distances serves every subset."""
    real_radii = kth_neighbour_radii(real, k, batch_size)
    subset_radii = [kth_neighbour_radii(fake[rows], k, batch_size) for rows in subsets]
    fake_inside = torch.zeros(len(fake), dtype=torch.bool)
    covered = torch.zeros(len(subsets), dtype=torch.float64)
    for start in range(0, len(real), batch_size):
        distances = squared_distances(real[start : start + batch_size], fake)
        fake_inside |= (distances <= real_radii[start : start + batch_size, None]).any(0)
        for i, (rows, radii) in enumerate(zip(subsets, subset_radii, strict=True)):
            covered[i] += (distances[:, rows] <= radii[None, :]).any(1).sum()
    return fake_inside, covered / len(real)
