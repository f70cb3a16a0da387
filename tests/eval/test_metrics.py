"""Metric math against closed forms and independent computations on synthetic features."""

import numpy as np
import pytest
import scipy.linalg
from scipy.spatial.distance import cdist

from diffuse.errors import DataError
from diffuse.eval.metrics import (
    GaussianStatistics,
    fid,
    fid_bootstrap,
    frechet_distance,
    inception_score,
    precision_recall,
    precision_recall_with_noise,
    trace_sqrt_product,
)


def random_rotation(dim: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


def scipy_fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """The TTUR / guided-diffusion recipe: np.cov and scipy.linalg.sqrtm."""
    mu_a, mu_b = features_a.mean(0), features_b.mean(0)
    sigma_a, sigma_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    root = scipy.linalg.sqrtm(sigma_a @ sigma_b).real
    return float((mu_a - mu_b) @ (mu_a - mu_b) + np.trace(sigma_a + sigma_b - 2 * root))


def test_fid_of_identical_sets_is_zero():
    features = np.random.default_rng(0).standard_normal((500, 64)) * 3 + 1
    assert abs(fid(features, features)) < 1e-8


def test_fid_of_gaussians_with_shared_eigenvectors_has_closed_form():
    # Commuting covariances Q diag(a) Q^T, Q diag(b) Q^T: sqrt(S_a S_b) = Q diag(sqrt(ab)) Q^T,
    # so d^2 = |m|^2 + sum (sqrt(a) - sqrt(b))^2.
    rng = np.random.default_rng(1)
    dim = 40
    q = random_rotation(dim, rng)
    a, b = rng.uniform(0.1, 4.0, dim), rng.uniform(0.1, 4.0, dim)
    shift = rng.standard_normal(dim)
    stats_a = GaussianStatistics(np.zeros(dim), q @ np.diag(a) @ q.T)
    stats_b = GaussianStatistics(shift, q @ np.diag(b) @ q.T)
    expected = shift @ shift + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(stats_a, stats_b) == pytest.approx(expected, rel=1e-10)


def test_fid_of_a_sample_and_its_shifted_copy_is_the_squared_shift():
    # b holds a's points (reordered) moved by m: equal covariances, means m apart, so
    # d^2 = |m|^2 exactly, whatever the sample.
    rng = np.random.default_rng(2)
    shift = rng.standard_normal(8)
    a = rng.standard_normal((2000, 8)) @ rng.standard_normal((8, 8))
    b = a[rng.permutation(len(a))] + shift
    assert fid(a, b) == pytest.approx(shift @ shift, rel=1e-8)


def test_fid_matches_scipy_sqrtm_on_non_commuting_covariances():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((300, 32)) @ rng.standard_normal((32, 32))
    b = rng.standard_normal((400, 32)) @ rng.standard_normal((32, 32)) + 0.3
    assert fid(a, b) == pytest.approx(scipy_fid(a, b), rel=1e-9)


def test_trace_sqrt_product_of_rank_deficient_covariances_is_a_nuclear_norm():
    # With S_a = A^T A and S_b = B^T B (fewer samples than dimensions), the eigenvalues of
    # S_a S_b are the squared singular values of A B^T: tr sqrt(S_a S_b) = ||A B^T||_*.
    rng = np.random.default_rng(4)
    a = rng.standard_normal((20, 64)) / np.sqrt(19)
    b = rng.standard_normal((30, 64)) / np.sqrt(29)
    expected = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    assert trace_sqrt_product(a.T @ a, b.T @ b) == pytest.approx(expected, rel=1e-10)


def test_fid_accepts_statistics_or_features_alike():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((100, 6)), rng.standard_normal((120, 6))
    assert fid(GaussianStatistics.of(a), b) == pytest.approx(fid(a, b), rel=1e-12)


def test_fid_refuses_mismatched_dimensions_and_bad_values():
    with pytest.raises(DataError, match="2048-d"):
        fid(np.zeros((5, 4)), np.ones((5, 3)))
    with pytest.raises(DataError, match="NaN"):
        fid(np.full((5, 4), np.nan), np.ones((5, 4)))
    with pytest.raises(DataError, match="at least 2"):
        fid(np.zeros((1, 4)), np.ones((5, 4)))


@pytest.mark.parametrize("n", [12, 60])  # fewer and more samples than dimensions (30)
def test_each_bootstrap_fid_is_the_fid_of_its_resample(n):
    rng = np.random.default_rng(3)
    reference = GaussianStatistics.of(rng.standard_normal((80, 30)) @ rng.standard_normal((30, 30)))
    features = 1.5 * rng.standard_normal((n, 30)) + 0.3
    values = fid_bootstrap(features, reference, 4, seed=11)
    draws = np.random.default_rng(11)
    resamples = [features[draws.integers(0, n, n)] for _ in range(4)]
    np.testing.assert_allclose(values, [fid(x, reference) for x in resamples], rtol=1e-9)


def test_one_seed_resamples_sets_of_one_size_alike_so_paired_sets_stay_paired():
    rng = np.random.default_rng(5)
    reference = GaussianStatistics(np.zeros(6), np.eye(6))
    first = rng.standard_normal((25, 6))
    second = first + 0.01 * rng.standard_normal((25, 6))  # sample i of both from one seed
    paired = fid_bootstrap(second, reference, 30, seed=2) - fid_bootstrap(first, reference, 30, 2)
    unpaired = fid_bootstrap(second, reference, 30, seed=3) - fid_bootstrap(first, reference, 30, 2)
    assert np.std(paired, ddof=1) < 0.1 * np.std(unpaired, ddof=1)


def test_the_bootstrap_noise_of_fid_shrinks_as_the_samples_grow():
    rng = np.random.default_rng(4)
    reference = GaussianStatistics(np.zeros(8), np.eye(8))
    spread = {
        n: np.std(fid_bootstrap(rng.standard_normal((n, 8)) + 0.5, reference, 40), ddof=1)
        for n in (50, 800)
    }
    # FID's noise falls as 1 / sqrt(n): 16 times the samples, about a quarter of the spread
    assert 2.5 < spread[50] / spread[800] < 6.5


def test_the_bootstrap_refuses_too_few_samples_or_replicates():
    reference = GaussianStatistics(np.zeros(3), np.eye(3))
    with pytest.raises(DataError, match="at least 2 feature vectors"):
        fid_bootstrap(np.zeros((1, 3)), reference, 5)
    with pytest.raises(ValueError, match="replicates must be at least 1"):
        fid_bootstrap(np.ones((4, 3)), reference, 0)


def test_inception_score_of_uniform_predictions_is_one():
    mean, std = inception_score(np.zeros((100, 1008)))
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_of_confident_distinct_predictions_is_the_number_of_classes():
    classes = 7
    labels = np.arange(10 * classes * 3) % classes  # every split holds each class 3 times
    logits = 60.0 * np.eye(classes)[labels]
    mean, _ = inception_score(logits, splits=10)
    assert mean == pytest.approx(classes, rel=1e-6)


def test_inception_score_matches_the_original_formula():
    rng = np.random.default_rng(6)
    logits = rng.standard_normal((200, 12)) * 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    scores = []
    for part in np.split(p, 4):
        kl = part * (np.log(part) - np.log(part.mean(0, keepdims=True)))
        scores.append(np.exp(kl.sum(1).mean()))
    assert inception_score(logits, splits=4) == pytest.approx((np.mean(scores), np.std(scores)))


def brute_force_precision_recall(real, fake, k):
    """Kynkäänniemi et al. 2019 eq. 1-2 with full distance matrices."""
    radius = lambda x: np.sort(cdist(x, x), axis=1)[:, k]  # noqa: E731 (column 0 is self)
    cross = cdist(real, fake)
    precision = (cross <= radius(real)[:, None]).any(0).mean()
    recall = (cross <= radius(fake)[None, :]).any(1).mean()
    return precision, recall


def test_precision_recall_of_identical_sets_are_one():
    features = np.random.default_rng(7).standard_normal((300, 16))
    assert precision_recall(features, features, batch_size=64) == (1.0, 1.0)


def test_precision_recall_match_brute_force_in_small_batches():
    rng = np.random.default_rng(8)
    real = rng.standard_normal((157, 10))
    fake = np.concatenate([rng.standard_normal((60, 10)), rng.standard_normal((83, 10)) + 2.5])
    expected = brute_force_precision_recall(real, fake, k=3)
    assert 0.2 < expected[0] < 0.8  # a case where both answers are informative
    assert precision_recall(real, fake, k=3, batch_size=16) == pytest.approx(expected)


def test_precision_recall_of_far_apart_sets_are_zero():
    rng = np.random.default_rng(9)
    real = rng.standard_normal((50, 4))
    assert precision_recall(real, real + 100.0) == (0.0, 0.0)


def test_precision_recall_need_more_than_k_vectors():
    with pytest.raises(DataError, match="k=3"):
        precision_recall(np.zeros((3, 4)), np.zeros((10, 4)))


def test_the_noise_of_precision_and_recall_matches_their_spread_over_fresh_sample_sets():
    """The noise estimated from one set of samples agrees with the standard deviation of
    precision and recall over 40 independent sets drawn from the same law (real set fixed)."""
    rng = np.random.default_rng(10)
    real = rng.standard_normal((800, 12))
    scale = np.linspace(0.7, 1.3, 12)

    def samples():
        return rng.standard_normal((300, 12)) * scale + 0.2

    spread = np.std([precision_recall(real, samples()) for _ in range(40)], axis=0, ddof=1)
    estimates = np.mean(
        [precision_recall_with_noise(real, samples(), splits=10, seed=s)[2:] for s in range(6)],
        axis=0,
    )
    assert estimates == pytest.approx(spread, rel=0.35)


def test_the_precision_noise_is_the_standard_error_of_its_indicators():
    rng = np.random.default_rng(11)
    real = rng.standard_normal((200, 8))
    fake = np.concatenate([rng.standard_normal((30, 8)), rng.standard_normal((90, 8)) + 50])
    precision, _ = precision_recall(real, fake)
    assert 0.1 < precision <= 0.25  # the 90 far ones lie outside the real manifold
    sd = precision_recall_with_noise(real, fake, splits=3)[2]
    assert sd == pytest.approx((precision * (1 - precision) / 120) ** 0.5)


def test_precision_recall_with_noise_refuses_too_few_samples_or_splits():
    real = np.random.default_rng(12).standard_normal((50, 4))
    with pytest.raises(DataError, match="too small"):
        precision_recall_with_noise(real, real[:7], k=3)
    with pytest.raises(DataError, match="split"):
        precision_recall_with_noise(real, real, splits=0)
