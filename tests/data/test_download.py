"""Downloads, with the network replaced: checksums verified, nothing half-written kept."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import diffuse.data.download as download_module
import diffuse.data.mnist as mnist_module
from diffuse.data import load_dataset
from diffuse.errors import MissingFileError
from helpers.data_files import write_idx_split


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
