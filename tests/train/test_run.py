"""Training runs for real: a toy model learns its data, resuming is exact, checkpoints
survive every bad input, and every kind of network trains."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from diffuse.checkpoint import load_checkpoint
from diffuse.data import ImageDataset
from diffuse.diffusion.diffusion_config import DiffusionConfig
from diffuse.diffusion.noise import seeded_generators
from diffuse.errors import (
    CheckpointError,
    ConfigError,
    CorruptCheckpointError,
    DataError,
    DiffuseWarning,
    MissingFileError,
)
from diffuse.nn import SuperResConfig, UNetConfig
from diffuse.sample.sampler import SamplerSettings
from diffuse.sample.stage import Stage
from diffuse.train import (
    DataSpec,
    RunSpec,
    TrainConfig,
    resume,
    sample_images,
    spec_from_preset,
    train,
)
from diffuse.train.distributed import setup
from diffuse.train.lock import LOCK_FILE
from diffuse.train.randomness import PREVIEW, derive_seed
from diffuse.train.run import RunFolder
from diffuse.train.state import prune_checkpoints
from diffuse.train.trainer import Trainer
from helpers.run_checks import digest, same_tensors, weights
from helpers.sample_models import SMALL

FAST = {
    "train.batch_size": 16,
    "train.log_every": 2,
    "train.checkpoint_every": 2,
    "train.sample_steps": 4,
    "train.sample_columns": 2,
}


def tiny_spec(steps: int = 4, **overrides) -> RunSpec:
    """The ``tiny`` preset on the digits, sized for a test."""
    return spec_from_preset("tiny", "digits", overrides={**FAST, "train.steps": steps, **overrides})


# ------------------------------------------------------------------ learning


def bars(size: int = 4) -> np.ndarray:
    """Four binary patterns: the top, bottom, left and right half of the image lit."""
    patterns = np.zeros((4, size, size), np.uint8)
    half = size // 2
    patterns[0, :half] = patterns[1, half:] = 255
    patterns[2, :, :half] = patterns[3, :, half:] = 255
    return patterns


def test_a_toy_model_learns_its_data(tmp_path):
    """An unconditional U-Net on four 4x4 bar patterns: the loss falls by 4x and samples
    land on the patterns (median RMS distance to the nearest one < 0.15, most within
    0.4), where images of clipped noise lie at RMS distance > 0.6 from all of them."""
    patterns = bars()
    dataset = ImageDataset.from_arrays(np.repeat(patterns, 32, axis=0)[..., None], name="bars")
    model = UNetConfig(
        image_size=4,
        in_channels=1,
        out_channels=1,
        model_channels=16,
        channel_mult=(1,),
        num_res_blocks=1,
        attention_resolutions=(),
        num_head_channels=16,
        norm_groups=8,
    )
    config = TrainConfig(
        steps=80,
        batch_size=64,
        lr=5e-3,
        warmup_steps=10,
        ema_rates=(0.99,),
        log_every=10,
        checkpoint_every=80,
        sample_steps=10,
        sample_columns=2,
    )
    spec = RunSpec("diffusion", None, model, DiffusionConfig("cosine"), config, DataSpec("bars"))
    result = train(spec, tmp_path / "run", dataset=dataset, progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run/metrics.jsonl").open()]
    assert losses[-1] < losses[0] / 4
    samples = sample_images(load_checkpoint(result.checkpoint).model, spec.diffusion, 128, steps=20)
    targets = torch.as_tensor(patterns, dtype=torch.float32) / 127.5 - 1

    def distance_to_data(images: torch.Tensor) -> torch.Tensor:
        return (images[:, None] - targets[None]).pow(2).mean(dim=(2, 3)).sqrt().min(dim=1).values

    noise = torch.randn(128, 4, 4, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    assert distance_to_data(noise).min() > 0.6
    distance = distance_to_data(samples[:, 0])
    assert distance.median() < 0.15
    assert (distance < 0.4).float().mean() >= 0.7


# ------------------------------------------------------------------- resume


def stop_when(path: Path) -> threading.Thread:
    """Send SIGTERM to this process as soon as the file ``path`` has content."""

    def watch():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (path.exists() and path.stat().st_size):
            time.sleep(0.002)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(tmp_path):
    """SIGTERM mid-run, then --resume: the weights, EMA, optimizer and importance sampler
    are bit for bit those of a run that was never interrupted. The run uses everything
    that draws random numbers or keeps state: dropout, flips, label dropout, micro-batches,
    a warm-up + cosine schedule and the loss-aware sampler of a kl loss (T = 10, warmed up
    after 7 steps)."""
    spec = tiny_spec(
        steps=16,
        **{
            "model.dropout": 0.1,
            "model.out_channels": 2,
            "diffusion.timesteps": 10,
            "diffusion.variance": "learned_range",
            "diffusion.loss": "kl",
            "train.random_flip": True,
            "train.microbatch": 10,
            "train.warmup_steps": 5,
            "train.lr_decay": "cosine",
            "train.checkpoint_every": 100,
            "train.sample_every": 0,
        },
    )
    whole = train(spec, tmp_path / "whole", progress=False)
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # a late signal must not kill pytest
    try:
        watcher = stop_when(tmp_path / "parts/metrics.jsonl")
        first = train(spec, tmp_path / "parts", progress=False)
        watcher.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert first.interrupted == "SIGTERM" and 0 < first.step < 16
    assert load_checkpoint(first.checkpoint).step == first.step
    second = resume(tmp_path / "parts", progress=False)
    assert (second.first_step, second.step, second.interrupted) == (first.step, 16, None)
    for name in ("model.safetensors", "ema_0.99.safetensors", "optimizer.safetensors"):
        a, b = weights(whole.checkpoint, name), weights(second.checkpoint, name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    sampler_a = weights(whole.checkpoint, "sampler.safetensors")
    sampler_b = weights(second.checkpoint, "sampler.safetensors")
    assert sampler_a["counts"].min() == 10  # warmed up: importance sampling was on
    assert all(torch.equal(sampler_a[k], sampler_b[k]) for k in sampler_a)


def test_micro_batches_give_the_full_batch_gradient(tmp_path):
    spec = tiny_spec(steps=3, **{"train.sample_every": 0})
    full = train(spec, tmp_path / "full", progress=False)
    micro = train(spec.with_overrides({"train.microbatch": 5}), tmp_path / "micro", progress=False)
    a, b = weights(full.checkpoint), weights(micro.checkpoint)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------- run folder


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A 4-step run with checkpoints at steps 2 and 4 and a sample grid."""
    out = tmp_path_factory.mktemp("runs") / "run"
    train(tiny_spec(4), out, progress=False)
    return out


