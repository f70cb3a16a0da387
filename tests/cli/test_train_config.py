"""``diffuse train --config FILE``: what --show-config prints and a run stores, read back;
the precedence of preset, file and flags; every bad file refused with one line."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffuse.cli import main
from helpers.train_processes import QUICK, tiny_run


def shown(capsys, argv: list[str]) -> dict:
    """The configuration ``diffuse train ... --show-config`` prints."""
    assert main([*argv, "--show-config"]) == 0
    return json.loads(capsys.readouterr().out)


def config_run(config: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(config), "--out", str(out), *QUICK, *extra]


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_show_config_fed_back_gives_the_same_configuration(tmp_path, capsys):
    argv = tiny_run(tmp_path / "r", "--lr", "0.01", "--set", "model.model_channels=32")
    first = shown(capsys, [*argv, "--set", "train.ema_rates=0.9,0.99"])
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(first, indent=2))
    assert shown(capsys, config_run(config, tmp_path / "r")) == first
    assert not (tmp_path / "r").exists()


def test_a_runs_stored_config_reproduces_the_run(tmp_path):
    first, again = tmp_path / "first", tmp_path / "again"
    assert main(tiny_run(first, "--steps", "2", "--batch-size", "4", "--lr", "3e-3")) == 0
    assert main(config_run(first / "run.json", again)) == 0
    assert (again / "run.json").read_text() == (first / "run.json").read_text()
    for name in ("model.safetensors", "ema_0.99.safetensors", "optimizer.safetensors"):
        a = load_file(str(first / "checkpoints/step-00000002" / name))
        b = load_file(str(again / "checkpoints/step-00000002" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_preset_then_file_then_flags(tmp_path, capsys):
    """The preset's recipe under the file's settings under the flags and --set."""
    recipe = shown(capsys, tiny_run(tmp_path / "r"))["train"]
    config = tmp_path / "partial.json"
    settings = {"lr": 0.002, "batch_size": 8, "seed": 5}
    config.write_text(
        json.dumps({"preset": "digits", "data": {"name": "digits"}, "train": settings})
    )
    argv = config_run(config, tmp_path / "r", "--preset", "tiny", "--lr", "0.003")
    got = shown(capsys, [*argv, "--set", "train.seed=7"])
    assert got["preset"] == "tiny" and got["model"]["model_channels"] == 16  # --preset wins
    assert got["train"]["lr"] == 0.003 and got["train"]["seed"] == 7  # flags win
    assert got["train"]["batch_size"] == 8  # the file beats the recipe
    assert got["train"]["steps"] == recipe["steps"]  # the recipe fills the rest
    assert shown(capsys, config_run(config, tmp_path / "r"))["preset"] == "digits"


def test_a_yaml_file_reads_like_json(tmp_path, capsys):
    pytest.importorskip("yaml")
    config = tmp_path / "run.yaml"
    config.write_text("preset: tiny\ndata:\n  name: digits\ntrain:\n  lr: 0.002\n")
    got = shown(capsys, config_run(config, tmp_path / "r"))
    assert got["train"]["lr"] == 0.002 and got["preset"] == "tiny"


def test_yaml_without_pyyaml_names_the_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml raises ImportError
    config = tmp_path / "run.yml"
    config.write_text("preset: tiny\n")
    assert main(config_run(config, tmp_path / "r")) == 2
    assert "needs PyYAML: pip install pyyaml" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "run"
    assert main(tiny_run(run, "--steps", "1", "--batch-size", "4")) == 0
    return run


BAD_FILES = {
    "unknown-key": ('{"preset": "tiny", "trian": {}}', "unknown key 'trian' in", "train?"),
    "misspelt-setting": (
        '{"preset": "tiny", "train": {"ema_rate": [0.9]}}',
        "unknown setting train.ema_rate in",
        "did you mean train.ema_rates?",
    ),
    "misspelt-model-setting": (
        '{"preset": "tiny", "model": {"model_chanels": 8}}',
        "unknown setting model.model_chanels in",
        "did you mean model.model_channels?",
    ),
    "malformed": ('{"preset": "tiny",\n  "train": {"lr": 0.1,,}}', "line 2, column 23", "JSON"),
    "wrong-type": ('{"preset": "tiny", "train": {"lr": "fast"}}', "train.lr must be", "'fast'"),
    "wrong-element-type": (
        '{"preset": "tiny", "train": {"ema_rates": ["a"]}}',
        "invalid setting",
        "train.ema_rates",
    ),
    "section-not-an-object": ('{"preset": "tiny", "train": [1]}', "train in", "not list"),
    "data-wrong-type": (
        '{"preset": "tiny", "data": {"download": "yes"}}',
        "data.download in",
        "true or false",
    ),
    "twice": ('{"preset": "tiny", "preset": "digits"}', "'preset' appears twice", ""),
    "other-task": ('{"task": "classifier", "preset": "tiny"}', "classifier run", "train-classif"),
    "not-an-object": ("[1, 2]", "must hold one object", "list"),
    "no-network": ('{"model": {"image_size": 8}}', "name no preset", "kind"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_config_file_is_one_line_and_leaves_the_run_alone(finished, tmp_path, capsys, case):
    text, *messages = BAD_FILES[case]
    config = tmp_path / "bad.json"
    config.write_text(text)
    before = digest(finished)
    capsys.readouterr()
    argv = config_run(config, finished, "--data", "digits", "--overwrite")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("diffuse train: error: "), err
    for message in messages:
        assert message in err
    assert digest(finished) == before


def test_config_does_not_mix_with_resume_and_a_missing_file_is_named(finished, tmp_path, capsys):
    assert main(["train", "--out", str(finished), "--resume", "--config", "x.json"]) == 2
    assert "drop --config, or --resume" in capsys.readouterr().err
    assert main(config_run(tmp_path / "none.json", tmp_path / "r")) == 2
    assert "no config file" in capsys.readouterr().err


def test_show_config_needs_no_run_folder_and_training_does(tmp_path, capsys):
    argv = ["train", "--preset", "tiny", "--data", "digits"]
    assert shown(capsys, argv)["train"]["batch_size"] > 0
    assert main(argv) == 2  # training without --out: a clear error, nothing written
    assert "--out RUN is needed" in capsys.readouterr().err
    assert main([*argv, "--resume", "--show-config"]) == 2
    assert "--out RUN is needed" in capsys.readouterr().err
