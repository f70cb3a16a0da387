"""The reference statistics cache of `diffuse eval`: keyed by what the reference is (a data
set, or a folder's resolved path) and checked against its content, holding what the
metrics asked for need, where the user's cache settings say, and written only when asked.

The network is a stand-in (:mod:`helpers.stand_in_network`, 6-d features of 8x8 grey images):
what is cached and when does not depend on it, and it takes no time.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import diffuse.cli.eval as eval_cli
from diffuse.cli import main
from diffuse.data import load_dataset
from diffuse.eval.cache import cache_folder
from diffuse.eval.features import InceptionActivations
from diffuse.eval.reference import ReferenceStatistics
from helpers.stand_in_network import replace_inception


@pytest.fixture
def made(monkeypatch):
    """The stand-in networks `diffuse eval` built, one per run."""
    return replace_inception(monkeypatch, eval_cli)


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """The first 20 digits training images, uint8 [20, 8, 8, 1]."""
    return load_dataset("digits", split="train", class_cond=False).uint8(range(20))


def write_folder(folder: Path, images: np.ndarray, start: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images, start):
        Image.fromarray(image[..., 0]).save(folder / f"{i:03d}.png")
    return folder


def evaluate(samples: Path, ref: str, out: Path, *options: str) -> dict:
    argv = ["eval", str(samples), "--ref", ref, "--json", str(out), "--overwrite", *options]
    assert main([*argv, "--no-progress"]) == 0
    return json.loads(out.read_text())


def test_two_folders_named_ref_in_different_places_get_their_own_statistics(
    digits, made, tmp_path, monkeypatch, capsys
):
    # `cd A && diffuse eval S --ref ref`, then the same in B, whose `ref` holds other
    # images: the second FID is that of B's images, not a reuse of A's (which gave 0).
    samples, out = tmp_path / "samples.npz", tmp_path / "out.json"
    np.savez(samples, arr_0=digits[:6])
    write_folder(tmp_path / "A" / "ref", digits[:6])
    write_folder(tmp_path / "B" / "ref", digits[6:12])
    monkeypatch.chdir(tmp_path / "A")
    in_a = evaluate(samples, "ref", out, "--metrics", "fid")["metrics"]["fid"]
    monkeypatch.chdir(tmp_path / "B")
    in_b = evaluate(samples, "ref", out, "--metrics", "fid")["metrics"]["fid"]
    uncached = evaluate(samples, "ref", out, "--metrics", "fid", "--no-cache")["metrics"]["fid"]
    assert abs(in_a) < 1e-6 < 0.1 < in_b == uncached
    # No --cache-dir: the entries are in $DIFFUSE_CACHE/ref (a temporary folder here, see
    # conftest.py), one per folder, and each run said where it wrote.
    entries = sorted((Path(os.environ["DIFFUSE_CACHE"]) / "ref").iterdir())
    assert [entry.name.startswith("ref-all-native-") for entry in entries] == [True, True]
    written = [line for line in capsys.readouterr().out.splitlines() if "written to" in line]
    assert len(written) == 2 and {line.split()[-1] for line in written} == set(map(str, entries))


def test_images_added_to_a_reference_folder_are_measured_again(digits, made, tmp_path, capsys):
    samples, out, cache = tmp_path / "samples.npz", tmp_path / "out.json", tmp_path / "cache"
    np.savez(samples, arr_0=digits[:6])
    ref = write_folder(tmp_path / "ref", digits[6:12])
    options = ("--metrics", "fid", "--cache-dir", str(cache))
    before = evaluate(samples, str(ref), out, *options)["metrics"]["fid"]
    assert evaluate(samples, str(ref), out, *options)["metrics"]["fid"] == before
    assert made[-1].calls == 1  # the samples only: the reference came from the cache
    assert "read from the cache" in capsys.readouterr().out
    write_folder(ref, digits[:6], start=6)
    after = evaluate(samples, str(ref), out, *options)
    assert after["reference"]["n"] == 12 and after["metrics"]["fid"] != before
    assert "the reference changed since it was cached" in capsys.readouterr().out
    assert len(list(cache.iterdir())) == 1  # replaced, not added beside


def test_unreadable_cache_entry_is_computed_again(digits, made, tmp_path, capsys):
    samples, out, cache = tmp_path / "samples.npz", tmp_path / "out.json", tmp_path / "cache"
    np.savez(samples, arr_0=digits[:6])
    options = ("--metrics", "fid", "--ref-n", "8", "--cache-dir", str(cache))
    first = evaluate(samples, "digits", out, *options)["metrics"]["fid"]
    (entry,) = cache.iterdir()
    entry.write_bytes(b"cut short")
    assert evaluate(samples, "digits", out, *options)["metrics"]["fid"] == first
    assert "the cached entry was unreadable" in capsys.readouterr().out
    assert ReferenceStatistics.load(entry).n == 8


def test_no_cache_writes_nothing(digits, made, tmp_path, capsys):
    samples, out, cache = tmp_path / "samples.npz", tmp_path / "out.json", tmp_path / "cache"
    np.savez(samples, arr_0=digits[:6])
    options = ("--metrics", "fid", "--ref-n", "8", "--cache-dir", str(cache), "--no-cache")
    evaluate(samples, "digits", out, *options)
    assert not cache.exists()
    assert "computed, not cached" in capsys.readouterr().out


def test_entry_holds_what_the_metrics_need_and_gains_what_a_later_run_asks(
    digits, made, tmp_path, capsys
):
    samples, out, cache = tmp_path / "samples.npz", tmp_path / "out.json", tmp_path / "cache"
    np.savez(samples, arr_0=digits[:16])
    options = ("--ref-n", "20", "--cache-dir", str(cache))

    def stored() -> set[str]:
        (entry,) = cache.iterdir()
        with np.load(entry) as npz:
            return set(npz.files)

    # 20 images of 6-d features: statistics (6x6) are smaller than features (20x6).
    fid = evaluate(samples, "digits", out, "--metrics", "fid", *options)["metrics"]["fid"]
    assert stored() == {"info", "mu", "sigma"}
    both = evaluate(samples, "digits", out, "--metrics", "sfid,pr", *options)["metrics"]
    assert stored() == {"info", "mu", "sigma", "mu_s", "sigma_s", "features"}
    assert "(adding sfid, pr to the cached fid)" in capsys.readouterr().out
    again = evaluate(samples, "digits", out, "--metrics", "fid,sfid,pr", *options)["metrics"]
    assert made[-1].calls == 1 and again == {"fid": fid, **both}


def test_small_sets_store_features_in_place_of_larger_statistics(tmp_path):
    # 16 images: float32 features are 16x2048, their covariance 2048x2048 float64 (32 MB).
    rng = np.random.default_rng(0)
    pool, spatial = (rng.standard_normal((16, d), np.float32).astype(float) for d in (2048, 2023))
    reference = ReferenceStatistics.from_activations(
        InceptionActivations(pool, spatial), {"n": 16}, parts=("fid", "sfid")
    )
    path = tmp_path / "ref.npz"
    reference.save(path)
    assert path.stat().st_size < 300_000  # 66 MB when the covariances were stored
    with np.load(path) as npz:
        assert set(npz.files) == {"info", "features", "features_s"}
    loaded = ReferenceStatistics.load(path)
    np.testing.assert_array_equal(loaded.pool.sigma, reference.pool.sigma)
    np.testing.assert_array_equal(loaded.spatial.sigma, reference.spatial.sigma)
    assert loaded.parts == {"fid", "kid", "sfid", "pr"}  # the pool features serve P/R, KID too


def test_cache_folder_follows_diffuse_cache_then_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFUSE_CACHE", str(tmp_path / "own"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_folder() == tmp_path / "own" / "ref"
    assert cache_folder(tmp_path / "given") == tmp_path / "given"
    monkeypatch.delenv("DIFFUSE_CACHE")
    assert cache_folder() == tmp_path / "xdg" / "diffuse" / "ref"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_folder() == tmp_path / "home" / ".cache" / "diffuse" / "ref"
