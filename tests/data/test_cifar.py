"""CIFAR-10 from its binary batches, extracted or archived."""

from __future__ import annotations

import re

import numpy as np
import pytest

from diffuse.data import load_dataset
from diffuse.errors import DataError, MissingFileError
from helpers.data_files import tar_gz, write_cifar_folder


def test_cifar_from_the_extracted_folder_and_from_the_archive(tmp_path):
    train_x, train_y, test_x, test_y = write_cifar_folder(tmp_path / "bin")
    from_folder = load_dataset("cifar10", data_dir=tmp_path / "bin")
    assert (len(from_folder), from_folder.channels, from_folder.image_size) == (15, 3, 32)
    np.testing.assert_array_equal(from_folder.uint8(), train_x)
    np.testing.assert_array_equal(from_folder.labels.numpy(), train_y)
    assert from_folder.class_names[0] == "airplane"

    tar_gz(tmp_path / "bin" / "cifar-10-batches-bin", tmp_path / "cifar-10-binary.tar.gz")
    test = load_dataset("cifar10", split="test", data_dir=tmp_path)
    assert test.origin == str(tmp_path / "cifar-10-binary.tar.gz")
    np.testing.assert_array_equal(test.uint8(), test_x)
    np.testing.assert_array_equal(test.labels.numpy(), test_y)
    assert load_dataset("cifar10", split="test", data_dir=tmp_path, image_size=16).uint8().shape[
        1:
    ] == (16, 16, 3)


def test_cifar_truncated_batch_names_the_file(tmp_path):
    write_cifar_folder(tmp_path)
    bad = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
    bad.write_bytes(bad.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated") as info:
        load_dataset("cifar10", data_dir=tmp_path)
    assert str(bad) in str(info.value)


def test_cifar_corrupt_archive_names_the_archive(tmp_path):
    write_cifar_folder(tmp_path / "bin")
    archive = tmp_path / "cifar-10-binary.tar.gz"
    tar_gz(tmp_path / "bin" / "cifar-10-batches-bin", archive)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", data_dir=tmp_path)
    assert str(archive) in str(info.value)


def test_cifar_missing_lists_the_binary_archive_url(tmp_path):
    with pytest.raises(MissingFileError, match=re.escape("cifar-10-binary.tar.gz")):
        load_dataset("cifar10", data_dir=tmp_path, download=False)
