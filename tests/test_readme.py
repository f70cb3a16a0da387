"""The README's Python snippets run exactly as written, against the run they name."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import torch

from diffuse.cli import main

README = next(
    folder / "README.md"
    for folder in Path(__file__).resolve().parents
    if (folder / "README.md").is_file() and (folder / "pyproject.toml").is_file()
)


def snippets(text: str) -> list[tuple[list[str], str]]:
    """Every ```python block of a Markdown text, in order, each with the ``diffuse``
    commands of the ```bash block just before it in its section (what the reader is told
    to run first)."""
    found = []
    for section in re.split(r"^## ", text, flags=re.MULTILINE):
        blocks = re.findall(
            r"^```(bash|python)\n(.*?)^```$", section, flags=re.DOTALL | re.MULTILINE
        )
        commands: list[str] = []
        for language, body in blocks:
            if language == "bash":
                commands = [line for line in body.splitlines() if line.startswith("diffuse ")]
            else:
                found.append((commands, body))
                commands = []
    return found


def test_readme_python_snippets_run_as_written(tmp_path, monkeypatch):
    # The snippets load "runs/digits", the run `make demo` trains. A 2-step run of the
    # tiny preset stands in for it: the same digits, the same 8x8 grey images, 10 classes
    # and a null class; the snippets depend on that shape, not on the network's quality.
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--preset", "tiny", "--data", "digits", "--out", "runs/digits"]
    argv += ["--steps", "2", "--batch-size", "8", "--set", "train.sample_steps=2"]
    assert main([*argv, "--set", "train.sample_columns=1", "--no-progress"]) == 0
    found = snippets(README.read_text(encoding="utf-8"))
    assert len(found) >= 2, f"{README} lost its ```python blocks"
    results = {}
    for commands, code in found:
        for command in commands:
            assert main(shlex.split(command, comments=True)[1:]) == 0, command
        namespace: dict = {}
        exec(compile(code, str(README), "exec"), namespace)
        results.update(namespace)
    images = results["images"]  # "From Python": 10 digits, one per class
    assert images.shape == (10, 1, 8, 8) and torch.isfinite(images).all()
    assert results["x"].shape == (10, 1, 8, 8)  # "diffusers": the same through DDIMScheduler
