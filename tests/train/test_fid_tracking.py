"""FID while training (``train.eval_every``): records at the right steps, the best
checkpoint, a fixed class-balanced sample set, exact resume, and every bad setting refused
before anything is written. The Inception network is replaced by a stand-in feature
network (random projections of the 8x8 pixels), so each run takes seconds."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

import diffuse.train.fid_tracking as fid_tracking
from diffuse.checkpoint import load_checkpoint
from diffuse.cli import main
from diffuse.data import ImageDataset
from diffuse.diffusion.diffusion_config import DiffusionConfig
from diffuse.errors import ConfigError
from diffuse.eval.evaluate import SmallSampleWarning
from diffuse.nn import SuperResConfig, build_network
from diffuse.train import DataSpec, RunSpec, TrainConfig, resume, spec_from_preset, train
from diffuse.train.fid_tracking import FidTracker, check_fid_settings
from diffuse.train.trainer import Trainer
from diffuse.train.training_data import load_training_data
from helpers.run_checks import digest, same_tensors, weights
from helpers.sample_models import SMALL
from helpers.stand_in_network import replace_inception
from helpers.train_processes import resume_run, tiny_run

# A measurement of 12 samples drawn in 2 steps, every 2 training steps of 8 images.
FID_EVERY_2 = ["--batch-size", "8", "--set", "train.eval_every=2"]
FID_EVERY_2 += ["--set", "train.eval_samples=12", "--set", "train.eval_steps=2"]
# The same for the Python API, with 3-step sample grids of 2 columns.
QUICK_MEASUREMENTS = {
    "train.batch_size": 8,
    "train.eval_samples": 12,
    "train.eval_steps": 2,
    "train.sample_steps": 3,
    "train.sample_columns": 2,
}


@pytest.fixture(autouse=True)
def stand_in(monkeypatch):
    """Every FID measurement of these tests uses the stand-in feature network."""
    return replace_inception(monkeypatch, fid_tracking)


def records(run: Path) -> list[dict]:
    """The FID records of a run's metrics.jsonl, in order."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if "fid" in record]


def scripted_fids(monkeypatch, values: list[float]) -> None:
    """Make the measurements give these FIDs in turn (precision and recall 0.5)."""
    given = iter(values)

    def evaluate(images, reference, **options):
        return {"fid": next(given), "precision": 0.5, "recall": 0.5}

    monkeypatch.setattr(fid_tracking, "evaluate", evaluate)


def tiny_spec(**overrides) -> RunSpec:
    return spec_from_preset("tiny", "digits", overrides=overrides)


# ------------------------------------------------------------------ a run


def test_fid_is_recorded_every_n_steps_and_at_the_end_and_its_best_checkpoint_kept(
    tmp_path, capsys
):
    """5 steps measured every 2: records at steps 2, 4 and 5 (the end), with FID,
    precision, recall and the time they took; the bar shows the last FID; RUN/best is the
    checkpoint of the lowest FID, with the EMA weights of that step, and samples."""
    run = tmp_path / "run"
    argv = [*tiny_run(run, "--steps", "5", *FID_EVERY_2), "--set", "train.checkpoint_every=1"]
    argv += ["--set", "train.keep_checkpoints=5"]
    argv.remove("--no-progress")
    assert main(argv) == 0
    out, err = capsys.readouterr()
    measured = records(run)
    assert [r["step"] for r in measured] == [2, 4, 5]
    for record in measured:
        assert record["fid"] > 0 and record["eval_samples"] == 12 and record["eval_seconds"] > 0
        assert 0 <= record["sample_precision"] <= 1 and 0 <= record["sample_recall"] <= 1
    assert f"fid={measured[-1]['fid']:.2f}" in err  # the progress bar's last state
    # 12 samples against 1498 digits in 6-d stand-in features: no small-sample warning
    assert "warning" not in err
    best = min(measured, key=lambda r: r["fid"])
    assert (
        f"best FID:   {best['fid']:.2f} at step {best['step']} (12 samples): {run / 'best'}" in out
    )
    assert load_checkpoint(run / "best").step == best["step"]
    trainer_state = json.loads((run / "best/trainer.json").read_text())
    assert trainer_state["fid_history"] == {
        "best_fid": best["fid"], "best_step": best["step"], "last_step": best["step"]
    }  # fmt: skip
    step_checkpoint = run / f"checkpoints/step-{best['step']:08d}"
    for name in ("model.safetensors", "ema_0.99.safetensors"):
        assert same_tensors(weights(run / "best", name), weights(step_checkpoint, name)), name
    sampled = tmp_path / "samples"
    assert main(["sample", str(run / "best"), "--n", "2", "--steps", "2", "--out", str(sampled),
                 "--no-progress"]) == 0  # fmt: skip
    assert json.loads((sampled / "info.json").read_text())["step"] == best["step"]