def test_a_run_folder_holds_checkpoints_metrics_samples_and_its_config(finished_run):
    names = {p.name for p in finished_run.iterdir()}
    assert names == {"run.json", "metrics.jsonl", "checkpoints", "samples", LOCK_FILE}
    assert [p.name for p in RunFolder(finished_run).checkpoint_steps()] == [
        "step-00000002",
        "step-00000004",
    ]
    loaded = load_checkpoint(finished_run)
    assert loaded.step == 4 and loaded.weights == "ema_0.99"
    assert loaded.metadata["class_names"] == [str(k) for k in range(10)]
    assert loaded.metadata["train"]["steps"] == 4
    assert (finished_run / "samples/step-00000004.png").is_file()
    spec = RunFolder(finished_run).read_spec()
    assert spec == tiny_spec(4)


def test_preview_grids_sample_with_any_sampler_of_diffuse_sample(tmp_path):
    """The grids go through the sampling path of ``diffuse sample``: DPM-Solver++(2M), on
    its quadratic spacing, draws the same images there as here."""
    spec = tiny_spec(2, **{"train.sample_sampler": "dpm++2m", "train.sample_steps": 3})
    result = train(spec, tmp_path / "r", progress=False)
    assert (result.run_dir / "samples/step-00000002.png").is_file()
    loaded = load_checkpoint(result.checkpoint)
    labels = torch.tensor([3, 7])
    settings = {"labels": labels, "sampler": "dpm++2m", "steps": 3, "cfg_weight": 1.0}
    ours = sample_images(loaded.model, spec.diffusion, 2, **settings)
    sampler = SamplerSettings("dpm++2m", "quad3")
    stage = Stage(loaded.model, spec.diffusion, sampler, cfg=1.0, precision="fp32")
    generators = seeded_generators([derive_seed(0, PREVIEW, i) for i in range(2)])
    torch.testing.assert_close(ours, stage.sample(generators, labels))


