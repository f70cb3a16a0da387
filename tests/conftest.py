"""Test-session settings, and a small trained run that the command-line tests share.

Under pytest-xdist each worker uses one intra-op thread: the default run is two workers
on two cores, and OpenMP threads that wait on a busy core cost ~10 ms per operation. A run
without workers (the slow tests, one at a time) keeps torch's default, every core.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

if "PYTEST_XDIST_WORKER" in os.environ:
    torch.set_num_threads(1)


# Class folders of the digit folder, in sorted (= label) order: "eight" is class 0,
# "seven" class 5, "zero" class 9, so a name and its digit differ.
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PER_CLASS = 8


@pytest.fixture(scope="session")
def digit_folder(tmp_path_factory) -> Path:
    """A folder of 8x8 grey PNGs, the first 8 digits of each class under a sub-folder named
    by the digit's word: a user's own data set, with class names."""
    from PIL import Image

    from diffuse.data import load_dataset

    digits = load_dataset("digits", split="train")
    images, labels = digits.uint8()[:, :, :, 0], digits.labels.numpy()
    root = tmp_path_factory.mktemp("data") / "digit-words"
    for digit, name in enumerate(DIGIT_NAMES):
        (root / name).mkdir(parents=True)
        for i in np.flatnonzero(labels == digit)[:PER_CLASS]:
            Image.fromarray(images[i]).save(root / name / f"{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def named_run(tmp_path_factory, digit_folder) -> Path:
    """A run of the tiny preset trained 2 steps on :func:`digit_folder`, over a chain of 20
    timesteps (so that ``diffuse nll`` takes seconds): its checkpoint carries the class
    names ("eight", "five", ..., "zero")."""
    from diffuse.cli import main

    run = tmp_path_factory.mktemp("runs") / "words"
    argv = ["train", "--preset", "tiny", "--data", str(digit_folder), "--out", str(run)]
    argv += ["--steps", "2", "--batch-size", "8", "--set", "diffusion.timesteps=20"]
    argv += ["--set", "train.sample_steps=3"]
    assert main([*argv, "--set", "train.sample_columns=2", "--no-progress"]) == 0
    return run
