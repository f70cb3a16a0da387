"""The README's Python snippets run exactly as written, against the run they name."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from diffuse.cli import main

README = next(
    folder / "README.md"
    for folder in Path(__file__).resolve().parents
    if (folder / "README.md").is_file() and (folder / "pyproject.toml").is_file()
)


def python_snippets(text: str) -> list[str]:
    """The code of every ```python block of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)


def test_readme_python_snippets_run_as_written(tmp_path, monkeypatch):
    # The snippet loads "runs/digits", the run `make demo` trains. A 2-step run of the
    # tiny preset stands in for it: the same digits, the same 8x8 grey images, 10 classes
    # and a null class; the snippet depends on that shape, not on the network's quality.
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--preset", "tiny", "--data", "digits", "--out", "runs/digits"]
    argv += ["--steps", "2", "--batch-size", "8", "--set", "train.sample_steps=2"]
    assert main([*argv, "--set", "train.sample_columns=1", "--no-progress"]) == 0
    snippets = python_snippets(README.read_text(encoding="utf-8"))
    assert snippets, f"{README} has no ```python block"
    for code in snippets:
        namespace: dict = {}
        exec(compile(code, str(README), "exec"), namespace)
    images = namespace["images"]  # the last snippet's result: 10 digits, one per class
    assert images.shape == (10, 1, 8, 8) and torch.isfinite(images).all()