def test_old_checkpoints_are_pruned(tmp_path):
    result = train(tiny_spec(6, **{"train.keep_checkpoints": 2}), tmp_path / "r", progress=False)
    steps = [p.name for p in RunFolder(result.run_dir).checkpoint_steps()]
    assert steps == ["step-00000004", "step-00000006"]


def test_pruning_counts_only_complete_checkpoints(tmp_path):
    """A step folder without its config.json (a deletion killed halfway) takes none of
    the kept places, and goes with the stale temporary folders."""
    folder = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        (folder / f"step-{step:08d}").mkdir(parents=True)
    for step in (2, 4):
        (folder / f"step-{step:08d}/config.json").write_text("{}")
    (folder / ".step-00000008.abc.tmp").mkdir()
    removed = prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == [".step-00000008.abc.tmp", "step-00000006"]
    assert sorted(p.name for p in folder.iterdir()) == ["step-00000002", "step-00000004"]


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


@pytest.mark.parametrize(
    ("make_spec", "options", "error", "message"),
    [
        (lambda: tiny_spec(4), {}, ConfigError, "--resume"),
        (lambda: tiny_spec(4, **{"model.image_size": 16}), {"overwrite": True}, DataError, "16x16"),
        (
            lambda: spec_from_preset("tiny", "./no/such/folder"),
            {"overwrite": True},
            MissingFileError,
            "no/such/folder",
        ),
        (
            lambda: tiny_spec(4, **{"train.precision": "fp16"}),
            {"overwrite": True},
            ConfigError,
            "CUDA",
        ),
        (
            lambda: tiny_spec(4, **{"model.in_channels": 3, "model.out_channels": 3}),
            {"overwrite": True},
            DataError,
            "channel",
        ),
        (
            lambda: tiny_spec(4, **{"model.num_classes": 7}),
            {"overwrite": True},
            DataError,
            "num_classes=10",
        ),
        (
            lambda: tiny_spec(4, **{"model.num_classes": None, "model.null_class": False}),
            {
                "overwrite": True,
                "dataset": ImageDataset.from_arrays(bars(8)[..., None], random_flip=True),
            },
            DataError,
            "train.random_flip=true",
        ),
    ],
    ids=[
        "existing-run",
        "image-size",
        "missing-data",
        "fp16-on-cpu",
        "channels",
        "class-count",
        "self-flipping-set",
    ],
)
def test_a_bad_new_run_leaves_the_existing_run_intact(
    finished_run, tmp_path, make_spec, options, error, message
):
    run = copy_run(finished_run, tmp_path / "run")
    before = digest(run)
    with pytest.raises(error, match=message):
        train(make_spec(), run, progress=False, **options)
    assert digest(run) == before


