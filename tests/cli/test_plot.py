"""`diffuse plot RUN`: a training run's curves as a PNG, and the inputs it refuses."""

from __future__ import annotations

import json
import shutil

import numpy as np
from PIL import Image

from diffuse.cli import main
from diffuse.train.curves import curves, read_metrics


def copy_run(run, folder):
    """The run's description and metrics in a folder of the test's own (the fixture's run
    is shared): all diffuse plot reads."""
    folder.mkdir()
    for name in ("run.json", "metrics.jsonl"):
        shutil.copy(run / name, folder / name)
    return folder


def test_plot_writes_the_curves_of_a_trained_run(named_run, tmp_path, capsys):
    run = copy_run(named_run, tmp_path / "run")
    assert main(["plot", str(run)]) == 0
    assert f"written to {run / 'metrics.png'}" in capsys.readouterr().out
    with Image.open(run / "metrics.png") as image:
        assert image.format == "PNG" and image.width >= 600
        pixels = np.asarray(image.convert("L"))
    assert pixels.min() < 100 and pixels.max() > 200  # drawn on, not blank
    out = tmp_path / "curves.png"
    assert main(["plot", str(named_run), "--out", str(out)]) == 0
    assert out.stat().st_size > 1000 and not (named_run / "metrics.png").exists()


def test_each_curve_takes_the_lines_that_carry_it(tmp_path):
    # Training lines every 2 steps, FID (logged by its own lines) every 4; a torn last line.
    lines = [{"step": s, "loss": 1.0 / s, "lr": 1e-4, "images_per_s": 50.0} for s in (2, 4, 6)]
    lines.insert(2, {"step": 4, "fid": 30.5})
    text = "".join(json.dumps(line) + "\n" for line in lines) + '{"step": 8, "lo'
    (tmp_path / "metrics.jsonl").write_text(text)
    panels = {label: (x, y) for label, x, y in curves(read_metrics(tmp_path / "metrics.jsonl"))}
    assert list(panels) == ["training loss", "learning rate", "images / s", "FID"]
    assert panels["training loss"] == ([2, 4, 6], [0.5, 0.25, 1 / 6])
    assert panels["FID"] == ([4], [30.5])


def test_bad_inputs_are_named_and_nothing_is_overwritten(named_run, tmp_path, capsys):
    def refused(argv, message):
        assert main(["plot", *argv]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and message in error, error

    refused([str(tmp_path / "missing")], "is not a training run (it has no run.json)")
    started = tmp_path / "started"  # a run that has not logged a line yet
    started.mkdir()
    shutil.copy(named_run / "run.json", started / "run.json")
    refused([str(started)], "has no metrics yet")
    (started / "metrics.jsonl").write_text("")
    refused([str(started)], "has no metrics yet")
    assert sorted(path.name for path in started.iterdir()) == ["metrics.jsonl", "run.json"]
    out = tmp_path / "mine.png"
    out.write_bytes(b"a picture of mine")
    refused([str(named_run), "--out", str(out)], "already exists; choose another file")
    assert out.read_bytes() == b"a picture of mine"
    refused([str(named_run), "--out", str(tmp_path / "curves.jpg")], "must be a .png file")
    assert main(["plot", str(named_run), "--out", str(out), "--overwrite"]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")
