"""diffuse.data: every loader on real bytes written here, plus the real digits and Fashion-MNIST.

No test touches the network: the one download function is replaced for every test.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import diffuse.data.download as download_module
import diffuse.data.locate as locate_module
import diffuse.data.mnist as mnist_module
from diffuse.data import ImageDataset, center_crop_resize, load_dataset, random_flip
from diffuse.data.digits import split_indices
from diffuse.data.idx import read_idx
from diffuse.errors import ConfigError, DataError, MissingFileError

REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")


# ---------------------------------------------------------------- fixtures and fakes


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """System and cache folders inside tmp_path, no $DIFFUSE_CACHE, and downloads that fail
    unless a test publishes fake files (see ``publish``); $DIFFUSE_OFFLINE is lifted so that
    they can."""

    def no_network(url, destination, description):
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(download_module, "fetch_url", no_network)
    monkeypatch.delenv(locate_module.OFFLINE_VAR)
    monkeypatch.delenv(locate_module.CACHE_ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(locate_module, "SYSTEM_DATA_ROOT", tmp_path / "system")


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file: 0, 0, type code, ndim, big-endian sizes, big-endian values."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int16): 0x0B, np.dtype(np.float32): 0x0D}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    sizes = np.array(array.shape, dtype=">u4").tobytes()
    return header + sizes + array.astype(array.dtype.newbyteorder(">")).tobytes()


def fake_images(n: int, seed: int, shape=(28, 28)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def write_idx_split(folder: Path, split: str, n: int, seed: int = 0, gz: bool = True):
    """Write a fake MNIST-format split; return (images, labels)."""
    prefix = {"train": "train", "test": "t10k"}[split]
    images = fake_images(n, seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
        data = idx_bytes(array)
        name = f"{prefix}-{kind}-ubyte"
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return images, labels


def cifar_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    """CIFAR-10 binary records: label byte, then the R, G and B planes."""
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return np.concatenate([labels[:, None].astype(np.uint8), planes], axis=1).tobytes()


def write_cifar_folder(folder: Path, per_batch: int = 3):
    """Fake cifar-10-batches-bin; return (train images, train labels, test images, labels)."""
    batches = folder / "cifar-10-batches-bin"
    batches.mkdir(parents=True)
    rng = np.random.default_rng(5)
    names = [f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]
    arrays = []
    for name in names:
        images = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).astype(np.uint8)
        (batches / name).write_bytes(cifar_bytes(images, labels))
        arrays.append((images, labels))
    train_x = np.concatenate([a[0] for a in arrays[:5]])
    train_y = np.concatenate([a[1] for a in arrays[:5]])
    return train_x, train_y, arrays[5][0], arrays[5][1]


def tar_gz(source_folder: Path, archive: Path) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source_folder, arcname=source_folder.name)


def save_image(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path)


def assert_box_means(got: np.ndarray, means: np.ndarray) -> None:
    """PIL's BOX filter in 8-bit fixed point: within 1 of the exact mean, 1/2 on average."""
    error = np.abs(got.astype(np.float64) - means)
    assert error.max() <= 1.0 and error.mean() <= 0.5


def scaled(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels.astype(np.float32) / 127.5 - 1.0)


# ---------------------------------------------------------------- IDX format


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


# ---------------------------------------------------------------- Fashion-MNIST / MNIST


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


# ---------------------------------------------------------------- downloads (faked)


