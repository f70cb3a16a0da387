"""``diffuse nll`` run as a user would, on the real digits data set."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import pytest

from diffuse import presets
from diffuse.checkpoint import save_checkpoint
from diffuse.cli import main
from diffuse.diffusion import DiffusionConfig
from diffuse.errors import CheckpointError, ConfigError
from diffuse.eval.nll import measure_nll, save_nll
from diffuse.nn import build_network
from diffuse.nn.network_config import ClassifierConfig
from helpers.sample_models import SMALL, randomized

SHORT = DiffusionConfig(schedule="linear", timesteps=25)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    model = presets.build("tiny", device="cpu")
    save_checkpoint(path, model, diffusion=SHORT, step=0)
    return path


def test_nll_writes_the_bound_and_the_rate_distortion_curve(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "nll"
    args = ["nll", str(tiny_checkpoint), "--data", "digits", "--n", "6", "--batch-size", "4"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "nll.json").read_text())
    assert summary["n"] == 6 and summary["split"] == "test" and summary["conditional"]
    assert len(summary["per_image"]) == 6
    assert 0 < summary["bpd"] < 100 and summary["stderr"] > 0  # an untrained network
    rows = list(csv.DictReader((out / "rate_distortion.csv").open()))
    assert len(rows) == 26 and rows[0]["reverse_time"] == "1"
    assert (out / "rate_distortion.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "bits/dim" in printed and "rate_distortion.png" in printed

    # The same seed gives the same figure; an existing folder is kept without --overwrite.
    before = (out / "nll.json").read_bytes()
    assert main([*args, "--out", str(out), "--no-progress"]) == 2
    assert (out / "nll.json").read_bytes() == before
    assert "already exists" in capsys.readouterr().err
    assert main([*args, "--out", str(out), "--no-progress", "--overwrite"]) == 0
    assert json.loads((out / "nll.json").read_text())["bpd"] == summary["bpd"]


def test_nll_refuses_what_it_cannot_evaluate(tiny_checkpoint, tmp_path, capsys):
    classifier = build_network(
        ClassifierConfig(image_size=8, in_channels=1, out_channels=10, **SMALL)
    )
    save_checkpoint(tmp_path / "classifier", classifier)
    out = tmp_path / "out"
    assert main(["nll", str(tmp_path / "classifier"), "--data", "digits", "--out", str(out)]) == 2
    assert "classifier" in capsys.readouterr().err and not out.exists()

    assert main(["nll", str(tiny_checkpoint), "--data", "nowhere", "--out", str(out)]) == 2
    assert "nowhere" in capsys.readouterr().err and not out.exists()

    assert main(["nll", str(tmp_path / "missing"), "--data", "digits", "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err and not out.exists()


def tiny_variant(folder, **changes):
    """A randomized ``tiny`` network with ``changes`` to its settings, saved in ``folder``."""
    config = replace(presets.get("tiny").model_config, **changes)
    save_checkpoint(folder, randomized(build_network(config), seed=1), diffusion=SHORT)
    return str(folder)


def test_unconditional_nll_takes_the_null_class_and_needs_one(tmp_path, capsys):
    model = tiny_variant(tmp_path / "tiny")
    args = ["nll", model, "--data", "digits", "--n", "4", "--batch-size", "4", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "cond")]) == 0
    assert main([*args, "--unconditional", "--out", str(tmp_path / "uncond")]) == 0
    cond, uncond = (
        json.loads((tmp_path / name / "nll.json").read_text()) for name in ("cond", "uncond")
    )
    assert cond["conditional"] and not uncond["conditional"]
    assert uncond["bpd"] != cond["bpd"]  # the same noise: only the labels differ
    capsys.readouterr()

    out = tmp_path / "out"
    no_null = tiny_variant(tmp_path / "no-null", null_class=False)
    assert main(["nll", no_null, "--data", "digits", "--unconditional", "--out", str(out)]) == 2
    assert "needs a model trained with a null class" in capsys.readouterr().err
    rgb = tiny_variant(tmp_path / "rgb", in_channels=3, out_channels=3)
    assert main(["nll", rgb, "--data", "digits", "--out", str(out)]) == 2
    assert "1-channel images; the model takes 3" in capsys.readouterr().err
    assert not out.exists()


def test_python_callers_get_the_commands_checks_and_figures(tiny_checkpoint, tmp_path, capsys):
    with pytest.raises(ConfigError, match="--n and --batch-size must be positive"):
        measure_nll(tiny_checkpoint, "digits", n=0)
    classifier = build_network(
        ClassifierConfig(image_size=8, in_channels=1, out_channels=10, **SMALL)
    )
    save_checkpoint(tmp_path / "classifier", classifier)
    with pytest.raises(CheckpointError, match="holds a classifier network"):
        measure_nll(tmp_path / "classifier", "digits")

    measured = measure_nll(tiny_checkpoint, "digits", n=3, batch_size=2, progress=False)
    summary = measured.summary
    assert summary["n"] == 3 and summary["split"] == "test" and summary["conditional"]
    assert len(summary["per_image"]) == 3 and len(measured.rate_distortion) == 26
    saved = tmp_path / "saved"
    saved.mkdir()
    written = save_nll(saved, measured)
    assert sorted(written) == sorted(path.name for path in saved.iterdir())

    # The command prints and writes the figures the function returns (same seed).
    out = tmp_path / "cli"
    args = ["nll", str(tiny_checkpoint), "--data", "digits", "--n", "3", "--batch-size", "2"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "nll.json").read_text()) == json.loads(
        (saved / "nll.json").read_text()
    )
    assert f"{summary['bpd']:.4f}" in capsys.readouterr().out


def test_the_bound_clips_the_predicted_x0_as_the_model_samples_unless_told_not_to(tmp_path):
    """Near T the cosine schedule's sqrt(abar) is ~1e-3 (here, T = 25): the unclipped x0
    prediction divides the noise's error by it, the clipped one stays within [-1, 1]."""
    path = tmp_path / "cosine"
    cosine = DiffusionConfig(schedule="cosine", timesteps=25)
    save_checkpoint(path, presets.build("tiny", device="cpu"), diffusion=cosine, step=0)
    clipped = measure_nll(path, "digits", n=4, progress=False)
    unclipped = measure_nll(path, "digits", n=4, clip_denoised=False, progress=False)
    assert clipped.summary["clip_denoised"] and not unclipped.summary["clip_denoised"]
    assert max(row["distortion"] for row in clipped.rate_distortion) <= 255.0  # [0, 255] RMSE
    assert unclipped.rate_distortion[0]["distortion"] > 255.0
    out = tmp_path / "nll"
    argv = ["nll", str(path), "--data", "digits", "--n", "4", "--no-clip", "--no-progress"]
    assert main([*argv, "--out", str(out)]) == 0
    summary = json.loads((out / "nll.json").read_text())
    assert summary["clip_denoised"] is False
    assert summary["bpd"] == pytest.approx(unclipped.summary["bpd"], rel=1e-6)
