"""Folders of images: sizes, modes, classes from sub-folders, damaged files named."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

from diffuse.data import center_crop_resize, load_dataset
from diffuse.errors import ConfigError, DataError, MissingFileError
from helpers.data_files import assert_box_means, save_image


def test_folder_of_mixed_sizes_and_modes_becomes_one_rgb_set(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "pets"
    save_image(root / "cat" / "a.png", rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    save_image(root / "cat" / "deep" / "b.jpg", rng.integers(0, 256, (64, 64), dtype=np.uint8))
    save_image(root / "dog" / "c.png", rng.integers(0, 256, (20, 20, 4), dtype=np.uint8))
    save_image(root / "dog" / "d.gif", rng.integers(0, 256, (24, 18, 3), dtype=np.uint8), "P")
    (root / "dog" / "readme.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    save_image(root / ".hidden" / "e.png", np.zeros((8, 8), np.uint8))
    data = load_dataset(root, image_size=16)
    assert (len(data), data.channels, data.image_size) == (4, 3, 16)
    assert data.class_names == ("cat", "dog") and data.labels.tolist() == [0, 0, 1, 1]
    assert data.split == "all" and data.uint8().shape == (4, 16, 16, 3)
    smallest = load_dataset(root)
    assert smallest.image_size == 18  # the smallest side among the images


def test_folder_image_follows_adm_box_then_bicubic_then_centre_crop(tmp_path):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)
    save_image(tmp_path / "one" / "wide.png", pixels)
    got = load_dataset(tmp_path / "one", image_size=16).uint8()[0]
    # 64x32 -> one BOX halving (smaller side 32 >= 2 * 16) to 32x16, already the size,
    # then the centre 16 columns (8..24) of 32.
    blocks = pixels.reshape(16, 2, 32, 2, 3).astype(np.float64).mean(axis=(1, 3))
    assert_box_means(got, blocks[:, 8:24])
    resized = np.asarray(center_crop_resize(Image.fromarray(pixels), 16))
    np.testing.assert_array_equal(resized, got)


def test_all_grey_folder_has_one_channel_and_no_classes_without_sub_folders(tmp_path):
    rng = np.random.default_rng(2)
    save_image(tmp_path / "g" / "a.png", rng.integers(0, 256, (12, 12), dtype=np.uint8))
    save_image(tmp_path / "g" / "b.png", rng.integers(0, 256, (12, 12), dtype=np.uint8), "LA")
    data = load_dataset(tmp_path / "g")
    assert (data.channels, data.image_size, data.num_classes) == (1, 12, 0)
    assert data.labels.tolist() == [-1, -1]


def test_lazy_folder_reads_the_same_pixels_as_in_memory(tmp_path):
    rng = np.random.default_rng(3)
    for k in range(3):
        save_image(tmp_path / "f" / str(k) / "x.png", rng.integers(0, 256, (20, 26, 3), np.uint8))
    eager = load_dataset(tmp_path / "f", image_size=8, in_memory=True)
    lazy = load_dataset(tmp_path / "f", image_size=8, in_memory=False)
    assert eager.in_memory and not lazy.in_memory
    np.testing.assert_array_equal(eager.uint8(), lazy.uint8())
    torch.testing.assert_close(eager.batch([2, 0])[0], lazy.batch([2, 0])[0])


def test_bad_folders_get_clear_errors(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        load_dataset(tmp_path / "file.png")
    with pytest.raises(MissingFileError, match="no folder"):
        load_dataset("./no-such-folder")
    save_image(tmp_path / "mixed" / "loose.png", np.zeros((8, 8), np.uint8))
    save_image(tmp_path / "mixed" / "a" / "x.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match=re.escape("loose.png")):
        load_dataset(tmp_path / "mixed")
    assert load_dataset(tmp_path / "mixed", class_cond=False).num_classes == 0
    with pytest.raises(ConfigError, match="no 'test' split"):
        load_dataset(tmp_path / "mixed", split="test")


def test_corrupt_and_truncated_images_are_named(tmp_path):
    save_image(tmp_path / "c" / "good.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "c" / "garbage.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=re.escape("garbage.png")):
        load_dataset(tmp_path / "c")
    (tmp_path / "c" / "garbage.png").unlink()
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (64, 64), np.uint8)).save(
        buffer, "PNG"
    )
    (tmp_path / "c" / "cut.png").write_bytes(buffer.getvalue()[:300])
    with pytest.raises(DataError, match=re.escape("cut.png")):
        load_dataset(tmp_path / "c")


def test_a_folder_decodes_into_memory_in_worker_processes(tmp_path, monkeypatch):
    monkeypatch.setattr("diffuse.data.dataset.DECODE_CHUNK", 2)  # 7 images: 4 tasks
    rng = np.random.default_rng(4)
    for k in range(7):
        save_image(tmp_path / "w" / f"{k}.png", rng.integers(0, 256, (9, 12, 3), np.uint8))
    alone = load_dataset(tmp_path / "w", image_size=8, in_memory=True, progress=False)
    ahead = load_dataset(tmp_path / "w", image_size=8, in_memory=True, workers=2, progress=False)
    assert ahead.in_memory
    np.testing.assert_array_equal(alone.uint8(), ahead.uint8())
