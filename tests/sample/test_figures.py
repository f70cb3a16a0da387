"""The papers' figures: what each grid holds, checked against independent sampling runs,
and the `diffuse figures` commands."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from diffuse.checkpoint import save_checkpoint
from diffuse.cli import main
from diffuse.diffusion import seeded_generators
from diffuse.diffusion.samplers import slerp
from diffuse.errors import ConfigError
from diffuse.rendering import to_uint8
from diffuse.sample import (
    Figure,
    SamplerSettings,
    Stage,
    completions,
    generate,
    interpolation,
    latent_interpolation,
    progressive,
)
from helpers.sample_models import DIFFUSION, base_unet


@pytest.fixture(scope="module")
def model():
    return base_unet()


def stage_of(model, name="ddim", steps="6", **settings):
    return Stage(model, DIFFUSION, SamplerSettings(name, steps, **settings))


def test_progressive_columns_are_predictions_ending_at_the_sample(model):
    stage = stage_of(model)
    figure = progressive(stage, 2, seed=4, classes=[3], columns=4)
    assert figure.tiles.shape == (2, 4, 8, 8, 1)
    shown = stage.process.timestep_map[[5, 3, 2, 0]] + 1  # 4 of the 6 steps, evenly
    assert figure.column_labels == [f"t={t}" for t in shown] and shown[0] == 1000
    assert figure.row_labels == ["class 3", "class 3"]
    samples = generate(stage, 2, seed=4, classes=[3]).images
    assert np.abs(figure.tiles[:, -1].astype(int) - samples).max() <= 1
    assert np.abs(figure.tiles[:, 0].astype(int) - samples).max() > 10  # the start is not


def test_completions_share_a_latent_and_differ_less_the_later_they_start(model):
    stage = stage_of(model, "ddpm", "10")
    figure = completions(stage, [1000, 1], k=3, seed=2, classes=[5])
    assert figure.tiles.shape == (2, 4, 8, 8, 1)
    assert figure.row_labels == ["t=1000", "t=1"]
    assert figure.column_labels == ["x_t", "sample 1", "sample 2", "sample 3"]
    x_T = stage.start_noise(seeded_generators([2]))
    np.testing.assert_array_equal(figure.tiles[0, 0], to_uint8(x_T)[0])
    from_noise, from_last = figure.tiles[0, 1:].astype(int), figure.tiles[1, 1:].astype(int)
    assert np.abs(from_noise[0] - from_noise[1]).max() > 10  # fresh noise: new images
    # From t = 1 the only step left adds no noise: every completion is the same image.
    assert np.abs(from_last - from_last[0]).max() == 0


def test_completions_need_a_stochastic_sampler(model):
    with pytest.raises(ConfigError, match="stochastic sampler"):
        completions(stage_of(model, "dpm++2m"), [500])
    with pytest.raises(ConfigError, match="outside the chain"):
        completions(stage_of(model, "ddpm"), [1001])


def test_interpolation_ends_near_the_sources_when_mixed_late(model):
    stage = stage_of(model, "ddpm", "10")
    images = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    figure = interpolation(stage, images[0], images[1], [1, 1000], lambdas=3, label=2)
    assert figure.tiles.shape == (2, 5, 8, 8, 1)
    assert figure.column_labels == ["source", "0.00", "0.50", "1.00", "source"]
    sources = to_uint8(images).astype(int)
    late = figure.tiles[0].astype(int)
    assert np.abs(late[0] - sources[0]).max() == 0 and np.abs(late[-1] - sources[1]).max() == 0
    # Encoded at t = 1, decoding returns each source within a few levels.
    assert np.abs(late[1] - sources[0]).max() <= 4 and np.abs(late[3] - sources[1]).max() <= 4
    assert np.abs(figure.tiles[1, 1].astype(int) - sources[0]).max() > 20  # from x_T: not
    with pytest.raises(ConfigError, match="give a class"):
        interpolation(stage, images[0], images[1], [1])


def test_latent_interpolation_ends_on_the_ddim_samples_of_the_two_seeds(model):
    stage = stage_of(model, "ddim", "5")
    figure = latent_interpolation(stage, pairs=1, lambdas=4, seed=6, label=1)
    samples = generate(stage, 2, seed=6, classes=[1]).images.astype(int)
    assert figure.tiles.shape == (1, 4, 8, 8, 1) and figure.row_labels == ["seeds 6,7"]
    assert np.abs(figure.tiles[0, 0] - samples[0]).max() <= 1
    assert np.abs(figure.tiles[0, -1] - samples[1]).max() <= 1


def test_slerp_keeps_the_norm_between_orthogonal_latents():
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])
    path = slerp(a, b, torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[2], b)
    torch.testing.assert_close(path[1], torch.tensor([3.0, 3.0]) / math.sqrt(2))
    torch.testing.assert_close(slerp(a, 2 * a, torch.tensor([0.5]))[0], 1.5 * a)  # parallel


def test_a_figure_renders_as_a_labelled_rgb_grid():
    tiles = np.zeros((2, 3, 8, 8, 1), np.uint8)
    grid = Figure(tiles, ["a", "b"], ["x", "y", "z"]).render(min_pixels=48)
    # 6x enlarged tiles with 2-pixel padding, plus a 16-pixel label band and a left margin
    assert grid.dtype == np.uint8 and grid.shape[2] == 3
    assert grid.shape[0] == 2 * 50 + 2 + 16 and grid.shape[1] > 3 * 50 + 2


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, model):
    return str(
        save_checkpoint(tmp_path_factory.mktemp("figures") / "model", model, diffusion=DIFFUSION)
    )


def test_figure_commands_write_pngs_and_keep_existing_files(checkpoint, tmp_path, capsys):
    sources = []
    for i in range(2):
        path = tmp_path / f"source{i}.png"
        Image.fromarray(np.full((8, 8), 60 + 100 * i, np.uint8)).save(path)
        sources.append(str(path))
    commands = {
        "progressive.png": ["progressive", "--n", "2", "--columns", "3"],
        "completions.png": ["completions", "--at", "1000,1", "--k", "2"],
        "interpolate.png": ["interpolate", "--images", *sources, "--at", "1", "--lambdas", "3"],
        "latent.png": ["interpolate", "--method", "ddim", "--sampler", "ddim", "--pairs", "1"],
    }
    for name, command in commands.items():
        argv = ["figures", *command, checkpoint, "--steps", "4", "--classes", "3", "--no-progress"]
        assert main([*argv, "--out", str(tmp_path / name)]) == 0, capsys.readouterr().err
        assert Image.open(tmp_path / name).mode == "RGB"
    before = (tmp_path / "latent.png").read_bytes()
    argv = [
        "figures",
        "progressive",
        checkpoint,
        "--steps",
        "4",
        "--out",
        str(tmp_path / "latent.png"),
    ]
    assert main(argv) == 2 and "already exists" in capsys.readouterr().err
    assert (tmp_path / "latent.png").read_bytes() == before
    bad = [
        (["completions", checkpoint, "--sampler", "ddim"], "stochastic sampler"),
        (["interpolate", checkpoint, "--method", "ddim", "--images", *sources], "--images is for"),
        (["interpolate", checkpoint, "--classes", "1,2"], "one class"),
        (["completions", checkpoint, "--at", "x"], "--at must be comma-separated integers"),
        (["completions", checkpoint, "--at", ","], "--at names no timestep"),
    ]
    for command, message in bad:
        assert main(["figures", *command, "--out", str(tmp_path / "bad.png")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad.png").exists()
