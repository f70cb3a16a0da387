"""The main job: ``diffuse train --preset digits --data digits`` with its default recipe
gives digits that a classifier trained on real digits recognises as the class asked for
(at least 80 %; the README quotes the figure of benchmarks/digits_quality.py)."""

from __future__ import annotations

import pytest

from diffuse.cli import main
from diffuse.train import recipe
from diffuse.train.recognition import recognition_rate


@pytest.mark.slow
def test_the_main_job_draws_recognisable_digits(tmp_path, capsys):
    out = tmp_path / "digits"
    assert main(["train", "--preset", "digits", "--data", "digits", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    grid = out / f"samples/step-{recipe('digits').steps:08d}.png"
    assert f"{grid} (one row per class, classifier-free guidance w=1)" in printed
    assert grid.is_file()
    result = recognition_rate(out, per_class=30)
    assert result.rate >= 0.8, result
