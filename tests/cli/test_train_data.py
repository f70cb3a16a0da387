"""``diffuse train --preset P --data FOLDER``: the data decides the channels, the classes
and (for small images) the size, each decision and every crop or resize is said once,
and a folder decoded on demand trains the same with any number of worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffuse.checkpoint import load_checkpoint
from diffuse.cli import main
from helpers.data_files import save_image
from helpers.train_processes import QUICK, one_thread_env, resume_run

RNG = np.random.default_rng(0)


def folder_run(data: Path, out: Path, *extra: str, preset: str = "tiny") -> list[str]:
    return ["train", "--preset", preset, "--data", str(data), "--out", str(out), *QUICK, *extra]


def shown(capsys, argv: list[str]) -> tuple[dict, str]:
    """The configuration --show-config prints, and what it says on stderr."""
    assert main([*argv, "--show-config"]) == 0
    out, err = capsys.readouterr()
    return json.loads(out), err


@pytest.fixture(scope="module")
def pets(tmp_path_factory) -> Path:
    """A user's folder: RGB photos 16 wide and 20 high in cat/ and dog/, one 30x30."""
    root = tmp_path_factory.mktemp("data") / "pets"
    for name in ("cat", "dog"):
        for i in range(6):
            save_image(root / name / f"{i}.png", RNG.integers(0, 256, (20, 16, 3), np.uint8))
    save_image(root / "dog" / "big.png", RNG.integers(0, 256, (30, 30, 3), np.uint8))
    return root


@pytest.fixture(scope="module")
def small_grey(tmp_path_factory) -> Path:
    """Grey 6x6 images directly in the folder: no classes, smaller than the presets."""
    root = tmp_path_factory.mktemp("data") / "small"
    for i in range(8):
        save_image(root / f"{i}.png", RNG.integers(0, 256, (6, 6), np.uint8))
    return root


def test_an_rgb_folder_with_classes_and_odd_sizes_configures_the_preset(pets, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(folder_run(pets, out, "--steps", "1", "--batch-size", "4")) == 0
    said = capsys.readouterr().out
    for line in (
        "data: 3 channel(s) from the data (colour images; the preset has 1)",
        "data: 2 classes from the data (cat, dog; the preset has 10)",
        "data: 12 image(s) of 16x20 (width x height) are centre-cropped to 16x16 and shrunk to 8x8",
        "data: 1 image(s) of 30x30 (width x height) are shrunk to 8x8",
    ):
        assert said.count(line) == 1, said
    config = load_checkpoint(out).model.config
    assert (config.in_channels, config.out_channels, config.image_size) == (3, 3, 8)
    assert (config.num_classes, config.null_class) == (2, True)


def test_given_settings_win_over_the_data(pets, tmp_path, capsys):
    argv = folder_run(pets, tmp_path / "r", "--set", "model.image_size=16")
    got, said = shown(capsys, [*argv, "--set", "model.num_classes=null"])
    model = got["model"]
    assert (model["image_size"], model["num_classes"], model["in_channels"]) == (16, None, 3)
    assert "classes" not in said  # given: nothing decided, nothing said
    assert "data: 12 image(s) of 16x20 (width x height) are centre-cropped to 16x16\n" in said
    assert "data: 1 image(s) of 30x30 (width x height) are shrunk to 16x16\n" in said


def test_a_folder_without_classes_trains_an_unconditional_model_at_its_size(
    small_grey, tmp_path, capsys
):
    got, said = shown(capsys, folder_run(small_grey, tmp_path / "r", preset="digits"))
    model = got["model"]
    assert (model["num_classes"], model["null_class"], model["in_channels"]) == (None, False, 1)
    assert model["image_size"] == 6
    assert "an unconditional model" in said and "6x6 images, the data's size" in said
    assert "--set model.image_size=8 does" in said


def test_a_named_set_smaller_than_the_preset_moves_attention_and_the_upsampling(tmp_path, capsys):
    base, said = shown(capsys, folder_run("digits", tmp_path / "r", preset="fashion"))
    assert base["model"]["image_size"] == 8 and base["model"]["attention_resolutions"] == [4]
    assert "attention at 4x4, the levels where the preset has it at 14x14" in said
    assert "a named set is never enlarged" in said
    up, _ = shown(capsys, folder_run("digits", tmp_path / "r", preset="fashion-upsampler-14-28"))
    assert (up["model"]["image_size"], up["model"]["low_res_size"]) == (8, 4)


def test_an_unconditional_preset_stays_unconditional(pets, tmp_path, capsys):
    got, said = shown(capsys, folder_run(pets, tmp_path / "r", preset="ddpm-cifar10"))
    assert got["model"]["num_classes"] is None and got["model"]["image_size"] == 16
    assert "--set model.num_classes=2 conditions on them" in said


def test_a_classifier_needs_classes(small_grey, tmp_path, capsys):
    argv = folder_run(small_grey, tmp_path / "r")
    argv[0] = "train-classifier"
    assert main(argv) == 2
    assert "a classifier learns classes" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------- decoding in workers


@pytest.fixture
def lazy_folders(monkeypatch):
    """Folders are decoded on demand, as those too large for memory are."""
    monkeypatch.setattr("diffuse.data.folder.MEMORY_BUDGET", 0)


def weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    folder = run / f"checkpoints/step-{step:08d}"
    return {
        f"{name}/{key}": value
        for name in ("model", "ema_0.99", "optimizer")
        for key, value in load_file(str(folder / f"{name}.safetensors")).items()
    }


def test_workers_change_nothing_and_resume_bit_exactly(pets, tmp_path, lazy_folders):
    """Two workers reading ahead, stopped after 2 steps and resumed with one to 4, give
    the weights of a run without workers, bit for bit (8 images a step: epochs of 13
    images end mid-batch)."""
    short = ["--batch-size", "8", "--set", "train.checkpoint_every=2"]
    assert main(folder_run(pets, tmp_path / "none", "--steps", "4", "--workers", "0", *short)) == 0
    assert main(folder_run(pets, tmp_path / "two", "--steps", "2", "--workers", "2", *short)) == 0
    assert main(resume_run(tmp_path / "two", "--steps", "4", "--workers", "1")) == 0
    a, b = weights(tmp_path / "none", 4), weights(tmp_path / "two", 4)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


LAZY_TRAINING = """
import sys
import diffuse.data.folder
from diffuse.cli import main
diffuse.data.folder.MEMORY_BUDGET = 0
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_with_workers_saves_a_checkpoint_and_stops_them(pets, tmp_path):
    """SIGINT to the whole process group, as Ctrl-C sends it: the workers ignore it, the
    trainer saves a checkpoint and stops them, and the command exits 130."""
    run = tmp_path / "run"
    argv = folder_run(pets, run, "--steps", "100000", "--batch-size", "4", "--workers", "2")
    argv += ["--precision", "fp32"]  # the child reads the real CPU: no timing of bf16
    argv += ["--set", "train.log_every=1", "--set", "train.checkpoint_every=100000"]
    process = subprocess.Popen(
        [sys.executable, "-c", LAZY_TRAINING, *argv],
        env=one_thread_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, which the signal goes to
    )
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (metrics.exists() and metrics.stat().st_size):
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, err.decode()
    assert "interrupted by SIGINT" in err.decode()
    assert load_checkpoint(run).step >= 1
    with pytest.raises(ProcessLookupError):  # no worker outlived the group's leader
        os.killpg(process.pid, 0)
