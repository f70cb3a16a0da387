"""Nearest neighbours (DDPM Figs. 12, 15): the search against brute force, the figure, and
`diffuse neighbors` end to end on the digits."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from diffuse.cli import main
from diffuse.data import load_dataset
from diffuse.errors import ConfigError, DataError
from diffuse.eval.features import InceptionActivations
from diffuse.eval.neighbors import (
    embed,
    match_channels,
    nearest_neighbors,
    nearest_vectors,
    neighbor_figure,
)


def brute_force(queries: np.ndarray, references: np.ndarray, k: int):
    """Every distance by subtraction in float64, sorted by (distance, index)."""
    r = references.reshape(len(references), -1).astype(np.float64)
    distances = np.stack(
        [np.sqrt(((r - q) ** 2).sum(1)) for q in queries.reshape(len(queries), -1)]
    )
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(distances, order, axis=1)


def assert_exact_pixel_distances(indices, distances, expected_indices, expected_distances):
    """Same neighbours, same squared distances exactly, the same distances to 4 ulps.

    Squared distances of integer pixels are integers, exact in float64 on both sides, so
    the order and the squares must agree exactly. The square root is then taken by torch's
    vectorized kernel on one side and numpy's on the other, which differ by an ulp on some
    CPUs (seen on an AMD EPYC: 590.2779006535819 against 590.277900653582).
    """
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(np.rint(distances**2), np.rint(expected_distances**2))
    np.testing.assert_allclose(distances, expected_distances, rtol=4 * np.finfo(float).eps)


@pytest.mark.parametrize("batch_size", [1, 7, 4096])
def test_nearest_vectors_equal_brute_force_for_any_block_size(batch_size):
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(9, 12)).astype(np.float32)
    references = rng.normal(size=(50, 12)).astype(np.float32) * 3 + 1
    indices, distances = nearest_vectors(queries, references, 6, batch_size=batch_size)
    expected_indices, expected_distances = brute_force(queries, references, 6)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-12)
    assert indices.dtype == np.int64 and distances.dtype == np.float64


def test_integer_pixels_give_exact_distances_and_ties_keep_the_lower_index():
    # Pixels 0..255: every squared distance is an integer, computed exactly in float64.
    # References repeat, so ties must resolve to the lower index, whichever block they
    # were read in.
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
    references = np.concatenate([base, base[::-1], base])
    queries = np.concatenate([base[:2], rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)])
    indices, distances = nearest_vectors(queries, references, 5, batch_size=4)
    expected_indices, expected_distances = brute_force(queries, references, 5)
    assert_exact_pixel_distances(indices, distances, expected_indices, expected_distances)
    assert indices[0, :3].tolist() == [0, 11, 12] and distances[0, 0] == 0


def test_sixty_thousand_references_in_blocks():
    rng = np.random.default_rng(2)
    references = rng.integers(0, 256, (60_000, 8, 8), dtype=np.uint8)
    queries = references[[123, 59_999, 4_096]].copy()
    queries[1, 0] = 0  # a near copy of the last reference
    indices, distances = nearest_vectors(queries, references, 4)
    expected_indices, expected_distances = brute_force(queries, references, 4)
    assert_exact_pixel_distances(indices, distances, expected_indices, expected_distances)
    assert indices[:, 0].tolist() == [123, 59_999, 4_096] and distances[0, 0] == 0 < distances[1, 0]


class FeaturesOfPixelSums:
    """A stand-in feature network: the sum of each row of pixels as the pool features."""

    has_logits = False

    def __call__(self, images, *, spatial=False, logits=False, progress=True):
        rows = np.asarray(images, dtype=np.float64).reshape(len(images), images.shape[1], -1)
        return InceptionActivations(rows.sum(2))


def test_inception_space_compares_features_not_pixels():
    # Reference 1 has the query's row sums with its pixels moved: nearest in feature space,
    # far in pixel space.
    query = np.zeros((1, 4, 4), np.uint8)
    query[0, :, 0] = [10, 20, 30, 40]
    moved = np.roll(query, 2, axis=2)
    near = query.copy()
    near[0, 0, 0] += 5
    references = np.concatenate([near, moved])
    indices, distances = nearest_neighbors(
        query, references, 2, space="inception", extractor=FeaturesOfPixelSums()
    )
    assert indices[0].tolist() == [1, 0] and distances[0].tolist() == [0.0, 5.0]
    indices, _ = nearest_neighbors(query, references, 2, space="pixel")
    assert indices[0].tolist() == [0, 1]
    assert embed(query, "pixel") is query


def test_bad_requests_are_refused():
    images = np.zeros((4, 8, 8, 1), np.uint8)
    with pytest.raises(ConfigError, match=r"k must be an integer in 1 \.\. 4"):
        nearest_vectors(images, images, 5)
    with pytest.raises(ConfigError, match="unknown space 'clip'"):
        nearest_neighbors(images, images, 1, space="clip")
    with pytest.raises(DataError, match=r"\[8, 8, 1\] images and references \[8, 8, 3\]"):
        nearest_neighbors(images, np.zeros((4, 8, 8, 3), np.uint8), 1)
    with pytest.raises(DataError, match="dtype float32"):
        nearest_neighbors(images.astype(np.float32), images, 1)


def test_channels_are_matched_as_pil_converts_them():
    rgb = np.random.default_rng(3).integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)
    grey = match_channels(rgb, 1, batch_size=2)
    expected = np.stack([np.asarray(Image.fromarray(image).convert("L")) for image in rgb])
    np.testing.assert_array_equal(grey[..., 0], expected)
    np.testing.assert_array_equal(match_channels(grey, 3), np.repeat(grey, 3, axis=3))
    assert match_channels(rgb, 3) is rgb


def test_figure_puts_each_sample_before_its_neighbours():
    samples = np.full((2, 4, 4), 7, np.uint8)
    neighbors = np.arange(2 * 3).astype(np.uint8).reshape(2, 3, 1, 1, 1).repeat(4, 2).repeat(4, 3)
    figure = neighbor_figure(samples, neighbors)
    assert figure.tiles.shape == (2, 4, 4, 4, 1)
    assert (figure.tiles[:, 0] == 7).all() and (figure.tiles[1, 3] == 5).all()
    assert figure.column_labels == ["sample", "NN 1", "NN 2", "NN 3"]
    assert figure.row_labels == ["#0", "#1"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", split="train", class_cond=False).uint8()


def test_cli_finds_training_images_themselves_first(digits, tmp_path, capsys):
    # Samples that are training images 5, 17 and 200 (one slightly changed): their
    # nearest neighbour is that image; the table matches a brute-force search.
    samples = digits[[5, 17, 200]].copy()
    samples[2, 0, 0, 0] = 255 - samples[2, 0, 0, 0]
    path = tmp_path / "samples.npz"
    np.savez(path, arr_0=samples)
    out = tmp_path / "nn"
    argv = ["neighbors", str(path), "--data", "digits", "--k", "4", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    table = json.loads((out / "neighbors.json").read_text())
    expected_indices, expected_distances = brute_force(samples, digits, 4)
    assert table["neighbors"] == expected_indices.tolist()
    np.testing.assert_allclose(table["distances"], expected_distances, rtol=1e-12)
    assert [row[0] for row in table["neighbors"]] == [5, 17, 200]
    assert table["n_data"] == len(digits) and table["space"] == "pixel"
    figure = np.asarray(Image.open(out / "neighbors.png"))
    assert figure.shape[0] > 3 * 48 and figure.shape[1] > 5 * 48
    assert "5: 0.0" in capsys.readouterr().out

    # An existing folder is refused and kept; a .png output is one file.
    before = (out / "neighbors.json").read_bytes()
    assert main([*argv, "--k", "2", "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "neighbors.json").read_bytes() == before
    png = tmp_path / "fig.png"
    assert main([*argv[:-2], "--n-samples", "1", "--out", str(png), "--no-progress"]) == 0
    assert Image.open(png).size[1] < figure.shape[0]


def test_cli_searches_rgb_samples_in_grey_data_converted(digits, tmp_path):
    samples = np.repeat(digits[[3, 9]], 3, axis=3)
    path = tmp_path / "rgb.npz"
    np.savez(path, arr_0=samples)
    out = tmp_path / "nn"
    argv = ["neighbors", str(path), "--data", "digits", "--k", "1", "--n-data", "20"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    table = json.loads((out / "neighbors.json").read_text())
    assert table["neighbors"] == [[3], [9]] and table["distances"] == [[0.0], [0.0]]
    assert np.asarray(Image.open(out / "neighbors.png")).shape[2] == 3


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--k", "0"], "--k must be at least 1"),
        (["--n-data", "3", "--k", "5"], "--n-data must lie in 5 (--k) .. 1498"),
        (["--data", "nowhere"], "nowhere"),
        (["--split", "valid"], "unknown split 'valid'"),
    ],
)
def test_cli_refuses_bad_requests_before_writing(digits, tmp_path, capsys, extra, message):
    path = tmp_path / "samples.npz"
    np.savez(path, arr_0=digits[:2])
    out = tmp_path / "nn"
    argv = ["neighbors", str(path), "--data", "digits", "--out", str(out), "--no-progress"]
    assert main([*argv, *extra]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_cli_refuses_non_square_samples_and_a_folder_named_as_a_figure(tmp_path, capsys):
    path = tmp_path / "wide.npz"
    np.savez(path, arr_0=np.zeros((2, 8, 10), np.uint8))
    out = tmp_path / "fig.png"
    assert main(["neighbors", str(path), "--data", "digits", "--out", str(out)]) == 2
    assert "8x10" in capsys.readouterr().err and not out.exists()
    out.mkdir()
    assert main(["neighbors", str(path), "--data", "digits", "--out", str(out)]) == 2
    assert "existing folder" in capsys.readouterr().err


@pytest.mark.needs_inception
def test_cli_inception_space_finds_the_training_images_themselves(digits, tmp_path):
    # The real FID network on 3 training images and 2 samples (two of those images).
    path = tmp_path / "samples.npz"
    np.savez(path, arr_0=digits[[2, 0]])
    out, cache = tmp_path / "nn", tmp_path / "cache"
    argv = [
        "neighbors", str(path), "--data", "digits", "--space", "inception", "--k", "2",
        "--n-data", "3", "--cache-dir", str(cache), "--out", str(out), "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    table = json.loads((out / "neighbors.json").read_text())
    assert [row[0] for row in table["neighbors"]] == [2, 0]
    assert (
        max(row[0] for row in table["distances"]) < 1e-3 < min(row[1] for row in table["distances"])
    )
    assert len(list(cache.iterdir())) == 1  # the data's features at the samples' size
