"""The MNIST-format sets: pixels, labels, padding and box-averaging, where they are looked for."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

import diffuse.data.locate as locate_module
from diffuse.data import load_dataset
from diffuse.errors import DataError, MissingFileError
from helpers.data_files import assert_box_means, idx_bytes, scaled, write_idx_split

REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_idx_set_reads_pixels_labels_and_classes(tmp_path):
    images, labels = write_idx_split(tmp_path / "d", "test", 12, gz=False)
    data = load_dataset("fashion-mnist", split="test", data_dir=tmp_path / "d")
    assert (len(data), data.channels, data.image_size, data.num_classes) == (12, 1, 28, 10)
    assert data.class_names[9] == "Ankle boot"
    x, y = data[3]
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    torch.testing.assert_close(x, scaled(images[3])[None], rtol=0, atol=0)
    assert int(y) == labels[3]
    xs, ys = data.tensors()
    torch.testing.assert_close(xs[:, 0], scaled(images), rtol=0, atol=0)
    np.testing.assert_array_equal(ys.numpy(), labels)
    np.testing.assert_array_equal(data.uint8([2, 5])[:, :, :, 0], images[[2, 5]])


def test_idx_set_at_32_pads_with_black_and_at_14_box_averages(tmp_path):
    images, _ = write_idx_split(tmp_path / "d", "train", 4)
    padded = load_dataset("mnist", data_dir=tmp_path / "d", image_size=32).uint8()[:, :, :, 0]
    assert padded.shape == (4, 32, 32)
    np.testing.assert_array_equal(padded[:, 2:30, 2:30], images)
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert (padded[:, border] == 0).all()
    kept = load_dataset("mnist", data_dir=tmp_path / "d", image_size=28).uint8()[:, :, :, 0]
    np.testing.assert_array_equal(kept, images)
    # 28 -> 14 is one BOX halving (smaller side 28 >= 2 * 14): the mean of each 2x2 block.
    halved = load_dataset("mnist", data_dir=tmp_path / "d", image_size=14).uint8()[:, :, :, 0]
    blocks = images.reshape(4, 14, 2, 14, 2).astype(np.float64).mean(axis=(2, 4))
    assert_box_means(halved, blocks)


def test_search_order_data_dir_then_env_then_system(tmp_path, monkeypatch):
    system_images, _ = write_idx_split(tmp_path / "system" / "mnist", "train", 3, seed=1)
    data = load_dataset("mnist")
    assert data.origin == str(tmp_path / "system" / "mnist")
    np.testing.assert_array_equal(data.uint8()[:, :, :, 0], system_images)

    env_images, _ = write_idx_split(tmp_path / "env" / "mnist", "train", 4, seed=2)
    monkeypatch.setenv("DIFFUSE_DATA", str(tmp_path / "env"))
    np.testing.assert_array_equal(load_dataset("mnist").uint8()[:, :, :, 0], env_images)

    explicit, _ = write_idx_split(tmp_path / "mine", "train", 5, seed=3, gz=False)
    data = load_dataset("mnist", data_dir=tmp_path / "mine")
    np.testing.assert_array_equal(data.uint8()[:, :, :, 0], explicit)


def test_idx_files_named_with_a_dot_are_found(tmp_path):
    folder = tmp_path / "d"
    write_idx_split(folder, "train", 2, gz=False)
    for path in folder.iterdir():
        path.rename(folder / path.name.replace("-idx", ".idx"))
    assert len(load_dataset("mnist", data_dir=folder)) == 2


def test_images_and_labels_of_different_lengths_are_refused(tmp_path):
    folder = tmp_path / "d"
    write_idx_split(folder, "train", 5)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros(4, np.uint8)))
    )
    with pytest.raises(DataError, match=r"5 images but .* 4 labels"):
        load_dataset("fashion-mnist", data_dir=folder)


def test_missing_set_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFUSE_DATA", str(tmp_path / "env"))
    with pytest.raises(MissingFileError) as info:
        load_dataset("fashion-mnist", data_dir=tmp_path / "mine", download=False)
    message = str(info.value)
    for place in (
        tmp_path / "mine" / "fashion-mnist",
        tmp_path / "mine",
        tmp_path / "env" / "fashion-mnist",
        tmp_path / "system" / "fashion-mnist",
        tmp_path / "cache" / "diffuse" / "fashion-mnist",
    ):
        assert str(place) in message
    assert "apt install dataset-fashion-mnist" in message
    assert "fashion-mnist/master/data/fashion/train-images-idx3-ubyte.gz" in message
    assert "--data-dir" in message and "DIFFUSE_DATA" in message
    assert "downloading is off" in message and "download=True" in message


# ---------------------------------------------------------------- real Fashion-MNIST


@pytest.mark.needs_data("fashion-mnist")
@pytest.mark.skipif(
    not REAL_FASHION.is_dir(), reason="Debian package dataset-fashion-mnist not installed"
)
def test_real_fashion_mnist_from_the_system_folder(monkeypatch):
    monkeypatch.setattr(locate_module, "SYSTEM_DATA_ROOT", REAL_FASHION.parent)
    test = load_dataset("fashion-mnist", split="test", image_size=32)
    assert test.origin == str(REAL_FASHION)
    assert (len(test), test.channels, test.image_size) == (10000, 1, 32)
    assert np.bincount(test.labels.numpy()).tolist() == [1000] * 10
    pixels = test.uint8()
    assert (pixels[:, :2] == 0).all() and pixels[:, 2:30, 2:30].max() == 255
    train = load_dataset("fashion-mnist", data_dir=REAL_FASHION)
    assert (len(train), train.image_size) == (60000, 28)
    assert np.bincount(train.labels.numpy()).tolist() == [6000] * 10
