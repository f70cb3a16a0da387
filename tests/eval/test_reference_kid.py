"""What the reference cache keeps for KID: every pool_3 feature of a set up to
KID_REFERENCE_LIMIT images, a fixed random sample of that many of a larger one.

The network is the 6-d stand-in of :mod:`stand_in_network`; the limit is lowered to 8 so
that a 20-image reference is "larger".
"""

import json

import numpy as np
import pytest

import diffuse.cli.eval as eval_cli
import diffuse.eval.reference as reference_module
from diffuse.cli import main
from diffuse.data import load_dataset
from diffuse.errors import ConfigError
from diffuse.eval.evaluate import evaluate
from diffuse.eval.metrics import GaussianStatistics, kid
from diffuse.eval.reference import ReferenceStatistics, kid_sample
from helpers.stand_in_network import ProjectedPixels, replace_inception


@pytest.fixture
def digits() -> np.ndarray:
    return load_dataset("digits", split="train", class_cond=False).uint8(range(20))


def run_eval(samples, cache, out, *options) -> dict:
    argv = ["eval", str(samples), "--ref", "digits", "--ref-n", "20", "--cache-dir", str(cache)]
    assert main([*argv, "--json", str(out), "--overwrite", "--no-progress", *options]) == 0
    return json.loads(out.read_text())


def test_a_large_reference_keeps_a_random_sample_of_its_features_for_kid(
    digits, tmp_path, monkeypatch
):
    made = replace_inception(monkeypatch, eval_cli)
    monkeypatch.setattr(reference_module, "KID_REFERENCE_LIMIT", 8)
    samples, cache, out = tmp_path / "samples.npz", tmp_path / "cache", tmp_path / "out.json"
    np.savez(samples, arr_0=digits[:12])
    first = run_eval(samples, cache, out, "--metrics", "fid,kid")
    (entry,) = cache.iterdir()
    with np.load(entry) as stored:
        assert set(stored.files) == {"info", "mu", "sigma", "features_kid"}  # not all 20
        kept = stored["features_kid"]
    network = ProjectedPixels()
    reference_features = network(digits).pool.astype(np.float32)
    # 8 distinct rows of the reference's 20, in their order: a sample, not the first 8.
    rows = [int(np.flatnonzero((reference_features == row).all(1))[0]) for row in kept]
    assert len(kept) == 8 and rows == sorted(set(rows)) and rows != list(range(8))
    expected = kid(kept, network(digits[:12]).pool)
    assert (first["metrics"]["kid"], first["metrics"]["kid_std"]) == expected
    assert first["kid"] == {"subsets": 100, "subset_size": 8, "reference_features": 8}
    # Read back from the cache, the same sample gives the same KID without the network.
    again = run_eval(samples, cache, out, "--metrics", "kid")
    assert again["metrics"] == {key: first["metrics"][key] for key in ("kid", "kid_std")}
    assert len(made) == 2 and made[-1].calls == 1  # the samples only


def test_a_reference_within_the_limit_keeps_every_feature(digits, tmp_path, monkeypatch):
    replace_inception(monkeypatch, eval_cli)
    samples, cache, out = tmp_path / "samples.npz", tmp_path / "cache", tmp_path / "out.json"
    np.savez(samples, arr_0=digits[:12])
    run_eval(samples, cache, out, "--metrics", "kid")
    (entry,) = cache.iterdir()
    loaded = ReferenceStatistics.load(entry)
    assert loaded.kid_features is None and len(loaded.features) == 20
    assert loaded.parts == {"fid", "kid", "pr"}  # all the features serve these too


def test_kid_sample_is_fixed_and_kid_needs_features(digits):
    features = np.arange(40.0).reshape(20, 2)
    np.testing.assert_array_equal(kid_sample(features, 8), kid_sample(features, 8))
    np.testing.assert_array_equal(kid_sample(features, 30), features)
    # An entry cached before KID existed, with features, serves it; statistics alone do not.
    assert "kid" in ReferenceStatistics(features=np.ones((5, 6), np.float32)).parts
    statistics_only = ReferenceStatistics(GaussianStatistics(np.zeros(6), np.eye(6)))
    with pytest.raises(ConfigError, match="no pool_3 features for KID"):
        evaluate(digits, statistics_only, metrics="kid", extractor=ProjectedPixels())
