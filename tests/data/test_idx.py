"""IDX files: the format of MNIST and Fashion-MNIST, read on bytes written here."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from diffuse.data.idx import read_idx
from diffuse.errors import DataError
from helpers.data_files import fake_images, idx_bytes


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trips_values_and_shape(tmp_path, gz):
    values = np.arange(-60, 60, dtype=np.int16).reshape(4, 5, 6)
    path = tmp_path / "values.idx"
    data = idx_bytes(values)
    path.write_bytes(gzip.compress(data) if gz else data)
    out = read_idx(path)
    assert out.shape == (4, 5, 6)
    np.testing.assert_array_equal(out, values)


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda data: data[:-7], "truncated"),
        (lambda data: data + b"\x00", "trailing"),
        (lambda data: b"\x01\x02" + data[2:], "not an IDX file"),
        (lambda data: data[:6], "truncated"),
    ],
)
def test_read_idx_refuses_a_damaged_file_and_names_it(tmp_path, damage, words):
    path = tmp_path / "bad-images-idx3-ubyte"
    path.write_bytes(damage(idx_bytes(fake_images(3, 0))))
    with pytest.raises(DataError, match=words) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_gzip_names_the_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(fake_images(20, 0)))[:-40])
    with pytest.raises(DataError, match="gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)
