"""Sweeps of a sampling setting: the points, their samples and metrics against independent
computations, and `diffuse sweep` end to end (with a small stand-in feature network; the
real Inception in a slow test)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import diffuse.cli.sweep as sweep_cli
from diffuse.checkpoint import save_checkpoint
from diffuse.cli import main
from diffuse.data import load_dataset
from diffuse.errors import ConfigError
from diffuse.eval.metrics import fid, kid, precision_recall
from diffuse.eval.reference import ReferenceStatistics
from diffuse.eval.sweep import (
    iter_sweep,
    parse_values,
    plan_sweep,
    run_sweep,
    sweep_metrics,
    sweep_points,
    write_sweep,
)
from diffuse.sample import SamplerSettings, Stage, generate
from helpers.sample_models import DIFFUSION, base_unet, classifier
from helpers.stand_in_network import ProjectedPixels, replace_inception


@pytest.fixture(scope="module")
def reference():
    images = load_dataset("digits", split="train", class_cond=False).uint8(range(40))
    activations = ProjectedPixels()(images, spatial=True)
    return ReferenceStatistics.from_activations(activations, {"dataset": "digits", "n": 40})


def stage(model=None, sampler="ddim", **guidance):
    return Stage(model or base_unet(), DIFFUSION, SamplerSettings(sampler, "3"), **guidance)


def test_values_are_parsed_and_checked():
    assert parse_values("steps", " 5, 10,20 ") == [5, 10, 20]
    assert parse_values("cfg", "0,1.5,-0.5") == [0.0, 1.5, -0.5]
    assert parse_values("guidance-interval", [0.5, 2]) == [0.5, 2.0]
    for param, text, message in [
        ("strength", "1", "cannot sweep 'strength'"),
        ("steps", " , ", "no values to sweep steps over"),
        ("steps", "5,x", "must be numbers"),
        ("steps", "2.5", "positive integers"),
        ("steps", "0,5", "positive integers"),
        ("cfg", "1,inf", "must be finite"),
        ("guidance-interval", "0,1", "must be > 0"),
        ("classifier-scale", "1,2,1", "may not repeat"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_values(param, text)


def test_points_set_the_swept_value_for_each_sampler():
    base = stage(cfg=1.0, cfg_interval=(0.2, 50.0))
    points = sweep_points(base, "steps", [2, 5], samplers=["ddim", "dpm++2m"], spacing="quad")
    assert [(p.sampler, p.value, p.stage.sampler.steps) for p in points] == [
        ("ddim", 2, "quad2"), ("ddim", 5, "quad5"), ("dpm++2m", 2, "quad2"), ("dpm++2m", 5, "quad5"),
    ]  # fmt: skip
    assert all(p.stage.cfg == 1.0 and p.stage.model is base.model for p in points)
    (point,) = sweep_points(base, "cfg", [3.0])
    assert point.stage.cfg == 3.0 and point.stage.sampler == base.sampler
    (point,) = sweep_points(base, "guidance-interval", [7.0])
    assert point.stage.cfg_interval == (0.2, 7.0)
    (point,) = sweep_points(stage(cfg=1.0), "guidance-interval", [7.0])
    assert point.stage.cfg_interval == (0.0, 7.0)
    guided = stage(classifier=classifier())
    points = sweep_points(guided, "classifier-scale", [1.0, 4.0])
    assert [p.stage.classifier_scale for p in points] == [1.0, 4.0]


@pytest.mark.parametrize(
    "base, param, values, options, message",
    [
        (None, "classifier-scale", [1, 2], {}, "needs a noisy classifier"),
        (None, "guidance-interval", [1], {}, "give its weight"),
        ("no_null", "cfg", [1], {}, "null class"),
        (None, "steps", [1, 4], {"spacing": "quad"}, "quadratic spacing needs 2"),
        (None, "steps", [4], {"spacing": "cosine"}, "unknown spacing"),
        (None, "steps", [4], {"samplers": ["ddim", "euler"]}, "unknown sampler 'euler'"),
    ],
)
def test_impossible_sweeps_are_refused_when_planned(base, param, values, options, message):
    base = stage(base_unet(null_class=False)) if base == "no_null" else stage()
    with pytest.raises(ConfigError, match=message):
        sweep_points(base, param, values, **options)


def test_each_point_is_the_sample_pipeline_with_the_same_seeds(reference):
    extractor = ProjectedPixels()
    points = sweep_points(stage(), "steps", [2, 4], samplers=["ddim", "dpm++2m"])
    results = list(iter_sweep(points, reference, 10, seed=5, extractor=extractor, progress=False))
    assert [(row["sampler"], row["value"]) for _, _, row in results] == [
        ("ddim", 2), ("ddim", 4), ("dpm++2m", 2), ("dpm++2m", 4),
    ]  # fmt: skip
    labels = results[0][1].labels
    for point, samples, row in results:
        alone = Stage(base_unet(), DIFFUSION, SamplerSettings(point.sampler, str(point.value)))
        expected = generate(alone, 10, seed=5)
        np.testing.assert_array_equal(samples.images, expected.images)
        np.testing.assert_array_equal(samples.labels, labels)  # classes from the same seeds
        features = extractor(samples.images).pool
        assert row["fid"] == pytest.approx(fid(features, reference.pool), rel=1e-9)
        assert row["sfid"] == pytest.approx(fid(features[:, :3], reference.spatial), rel=1e-9)
        precision, recall = precision_recall(reference.features, features)
        assert (row["precision"], row["recall"]) == (precision, recall)
        assert (row["kid"], row["kid_std"]) == kid(reference.features, features)
        assert {"is", "is_std"} <= set(row) and row["sampling_seconds"] > 0
    fids = [row["fid"] for _, _, row in results]
    assert fids[0] != fids[1] and fids[1] != fids[3]  # steps and sampler both matter
    (row,) = run_sweep(points[:1], reference, 10, seed=5, extractor=extractor, progress=False)
    assert row["fid"] == results[0][2]["fid"]


def test_metrics_default_to_what_the_reference_and_the_sample_count_allow(reference):
    statistics_only = ReferenceStatistics(reference.pool)
    assert sweep_metrics(None, reference, True, 10) == ("fid", "kid", "sfid", "is", "pr")
    assert sweep_metrics(None, reference, True, 9) == ("fid", "kid", "sfid", "pr")
    assert sweep_metrics(None, reference, True, 3) == ("fid", "kid", "sfid")
    assert sweep_metrics(None, statistics_only, False, 100) == ("fid",)
    assert sweep_metrics("pr", None, False, 100) == ("pr",)  # the reference not yet known
    for metrics, ref, n, message in [
        ("fid,pr", statistics_only, 100, "pr needs the reference's features"),
        ("kid", statistics_only, 100, "kid needs the reference's features"),
        ("kid", reference, 1, "kid needs at least 2 samples"),
        ("sfid", statistics_only, 100, "sfid needs the reference's spatial statistics"),
        ("is", reference, 100, "logits"),
        ("is", reference, 9, "needs at least 10, got 9"),
        ("pr", reference, 3, "more than k = 3 samples"),
        (None, reference, 1, "fid needs at least 2 samples"),
    ]:
        with pytest.raises(ConfigError, match=message):
            sweep_metrics(metrics, ref, metrics == "is" and n < 10, n)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"samplers": " , "}, "--samplers names no sampler"),
        ({"classes": [12]}, "out of range"),
        ({"batch_size": 0}, "batch size must be a positive integer"),
    ],
)
def test_python_callers_get_the_commands_checks(options, message):
    with pytest.raises(ConfigError, match=message):
        plan_sweep(stage(), "steps", "2,4", 10, **options)


def test_a_planned_sweep_writes_what_the_command_writes(reference, tmp_path):
    plan = plan_sweep(stage(), "cfg", "0,2", 10, samplers="ddim", classes=[1, 2])
    assert [point.value for point in plan.points] == [0.0, 2.0] and plan.samplers == ["ddim"]
    folder = tmp_path / "sweep"
    rows, written = write_sweep(
        folder, plan, reference, seed=3, metrics="fid", extractor=ProjectedPixels(),
        record={"checkpoint": "here"}, progress=False,
    )  # fmt: skip
    assert written == ["sweep.json", "sweep.csv", "fid.png"]
    summary = json.loads((folder / "sweep.json").read_text())
    assert summary["checkpoint"] == "here" and summary["cfg"] is None
    assert summary["classes"] == [1, 2] and summary["steps"] == {"ddim": "3"}
    assert [point["fid"] for point in summary["points"]] == [row["fid"] for row in rows]
    with np.load(folder / "samples" / "ddim_cfg_2.npz") as npz:
        assert npz["arr_0"].shape[0] == 10 and list(npz["arr_1"][:3]) == [1, 2, 1]

    # A folder that already holds a sweep is refused before any sampling and kept.
    before = (folder / "sweep.json").read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        write_sweep(folder, plan, reference, extractor=ProjectedPixels(), progress=False)
    assert (folder / "sweep.json").read_bytes() == before


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep-checkpoints")
    return {
        name: str(save_checkpoint(root / name, network, diffusion=DIFFUSION))
        for name, network in [
            ("model", base_unet()),
            ("no_null", base_unet(null_class=False)),
            ("classifier", classifier()),
        ]
    }


@pytest.fixture
def stand_in(monkeypatch):
    """`diffuse sweep` with the stand-in network in place of the Inception."""
    return replace_inception(monkeypatch, sweep_cli)


def test_cli_sweeps_steps_for_two_samplers(checkpoints, stand_in, tmp_path, capsys):
    out, cache = tmp_path / "sweep", tmp_path / "cache"
    argv = [
        "sweep", checkpoints["model"], "--ref", "digits", "--ref-n", "40", "--cache-dir",
        str(cache), "--param", "steps", "--values", "2,4", "--samplers", "ddim,dpm++2m",
        "--n", "10", "--batch-size", "4", "--seed", "2", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["param"] == "steps" and summary["samplers"] == ["ddim", "dpm++2m"]
    assert summary["reference"]["n"] == 40 and summary["n"] == 10
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [(row["sampler"], row["value"]) for row in rows] == [
        ("ddim", "2"), ("ddim", "4"), ("dpm++2m", "2"), ("dpm++2m", "4"),
    ]  # fmt: skip
    for name in ("fid.png", "kid.png", "sfid.png", "precision_recall.png", "inception_score.png"):
        assert (out / name).stat().st_size > 1000
    with np.load(out / "samples" / "dpm++2m_steps_4.npz") as npz:
        images = npz["arr_0"]
    alone = Stage(base_unet(), DIFFUSION, SamplerSettings("dpm++2m", "4"))
    # In the sweep's batches of 4: the CPU kernels round alike only at equal batch sizes.
    np.testing.assert_array_equal(images, generate(alone, 10, seed=2, batch_size=4).images)
    reference = ReferenceStatistics.load(next(cache.iterdir()))
    assert float(rows[3]["fid"]) == pytest.approx(
        fid(ProjectedPixels()(images).pool, reference.pool), rel=1e-9
    )
    table = capsys.readouterr().out
    assert "sampler" in table and "FID" in table and "IS" in table and "dpm++2m" in table
    assert "KID" in table

    # An existing folder is refused before any work and kept; --overwrite replaces it.
    before = (out / "sweep.json").read_bytes()
    made = len(stand_in)
    assert main([*argv[:-1], "--values", "3", "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "sweep.json").read_bytes() == before and len(stand_in) == made
    assert main([*argv, "--values", "3", "--overwrite", "--metrics", "fid"]) == 0
    assert [row["value"] for row in json.loads((out / "sweep.json").read_text())["points"]] == [
        3,
        3,
    ]
    assert not (out / "precision_recall.png").exists()


@pytest.mark.parametrize(
    "model, extra, message",
    [
        ("model", ["--param", "steps", "--values", ""], "no values to sweep"),
        ("model", ["--param", "classifier-scale", "--values", "1,2"], "--classifier CKPT"),
        ("no_null", ["--param", "cfg", "--values", "0,1"], "null class"),
        ("model", ["--param", "steps", "--values", "2", "--metrics", "fid,xid"], "unknown metrics"),
        ("model", ["--param", "steps", "--values", "2", "--classes", "12"], "out of range"),
        ("classifier", ["--param", "steps", "--values", "2"], "not a diffusion model"),
    ],
)
def test_cli_refuses_bad_sweeps_before_any_work(
    checkpoints, stand_in, tmp_path, capsys, model, extra, message
):
    out = tmp_path / "sweep"
    argv = ["sweep", checkpoints[model], "--ref", "digits", "--n", "4", "--out", str(out)]
    assert main([*argv, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and all(extractor.calls == 0 for extractor in stand_in)


def test_cli_refuses_an_unknown_parameter(checkpoints, tmp_path, capsys):
    argv = ["sweep", checkpoints["model"], "--ref", "digits", "--n", "4", "--param", "eta"]
    with pytest.raises(SystemExit):
        main([*argv, "--values", "1", "--out", str(tmp_path / "sweep")])
    assert "invalid choice: 'eta'" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_sweep_with_the_real_inception(checkpoints, tmp_path):
    out = tmp_path / "sweep"
    argv = [
        "sweep", checkpoints["model"], "--ref", "digits", "--ref-n", "20", "--cache-dir",
        str(tmp_path / "cache"), "--param", "cfg", "--values", "0,3", "--steps", "4",
        "--n", "20", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    points = json.loads((out / "sweep.json").read_text())["points"]
    assert [point["value"] for point in points] == [0.0, 3.0]
    assert all(point["fid"] > 0 and 0 <= point["precision"] <= 1 for point in points)
