"""scikit-learn's 8x8 digits (shipped with scikit-learn, real)."""

from __future__ import annotations

import numpy as np

from diffuse.data import load_dataset
from diffuse.data.digits import split_indices


def test_digits_split_is_fixed_disjoint_and_complete():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    train, test = split_indices(1797, "train"), split_indices(1797, "test")
    assert (len(train), len(test)) == (1498, 299)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(1797))
    data = load_dataset("digits", split="test")
    assert (len(data), data.channels, data.image_size, data.num_classes) == (299, 1, 8, 10)
    expected = np.rint(bunch.images[test] * 255 / 16)
    np.testing.assert_array_equal(data.uint8()[:, :, :, 0], expected)
    np.testing.assert_array_equal(data.labels.numpy(), bunch.target[test])
    assert set(data.labels.tolist()) == set(range(10))
    x, _ = data.tensors()
    assert x.min() == -1.0 and x.max() == 1.0


def test_digits_resized_and_unlabelled():
    data = load_dataset("Digits", image_size=16, class_cond=False)
    assert data.uint8().shape == (1498, 16, 16, 1)
    assert data.num_classes == 0 and data.class_names == ()
    assert (data.labels == -1).all() and int(data[0][1]) == -1
