"""The published-style figure: Fashion-MNIST train[:10000] against the 10000 test images.

FID 2.5304 was measured with NVIDIA's TorchScript Inception, the TF-legacy bilinear
resize, ``np.cov`` in float64 and ``scipy.linalg.sqrtm``. 20000 images through the
network take many minutes on a CPU, hence ``slow``.
"""

import numpy as np
import pytest
import scipy.linalg

from diffuse.data import load_dataset
from diffuse.eval import GaussianStatistics, fid, inception_features

pytestmark = [pytest.mark.slow, pytest.mark.needs_data("fashion-mnist")]

REFERENCE_FID = 2.5304


def test_fashion_mnist_train_10k_against_test_reproduces_the_reference_fid():
    train = load_dataset("fashion-mnist", split="train", class_cond=False).uint8(range(10000))
    test = load_dataset("fashion-mnist", split="test", class_cond=False).uint8()
    a, b = inception_features(train), inception_features(test)
    value = fid(a, b)
    print(f"\nFashion-MNIST train[:10000] against test: FID {value:.4f} (reference 2.5304)")
    assert value == pytest.approx(REFERENCE_FID, abs=0.01)

    # Our eigendecomposition-based square root agrees with scipy's sqrtm on real features.
    sa, sb = GaussianStatistics.of(a), GaussianStatistics.of(b)
    root = scipy.linalg.sqrtm(sa.sigma @ sb.sigma).real
    diff = sa.mu - sb.mu
    with_scipy = diff @ diff + np.trace(sa.sigma + sb.sigma - 2 * root)
    assert fid(sa, sb) == pytest.approx(with_scipy, abs=1e-6)
