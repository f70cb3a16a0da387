"""--no-progress silences every bar, the decoding of a folder of images included: each
command that reads a folder passes the flag on to the data loader."""

from __future__ import annotations

import numpy as np

from diffuse.cli import main
from diffuse.data import load_dataset


def test_no_progress_prints_no_bar_while_a_folder_is_decoded(
    digit_folder, named_run, tmp_path, capsys
):
    samples = tmp_path / "samples.npz"
    np.savez(samples, arr_0=load_dataset("digits", split="train").uint8(range(2)))
    train = ["train", "--preset", "tiny", "--data", str(digit_folder), "--steps", "1"]
    train += ["--set", "train.sample_steps=2", "--set", "train.sample_columns=1"]
    nll = ["nll", str(named_run), "--data", str(digit_folder), "--split", "train", "--n", "1"]
    neighbors = ["neighbors", str(samples), "--data", str(digit_folder), "--k", "2"]
    capsys.readouterr()
    for i, argv in enumerate((train, nll, neighbors)):
        assert main([*argv, "--out", str(tmp_path / f"quiet{i}"), "--no-progress"]) == 0
        assert capsys.readouterr().err == "", argv[0]
    # Without the flag the same command shows the bar that used to stay.
    assert main([*neighbors, "--out", str(tmp_path / "loud")]) == 0
    assert "decoding images" in capsys.readouterr().err
