"""What a command may write and replace (diffuse/outputs.py), as a user meets it: every
command with an output folder replaces, with --overwrite, only an earlier output of its
own, and no command writes over the current folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from diffuse import presets
from diffuse.cli import main
from diffuse.convert import openai_key_map
from diffuse.data import load_dataset
from diffuse.errors import ConfigError
from diffuse.io import atomic_write_json
from diffuse.outputs import OutputLayout, check_output_path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, named_run):
    """What the commands read: the trained run, 3 digits as samples, a released-style .pt."""
    root = tmp_path_factory.mktemp("inputs")
    samples = root / "samples.npz"
    np.savez(samples, arr_0=load_dataset("digits", split="train").uint8(range(3)))
    model = presets.build("tiny", device="cpu")
    state = {theirs: model.state_dict()[ours] for ours, theirs in openai_key_map(model).items()}
    torch.save({key: value.clone() for key, value in state.items()}, root / "tiny.pt")
    return {"run": str(named_run), "samples": str(samples), "pt": str(root / "tiny.pt")}


# Each command with an output folder: its arguments for the folder OUT, and its marker.
COMMANDS = {
    "sample": (["sample", "{run}", "--n", "2", "--steps", "3", "--out", "{out}"], "info.json"),
    "nll": (["nll", "{run}", "--data", "digits", "--n", "1", "--out", "{out}"], "nll.json"),
    "neighbors": (
        [
            "neighbors",
            "{samples}",
            "--data",
            "digits",
            "--k",
            "2",
            "--n-data",
            "30",
            "--out",
            "{out}",
        ],
        "neighbors.json",
    ),
    "convert": (["convert", "openai", "{pt}", "{out}", "--preset", "tiny"], "config.json"),
}
QUIET = {"sample": ["--no-progress"], "nll": ["--no-progress"], "neighbors": ["--no-progress"]}


def argv_of(command: str, inputs: dict, out: Path) -> list[str]:
    arguments, _ = COMMANDS[command]
    return [a.format(**inputs, out=out) for a in arguments] + QUIET.get(command, [])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"diffuse {command}: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("command", list(COMMANDS))
def test_overwrite_replaces_an_earlier_output_and_never_a_file_of_the_user(
    command, inputs, tmp_path, capsys
):
    out = tmp_path / "out"
    argv = argv_of(command, inputs, out)
    assert main(argv) == 0
    (out / "notes.txt").write_text("my notes")
    before = snapshot(out)
    assert main([*argv, "--overwrite"]) == 2
    assert "(notes.txt)" in one_line_error(capsys, argv[0])
    assert snapshot(out) == before
    assert main(argv) == 2  # without --overwrite too: the same reason, nothing changed
    assert "--overwrite replaces only an earlier" in one_line_error(capsys, argv[0])
    assert snapshot(out) == before

    (out / "notes.txt").unlink()
    assert main(argv) == 2  # an earlier output alone: kept without --overwrite
    assert "already exists (an earlier" in one_line_error(capsys, argv[0])
    assert main([*argv, "--overwrite"]) == 0
    marker = COMMANDS[command][1]
    assert (out / marker).is_file() and not (out / "notes.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left


def test_a_sample_folder_is_checked_to_the_last_file(inputs, tmp_path, capsys):
    out = tmp_path / "samples"
    argv = argv_of("sample", inputs, out)
    assert main(argv) == 0
    (out / "images" / "favourite.txt").write_text("keep")
    assert main([*argv, "--overwrite"]) == 2
    assert "images/favourite.txt" in one_line_error(capsys, "sample")
    assert (out / "images" / "favourite.txt").read_text() == "keep"

    mine = tmp_path / "mine"  # holds only names diffuse uses, but no info.json: not ours
    mine.mkdir()
    (mine / "grid.png").write_bytes(b"my own grid")
    assert main([*argv_of("sample", inputs, mine), "--overwrite"]) == 2
    assert "is not an earlier sample folder (it has no info.json)" in one_line_error(
        capsys, "sample"
    )
    assert (mine / "grid.png").read_bytes() == b"my own grid"

    empty = tmp_path / "empty"  # an empty folder holds nothing to lose: written into
    empty.mkdir()
    assert main(argv_of("sample", inputs, empty)) == 0 and (empty / "info.json").is_file()


def test_a_sweep_folder_holding_a_users_file_is_refused_before_any_work(inputs, tmp_path, capsys):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    argv = ["sweep", inputs["run"], "--ref", "digits", "--param", "steps", "--values", "2"]
    assert main([*argv, "--n", "2", "--out", str(out), "--overwrite", "--no-progress"]) == 2
    assert "(notes.txt)" in one_line_error(capsys, "sweep")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "sweep.json"]


SWEEP = ["sweep", "{run}", "--ref", "digits", "--param", "steps", "--values", "2", "--n", "2"]


@pytest.mark.parametrize("where", [".", "..", "./"])
@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "{run}", "--n", "2", "--steps", "3", "--out", "{out}"],
        ["nll", "{run}", "--data", "digits", "--n", "1", "--out", "{out}"],
        ["neighbors", "{samples}", "--data", "digits", "--k", "2", "--out", "{out}"],
        [*SWEEP, "--out", "{out}"],
        ["convert", "openai", "{pt}", "{out}", "--preset", "tiny"],
        ["figures", "progressive", "{run}", "--steps", "3", "--out", "{out}"],
    ],
    ids=["sample", "nll", "neighbors", "sweep", "convert", "figures"],
)
def test_the_current_folder_is_never_an_output(argv, where, inputs, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    argv = [a.format(**inputs, out=where) for a in argv]
    assert main([*argv, "--overwrite"]) == 2
    assert "is the current folder or a folder above it" in one_line_error(capsys, argv[0])
    assert os.listdir(work) == ["notes.txt"] and sorted(os.listdir(tmp_path)) == ["work"]


def test_figures_write_a_png_file_and_refuse_a_folder(inputs, tmp_path, capsys):
    argv = ["figures", "progressive", inputs["run"], "--steps", "3", "--n", "1", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "grid")]) == 2
    assert "must be a .png file (e.g. grid.png)" in one_line_error(capsys, "figures")
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert "is an existing folder" in one_line_error(capsys, "figures")
    (tmp_path / "grid.png").mkdir()
    assert main([*argv, "--out", str(tmp_path / "grid.png"), "--overwrite"]) == 2
    assert "is an existing folder" in one_line_error(capsys, "figures")
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]


def test_a_file_is_never_written_over_a_folder_or_the_current_one(tmp_path, monkeypatch):
    (tmp_path / "results").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="is the current folder"):  # diffuse eval --json .
        atomic_write_json(".", {"fid": 1.0})
    with pytest.raises(ConfigError, match="results is an existing folder"):
        atomic_write_json("results", {"fid": 1.0})
    assert [p.name for p in tmp_path.rglob("*")] == ["results"]


def test_a_layout_names_what_is_foreign_at_any_depth(tmp_path):
    layout = OutputLayout("thing", "a.json", ("a.json", "parts", "parts/*.png"))
    (tmp_path / "parts" / "deeper").mkdir(parents=True)
    for name in ("a.json", "parts/1.png", "parts/deeper/2.png", "parts/x.txt", "b.json"):
        (tmp_path / name).write_text("")
    assert layout.foreign(tmp_path) == [
        "b.json",
        "parts/deeper",
        "parts/deeper/2.png",
        "parts/x.txt",
    ]
    with pytest.raises(ConfigError, match="current folder"):
        check_output_path(Path.cwd().parent)
    assert check_output_path("new/../out") == Path.cwd() / "out"
