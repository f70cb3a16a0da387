"""Kernel Inception Distance: the unbiased MMD^2 estimate, its subsets and its spread."""

import numpy as np
import pytest
import torch

from diffuse.errors import DataError
from diffuse.eval.metrics import kid, polynomial_kernel, unbiased_mmd2

# Two distributions on four points of the plane each (two shared).
P_SUPPORT = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
Q_SUPPORT = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 2.0], [0.0, 2.0]])


def test_unbiased_mmd2_is_gretton_lemma_6_with_the_cubic_kernel():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 3)), rng.normal(1.0, 2.0, size=(7, 3))

    def k(a, b):
        return (a @ b / 3 + 1) ** 3

    pairs = lambda s: [(i, j) for i in range(len(s)) for j in range(len(s)) if i != j]  # noqa: E731
    expected = (
        sum(k(x[i], x[j]) for i, j in pairs(x)) / (5 * 4)
        + sum(k(y[i], y[j]) for i, j in pairs(y)) / (7 * 6)
        - 2 * sum(k(a, b) for a in x for b in y) / (5 * 7)
    )
    # Float64 sums in another order: equal to rounding.
    assert unbiased_mmd2(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(expected)
    kernel = polynomial_kernel(torch.from_numpy(x), torch.from_numpy(y))
    np.testing.assert_allclose(kernel.numpy(), (x @ y.T / 3 + 1) ** 3)


def test_small_subsets_average_to_the_estimate_on_all_vectors():
    # A U-statistic stays unbiased under subsampling without replacement: the mean of
    # many 10-vector estimates is the estimate from all 1000 vectors of each set. The
    # Monte Carlo error of 4000 subsets is ~0.07 (std 4.4 / sqrt(4000)); keeping the
    # diagonal (the biased V-statistic) would add ~1.3 at this subset size.
    real, fake = np.repeat(P_SUPPORT, 250, axis=0), np.repeat(Q_SUPPORT, 250, axis=0)
    on_all = unbiased_mmd2(torch.from_numpy(real), torch.from_numpy(fake))
    mean, std = kid(real, fake, subsets=4000, subset_size=10)
    assert mean == pytest.approx(on_all, abs=0.3)
    assert 3.5 < std < 5.5  # the spread of one 10-vector estimate


def test_subsets_holding_every_vector_give_the_estimate_itself_with_no_spread():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(30, 4)), rng.normal(0.5, 1.0, size=(30, 4))
    mean, std = kid(real, fake, subsets=5)  # subset size min(1000, 30, 30) = 30
    assert mean == pytest.approx(unbiased_mmd2(torch.from_numpy(real), torch.from_numpy(fake)))
    assert std == pytest.approx(0.0, abs=1e-12)  # the same 30 vectors, summed in other orders


def test_kid_is_reproducible_and_its_subsets_follow_the_generator():
    rng = np.random.default_rng(2)
    real, fake = rng.normal(size=(50, 3)), rng.normal(size=(40, 3))
    first = kid(real, fake, subsets=20, subset_size=10)
    assert kid(real, fake, subsets=20, subset_size=10) == first
    other = kid(real, fake, subsets=20, subset_size=10, generator=torch.Generator().manual_seed(7))
    assert other != first


def test_kid_of_one_distribution_is_near_zero_and_of_two_is_not():
    rng = np.random.default_rng(3)
    real, same = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    shifted = rng.normal(1.0, 1.0, size=(400, 8))
    near, spread = kid(real, same, subsets=20, subset_size=200)
    far, _ = kid(real, shifted, subsets=20, subset_size=200)
    assert abs(near) < 3 * spread + 1e-3 and far > 50 * abs(near)


@pytest.mark.parametrize(
    ("real", "fake", "options", "message"),
    [
        (np.zeros((1, 3)), np.zeros((5, 3)), {}, "at least 2 vectors"),
        (np.zeros((5, 3)), np.zeros((5, 3)), {"subset_size": 1}, "subset_size=1"),
        (np.zeros((5, 3)), np.zeros((5, 2)), {}, "3-d, fake 2-d"),
        (np.zeros((5, 3)), np.zeros((5, 3)), {"subsets": 0}, "at least 1 subset"),
        (np.full((5, 3), np.nan), np.zeros((5, 3)), {}, "NaN"),
    ],
)
def test_bad_features_are_refused(real, fake, options, message):
    with pytest.raises(DataError, match=message):
        kid(real, fake, **options)