def test_a_folder_that_is_not_a_run_is_never_overwritten(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a training run"):
        train(tiny_spec(2), tmp_path, overwrite=True, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_overwrite_replaces_a_run(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    result = train(tiny_spec(2), run, overwrite=True, progress=False)
    assert [p.name for p in RunFolder(run).checkpoint_steps()] == ["step-00000002"]
    assert result.step == 2


def corrupt(run: Path, name: str) -> None:
    file = run / "checkpoints/step-00000004" / name
    file.write_bytes(file.read_bytes()[: len(file.read_bytes()) // 2])


DAMAGES = pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda run: corrupt(run, "model.safetensors"), "model.safetensors"),
        (lambda run: corrupt(run, "optimizer.safetensors"), "optimizer.safetensors"),
        (lambda run: corrupt(run, "trainer.json"), "trainer.json"),
        (lambda run: (run / "checkpoints/step-00000004/ema_0.99.safetensors").unlink(), "ema_0.99"),
    ],
    ids=["weights", "optimizer", "trainer-state", "missing-ema"],
)


def test_a_checkpoint_without_the_runs_ema_rates_is_refused_untouched(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    for step in (2, 4):
        file = run / f"checkpoints/step-{step:08d}/config.json"
        file.write_text(json.dumps({**json.loads(file.read_text()), "ema_rates": []}))
    before = digest(run)
    with pytest.raises(CheckpointError, match=r"no EMA weights at the rates \[0.99\]"):
        resume(run, progress=False)
    assert digest(run) == before


def test_a_run_stopped_at_a_step_resumes_to_the_uninterrupted_one(tmp_path):
    """stop_at writes that step's checkpoint (no grid) under the whole run's schedule; a
    resume continues bit for bit, and a stop at a step already done is refused."""
    changes = {"model.dropout": 0.1, "train.warmup_steps": 2, "train.lr_decay": "cosine"}
    spec = tiny_spec(steps=6, **changes, **{"train.checkpoint_every": 100})
    whole = train(spec, tmp_path / "whole", progress=False)
    first = train(spec, tmp_path / "parts", progress=False, stop_at=3)
    assert (first.step, first.interrupted, first.grid) == (3, None, None)
    assert first.checkpoint.name == "step-00000003"
    assert RunFolder(tmp_path / "parts").checkpoint_steps() == [first.checkpoint]
    before = digest(tmp_path / "parts")
    with pytest.raises(ConfigError, match="at step 3 already: a stop at step 2"):
        resume(tmp_path / "parts", progress=False, stop_at=2)
    assert digest(tmp_path / "parts") == before
    second = resume(tmp_path / "parts", progress=False)
    assert (second.first_step, second.step) == (3, 6)
    for name in ("model.safetensors", "ema_0.99.safetensors", "optimizer.safetensors"):
        assert same_tensors(weights(whole.checkpoint, name), weights(second.checkpoint, name))


@DAMAGES
def test_a_corrupt_latest_checkpoint_is_named_and_the_one_before_resumed(
    finished_run, tmp_path, damage, message
):
    """The damaged step-4 checkpoint is passed over with a warning that names the file;
    nothing of it reaches the resumed state: the run's new step 4 is bit for bit the
    uninterrupted run's."""
    run = copy_run(finished_run, tmp_path / "run")
    damage(run)
    with pytest.warns(DiffuseWarning, match=rf"{message}.*resuming from .*step-00000002 instead"):
        result = resume(run, progress=False)
    assert (result.first_step, result.step) == (2, 4)
    for name in ("model.safetensors", "ema_0.99.safetensors", "optimizer.safetensors"):
        a = weights(finished_run / "checkpoints/step-00000004", name)
        b = weights(result.checkpoint, name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


@DAMAGES
def test_a_corrupt_only_checkpoint_is_named_on_resume_and_nothing_is_touched(
    finished_run, tmp_path, damage, message
):
    run = copy_run(finished_run, tmp_path / "run")
    shutil.rmtree(run / "checkpoints/step-00000002")
    damage(run)
    before = digest(run)
    with pytest.raises(CorruptCheckpointError, match=message) as caught:
        resume(run, changes={"train.steps": 6}, progress=False)
    assert "no earlier checkpoint" in str(caught.value)
    assert digest(run) == before


@pytest.mark.parametrize(
    ("where", "changes", "error", "message"),
    [
        ("missing", {}, MissingFileError, "nothing to resume"),
        ("run", {"train.lr": 1.0}, ConfigError, "train.lr"),
        ("run", {"model.model_channels": 8}, ConfigError, "model.model_channels"),
    ],
)
def test_bad_resume_requests_are_refused(finished_run, tmp_path, where, changes, error, message):
    run = copy_run(finished_run, tmp_path / "run") if where == "run" else tmp_path / "none"
    before = digest(run) if run.exists() else None
    with pytest.raises(error, match=message):
        resume(run, changes=changes, progress=False)
    if before is not None:
        assert digest(run) == before


def test_resume_extends_a_finished_run(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    result = resume(run, changes={"train.steps": 6}, progress=False)
    assert (result.first_step, result.step) == (4, 6)
    assert RunFolder(run).read_spec().train.steps == 6
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").open()]
    assert steps == [2, 4, 6]


def test_resuming_a_finished_run_changes_nothing(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    before = digest(run)
    result = resume(run, progress=False)
    assert (result.first_step, result.step, result.checkpoint.name) == (4, 4, "step-00000004")
    assert digest(run) == before


# ------------------------------------------------------- failures while training


def test_non_finite_losses_are_skipped_counted_and_stop_the_run(tmp_path):
    spec = tiny_spec(20, **{"train.max_nonfinite": 3, "train.sample_every": 0})
    run = RunFolder(tmp_path / "run")
    run.start(spec, overwrite=False)
    trainer = Trainer(spec, _digits(spec), run, setup("cpu"), progress=False)
    losses = trainer.objective.losses

    def poisoned(model, x, y, draws):
        loss, stats = losses(model, x, y, draws)
        step = trainer.state.progress.step
        if step == 1 or step >= 5:
            loss = loss * float("nan")
            stats = {**stats, "loss": stats["loss"] * float("nan")}
        return loss, stats

    trainer.objective.losses = poisoned
    with pytest.raises(ConfigError, match="not finite for 3 steps"):
        trainer.fit()
    progress = trainer.state.progress
    assert (progress.step, progress.skipped, progress.updates) == (8, 4, 4)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    # the checkpoints written before the divergence are intact and loadable
    assert load_checkpoint(run.path / "checkpoints/step-00000004").step == 4
    logged = [json.loads(line) for line in run.metrics_file.open()]
    assert logged[0]["skipped"] == 1


def test_a_step_the_fp16_gradient_scaler_skips_updates_nothing(tmp_path):
    """An overflowing gradient between two normal steps: the scaler skips that step, and
    the weights, AdamW's moments and step count and the EMA stay as they were; the step
    counts as done, not as an update, so the next update is the EMA warm-up's second."""
    spec = tiny_spec(3, **{"train.sample_every": 0})
    run = RunFolder(tmp_path / "run")
    run.start(spec, overwrite=False)
    trainer = Trainer(spec, _digits(spec), run, setup("cpu"), progress=False)
    # fp16's dynamic loss scaling, with the CPU build of the scaler fp16 uses on CUDA
    trainer.precision.scaler = scaler = torch.amp.GradScaler("cpu")
    state, progress = trainer.state, trainer.state.progress
    rate = state.ema.rates[0]

    def snapshot():
        return (
            {k: v.clone() for k, v in trainer.model.state_dict().items()},
            {k: v.clone() for k, v in state.ema.state(rate).items()},
            {
                (index, name): value.clone()
                for index, moments in state.optimizer.state_dict()["state"].items()
                for name, value in moments.items()
            },
        )

    def same(a: dict, b: dict) -> bool:
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    trainer.train_step(0)
    weights, ema, moments = snapshot()
    assert not same(weights, ema)  # so that an EMA update towards the weights would show
    overflow = next(trainer.model.parameters()).register_hook(
        lambda grad: torch.full_like(grad, float("inf"))
    )
    summary = trainer.train_step(1)
    overflow.remove()
    assert math.isfinite(summary["loss"]) and scaler.get_scale() == 2.0**15
    after = snapshot()
    assert same(after[0], weights) and same(after[1], ema) and same(after[2], moments)
    assert (progress.step, progress.updates, progress.skipped, progress.consecutive_bad) == (
        2, 1, 1, 0
    )  # fmt: skip

    trainer.train_step(2)
    new_weights, new_ema, new_moments = snapshot()
    assert not same(new_weights, weights) and not same(new_moments, moments)
    assert (progress.step, progress.updates, progress.skipped) == (3, 2, 1)
    d = state.ema.decay(rate, 1)  # the warm-up's second update
    for key, value in ema.items():
        if value.is_floating_point():
            expected = d * value + (1 - d) * new_weights[key]
            # the EMA's lerp and this formula round differently in float32
            torch.testing.assert_close(new_ema[key], expected, rtol=1e-5, atol=1e-6)


def _digits(spec):
    from diffuse.train import load_training_data

    return load_training_data(spec)


def test_bf16_autocast_trains_on_the_cpu(tmp_path):
    result = train(tiny_spec(2, **{"train.precision": "bf16"}), tmp_path / "r", progress=False)
    assert result.skipped == 0
    record = json.loads((tmp_path / "r/metrics.jsonl").read_text().splitlines()[-1])
    assert np.isfinite(record["loss"]) and record["loss"] > 0


# ------------------------------------------------------ upsampler, classifier


def test_an_upsampler_trains_on_area_downsampled_inputs(tmp_path):
    model = SuperResConfig(image_size=8, in_channels=1, out_channels=1, low_res_size=4, **SMALL)
    config = TrainConfig(steps=3, batch_size=8, log_every=1, sample_steps=3, sample_columns=3)
    spec = RunSpec("diffusion", None, model, DiffusionConfig("cosine"), config, DataSpec("digits"))
    result = train(spec, tmp_path / "up", progress=False)
    assert load_checkpoint(result.checkpoint).model.config.low_res_size == 4
    from PIL import Image

    grid = np.asarray(Image.open(result.grid))
    assert grid.shape[0] > 3 * 32  # three rows: inputs, samples, originals


def test_the_noisy_classifier_reports_accuracy_per_timestep_quarter(tmp_path):
    spec = spec_from_preset(
        "tiny", "digits", task="classifier", overrides={**FAST, "train.steps": 2}
    )
    result = train(spec, tmp_path / "clf", progress=False)
    assert result.grid is None
    record = json.loads((tmp_path / "clf/metrics.jsonl").read_text().splitlines()[-2])
    for key in ("loss", "accuracy", "accuracy_q0", "accuracy_q3"):
        assert 0 <= record[key] < 10, key
    loaded = load_checkpoint(result.checkpoint)
    assert loaded.model.config.kind == "classifier" and loaded.weights == "model"
    # evaluated on the 299 held-out digits at the end: accuracy is a multiple of 1/299
    assert set(result.evaluation) >= {"loss", "accuracy", "accuracy_q0", "accuracy_q3"}
    assert round(result.evaluation["accuracy"] * 299, 6) % 1 == 0
    logged = json.loads((tmp_path / "clf/metrics.jsonl").read_text().splitlines()[-1])
    assert logged["test_accuracy"] == result.evaluation["accuracy"]
    # resumed when finished: the held-out figures are read back, nothing is written
    before = digest(tmp_path / "clf")
    again = resume(tmp_path / "clf", progress=False)
    assert again.evaluation == result.evaluation and digest(tmp_path / "clf") == before