def serve(monkeypatch, files: dict[str, bytes], fail_first: bool = False):
    """Replace the network with ``files``; return the list of URLs fetched."""
    fetched = []

    def fake_fetch(url, destination, description):
        fetched.append(url)
        if fail_first and len(fetched) == 1:
            raise OSError("connection refused")
        destination.write_bytes(files[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(download_module, "fetch_url", fake_fetch)
    return fetched


def publish(monkeypatch, name: str, files: dict[str, bytes]) -> None:
    """Make the published checksums of ``name`` those of ``files``."""
    source, classes = mnist_module.IDX_SETS[name]
    remote = tuple(
        dataclasses.replace(r, md5=download_module.hashlib.md5(files[r.name]).hexdigest())
        for r in source.remote_files
        if r.name in files
    )
    patched = dataclasses.replace(source, remote_files=remote)
    monkeypatch.setitem(mnist_module.IDX_SETS, name, (patched, classes))


def fake_idx_files(tmp_path: Path, split: str, n: int) -> tuple[dict[str, bytes], np.ndarray]:
    images, _ = write_idx_split(tmp_path / "served", split, n)
    files = {p.name: p.read_bytes() for p in (tmp_path / "served").iterdir()}
    return files, images


def test_download_verifies_and_moves_into_the_data_dir(tmp_path, monkeypatch):
    files, images = fake_idx_files(tmp_path, "test", 6)
    publish(monkeypatch, "mnist", files)
    fetched = serve(monkeypatch, files, fail_first=True)
    data = load_dataset("mnist", split="test", data_dir=tmp_path / "mine")
    np.testing.assert_array_equal(data.uint8()[:, :, :, 0], images)
    assert sorted(p.name for p in (tmp_path / "mine" / "mnist").iterdir()) == sorted(files)
    assert "yann.lecun.com" in fetched[1]  # the first mirror failed, the second served
    count = len(fetched)
    load_dataset("mnist", split="test", data_dir=tmp_path / "mine")
    assert len(fetched) == count  # found on disk the second time


def test_download_without_data_dir_goes_to_the_user_cache(tmp_path, monkeypatch):
    files, _ = fake_idx_files(tmp_path, "train", 3)
    publish(monkeypatch, "fashion-mnist", files)
    serve(monkeypatch, files)
    data = load_dataset("fashion-mnist")
    assert data.origin == str(tmp_path / "cache" / "diffuse" / "fashion-mnist")


def test_offline_setting_refuses_a_download_that_would_succeed(tmp_path, monkeypatch):
    files, _ = fake_idx_files(tmp_path, "train", 3)
    publish(monkeypatch, "fashion-mnist", files)
    serve(monkeypatch, files)
    monkeypatch.setenv("DIFFUSE_OFFLINE", "1")
    with pytest.raises(MissingFileError, match=r"downloading is off: \$DIFFUSE_OFFLINE is set"):
        load_dataset("fashion-mnist")
    assert not (tmp_path / "cache").exists()
    monkeypatch.setenv("DIFFUSE_OFFLINE", "0")
    assert len(load_dataset("fashion-mnist")) == 3


def test_checksum_mismatch_keeps_nothing_and_damages_nothing(tmp_path, monkeypatch):
    files, _ = fake_idx_files(tmp_path, "train", 3)
    publish(monkeypatch, "mnist", files)
    corrupted = {name: data[:-1] + bytes([data[-1] ^ 0xFF]) for name, data in files.items()}
    serve(monkeypatch, corrupted)
    folder = tmp_path / "mine" / "mnist"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(MissingFileError, match="checksum mismatch"):
        load_dataset("mnist", data_dir=tmp_path / "mine")
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    assert (folder / "notes.txt").read_text() == "mine"


def test_failed_download_leaves_no_folders_behind(tmp_path, monkeypatch):
    def unreachable(url, destination, description):
        raise OSError("network unreachable")

    monkeypatch.setattr(download_module, "fetch_url", unreachable)
    with pytest.raises(MissingFileError, match="network unreachable"):
        load_dataset("mnist", data_dir=tmp_path / "new" / "data")
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------- CIFAR-10


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


# ---------------------------------------------------------------- digits (real)


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


# ---------------------------------------------------------------- folders of images


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


# ---------------------------------------------------------------- names, options, flips


def test_unknown_name_lists_the_known_names():
    with pytest.raises(ConfigError, match="digits, fashion-mnist, mnist, cifar10"):
        load_dataset("imagenet")


@pytest.mark.parametrize(
    "options", [{"split": "valid"}, {"image_size": 0}, {"image_size": 2.5}, {"image_size": True}]
)
def test_bad_options_are_refused(options):
    with pytest.raises(ConfigError):
        load_dataset("digits", **options)


def test_flips_are_mirrors_drawn_from_the_given_generator_only():
    pixels = np.random.default_rng(6).integers(0, 256, (400, 4, 4, 1), dtype=np.uint8)
    data = ImageDataset.from_arrays(pixels, np.zeros(400, np.int64), random_flip=True)
    plain, _ = ImageDataset.from_arrays(pixels).tensors()
    state = torch.get_rng_state()
    first, _ = data.batch(range(400), torch.Generator().manual_seed(9))
    again, _ = data.batch(range(400), torch.Generator().manual_seed(9))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, again)
    flipped = (first == plain.flip(-1)).flatten(1).all(1)
    kept = (first == plain).flatten(1).all(1)
    assert (flipped | kept).all()
    assert 150 < int(flipped.sum()) < 250  # Binomial(400, 1/2): 200 +- 5 sd
    x0, _ = data.get(0, torch.Generator().manual_seed(9))
    assert torch.equal(x0, first[0])
    assert torch.equal(random_flip(plain[:1], torch.Generator().manual_seed(9)), first[:1])


def test_dataset_works_with_a_torch_dataloader():
    data = load_dataset("digits", split="test", random_flip=True)
    loader = torch.utils.data.DataLoader(data, batch_size=7, shuffle=False)
    x, y = next(iter(loader))
    assert x.shape == (7, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    with pytest.raises(IndexError):
        data[len(data)]


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