def test_a_measurement_is_a_fixed_class_balanced_set_that_leaves_the_random_state_alone(
    monkeypatch,
):
    """23 samples of a 10-class model: classes 0..9 in turn; measuring the same model
    twice draws the same images and gives the same record; the global random state and
    the model are untouched. Fewer samples than the features have dimensions are said
    once, when a tracker is made, not at every measurement."""
    spec = tiny_spec(**{"train.eval_every": 1, "train.eval_samples": 23, "train.eval_steps": 2})
    drawn = []
    generate = fid_tracking.generate
    monkeypatch.setattr(
        fid_tracking, "generate", lambda *a, **k: drawn.append(generate(*a, **k)) or drawn[-1]
    )
    dataset = load_training_data(spec)
    tracker = FidTracker(spec, dataset, torch.device("cpu"), batch_size=10)
    few = spec.with_overrides({"train.eval_samples": 5})  # fewer than the 6 stand-in features
    with pytest.warns(SmallSampleWarning, match="FID from 5 samples and 1498 reference images"):
        FidTracker(few, dataset, torch.device("cpu"), batch_size=10)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_network(spec.model).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    first, second = tracker.measure(model, 7), tracker.measure(model, 8)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert same_tensors(model.state_dict(), before)
    assert drawn[0].labels.tolist() == [i % 10 for i in range(23)]
    assert np.array_equal(drawn[0].images, drawn[1].images)
    assert (first["step"], second["step"]) == (7, 8)
    assert {k: v for k, v in first.items() if k not in ("step", "eval_seconds")} == {
        k: v for k, v in second.items() if k not in ("step", "eval_seconds")
    }


def test_the_reference_is_spread_over_the_training_images(monkeypatch):
    """A set sorted by class (image k has every pixel k; 50 per class) with a reference of
    20 images: they are spread evenly over the set, two of every class, not the first 20
    (all of class 0); the statistics are cached, keyed by the pixels."""
    pixels = np.repeat(np.arange(500, dtype=np.int64) % 256, 64).reshape(500, 8, 8, 1)
    dataset = ImageDataset.from_arrays(pixels.astype(np.uint8), np.arange(500) // 50)
    spec = tiny_spec(**{"train.eval_every": 1, "train.eval_reference": 20})
    read = []
    source_reference = fid_tracking.source_reference

    def spy(source, n, **options):
        read.append(source.read())
        return source_reference(source, n, **options)

    monkeypatch.setattr(fid_tracking, "source_reference", spy)
    lines = []
    FidTracker(spec, dataset, torch.device("cpu"), batch_size=8, report=lines.append)
    FidTracker(spec, dataset, torch.device("cpu"), batch_size=8, report=lines.append)
    positions = np.linspace(0, 499, 20).round().astype(int)
    assert np.array_equal(read[0][:, 0, 0, 0], positions % 256)
    assert sorted(np.bincount(positions // 50)) == [2] * 10
    assert "written to" in lines[0] and "read from the cache" in lines[1]


# ------------------------------------------------------------------ the best checkpoint


def test_the_best_checkpoint_follows_the_lowest_fid_across_resumes(tmp_path, monkeypatch):
    """FIDs 3, 1, 2 at steps 2, 4, 6: RUN/best is step 4's. Resumed, 1.5 at step 8 is not
    better than the 1 the checkpoint remembers, and RUN/best stays as it was; 0.5 at step
    10 is, and RUN/best becomes step 10's."""
    spec = tiny_spec(**QUICK_MEASUREMENTS, **{"train.steps": 6, "train.eval_every": 2})
    run = tmp_path / "run"
    scripted_fids(monkeypatch, [3.0, 1.0, 2.0, 1.5, 0.5])
    result = train(spec, run, progress=False)
    assert (result.best, result.best_fid, result.best_step) == (run / "best", 1.0, 4)
    assert load_checkpoint(run / "best").step == 4
    kept = digest(run / "best")
    result = resume(run, changes={"train.steps": 8}, progress=False)
    assert (result.best_fid, result.best_step) == (1.0, 4)
    assert digest(run / "best") == kept
    state = json.loads((run / "checkpoints/step-00000008/trainer.json").read_text())
    assert state["fid_history"] == {"best_fid": 1.0, "best_step": 4, "last_step": 8}
    result = resume(run, changes={"train.steps": 10}, progress=False)
    assert (result.best_fid, result.best_step) == (0.5, 10)
    assert load_checkpoint(run / "best").step == 10
    assert [(r["step"], r["fid"]) for r in records(run)] == [
        (2, 3.0), (4, 1.0), (6, 2.0), (8, 1.5), (10, 0.5),
    ]  # fmt: skip


def test_a_run_without_measurements_has_no_best(tmp_path):
    result = train(tiny_spec(**QUICK_MEASUREMENTS, **{"train.steps": 1}), tmp_path / "run",
                   progress=False)  # fmt: skip
    assert (result.best, result.best_fid, result.best_step) == (None, None, None)
    assert not (tmp_path / "run/best").exists()
    assert "fid_history" not in json.loads((result.checkpoint / "trainer.json").read_text())


# ------------------------------------------------------------------ exact resume


def stop_at(monkeypatch, step: int) -> None:
    """Make the next run stop (SIGTERM, to this process) after training step ``step``:
    the signal comes in the step before, and the loop ends the step it is in."""
    train_step = Trainer.train_step

    def signalling(trainer, index, *rest):
        summary = train_step(trainer, index, *rest)
        if index == step - 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return summary

    monkeypatch.setattr(Trainer, "train_step", signalling)


def test_measurements_change_no_weight_and_an_interrupted_run_measures_the_same(
    tmp_path, monkeypatch
):
    """A run measured every 4 steps ends with exactly the weights, EMA and optimizer state
    of the same run unmeasured. Stopped by SIGTERM at step 4, a measured step (the stop
    skips the measurement, to stop soon), and resumed, it measures step 4 first and ends
    with them too, with the same FID records and the same RUN/best, byte for byte. The
    run uses dropout, flips, label dropout and micro-batches, whose draws a careless
    measurement would shift."""
    overrides = {
        **QUICK_MEASUREMENTS,
        "train.steps": 12,
        "train.log_every": 2,
        "train.checkpoint_every": 100,
        "train.sample_every": 0,
        "model.dropout": 0.1,
        "train.random_flip": True,
        "train.microbatch": 5,
    }
    plain = train(tiny_spec(**overrides), tmp_path / "plain", progress=False)
    spec = tiny_spec(**overrides, **{"train.eval_every": 4})
    whole = train(spec, tmp_path / "whole", progress=False)
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # a late signal must not kill pytest
    try:
        with monkeypatch.context() as patch:
            stop_at(patch, 4)
            first = train(spec, tmp_path / "parts", progress=False)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert (first.interrupted, first.step) == ("SIGTERM", 4)
    assert records(tmp_path / "parts") == []
    second = resume(tmp_path / "parts", progress=False)
    assert (second.first_step, second.step) == (4, 12)
    for name in ("model.safetensors", "ema_0.99.safetensors", "optimizer.safetensors"):
        reference = weights(plain.checkpoint, name)
        assert same_tensors(weights(whole.checkpoint, name), reference), name
        assert same_tensors(weights(second.checkpoint, name), reference), name

    def without_time(run):
        return [{k: v for k, v in r.items() if k != "eval_seconds"} for r in records(run)]

    assert [r["step"] for r in records(tmp_path / "whole")] == [4, 8, 12]
    assert without_time(tmp_path / "parts") == without_time(tmp_path / "whole")
    assert digest(tmp_path / "parts/best") == digest(tmp_path / "whole/best")


# ------------------------------------------------------------------ settings


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A 2-step run of the tiny preset without measurements."""
    run = tmp_path_factory.mktemp("runs") / "run"
    assert main(tiny_run(run, "--steps", "2", "--batch-size", "8")) == 0
    return run


def test_resume_switches_measurements_on_then_keeps_what_a_measurement_is(
    finished_run, tmp_path, capsys
):
    """A 2-step run resumed to 4 with measurements every 2 (and its own measurement
    settings, allowed while it has measured nothing) measures step 2, where it resumes,
    and step 4. Then its samples, sampler, guidance and reference can no longer change:
    refused with one line, the run left as it was."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    assert main(resume_run(run, "--steps", "4", *FID_EVERY_2[2:])) == 0
    assert [r["step"] for r in records(run)] == [2, 4]
    settings = json.loads((run / "run.json").read_text())["train"]
    assert (settings["eval_every"], settings["eval_samples"]) == (2, 12)
    before = digest(run)
    capsys.readouterr()
    assert main(resume_run(run, "--steps", "6", "--set", "train.eval_samples=8")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.eval_samples cannot change: the run has" in err, err
    assert digest(run) == before


@pytest.mark.parametrize(
    ("command", "argv", "message"),
    [
        ("train", ["train.eval_every=-1"], "train.eval_every must be an integer >= 0, got -1"),
        ("train", ["train.eval_samples=1"], "train.eval_samples must be an integer >= 4, got 1"),
        ("train", ["train.eval_reference=3"], "train.eval_reference must be an integer >= 4"),
        ("train", ["train.eval_sampler=euler"], "train.eval_sampler 'euler' is not one of"),
        ("train", ["train.eval_cfg=-1"], "train.eval_cfg must be a number in [0.0, inf]"),
        ("train", ["train.eval_steps=2000"], "train.eval_steps 2000: quadratic spacing needs 2"),
        (
            "train",
            ["train.eval_cfg=1", "model.null_class=false"],
            "train.eval_cfg 1 needs a model with a null class",
        ),
        ("train-classifier", [], "a noisy classifier draws none"),
    ],
    ids=["every", "samples", "reference", "sampler", "cfg", "steps", "cfg-no-null", "classifier"],
)
def test_bad_settings_exit_2_and_leave_the_run_alone(
    finished_run, tmp_path, capsys, stand_in, command, argv, message
):
    """Refused with one line naming the setting, before anything is written or the
    feature network is even made: an existing run replaced with --overwrite stays as it
    was, and a new run folder is not created."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = digest(run)
    settings = [item for setting in ["train.eval_every=2", *argv] for item in ("--set", setting)]
    for out, extra in ((run, ["--overwrite"]), (tmp_path / "new", [])):
        capsys.readouterr()
        assert main([command, *tiny_run(out, *settings, *extra)[1:]]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert digest(run) == before
    assert not (tmp_path / "new").exists()
    assert not stand_in


def test_an_upsampler_cannot_be_measured_alone():
    model = SuperResConfig(image_size=8, in_channels=1, out_channels=1, low_res_size=4, **SMALL)
    config = TrainConfig(eval_every=2)
    spec = RunSpec("diffusion", None, model, DiffusionConfig("cosine"), config, DataSpec("digits"))
    with pytest.raises(ConfigError, match="an upsampler needs low-resolution inputs"):
        check_fid_settings(spec)
