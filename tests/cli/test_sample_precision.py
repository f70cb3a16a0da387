"""`diffuse sample --precision`: "auto" (the default) says what it chose and why, records
it in info.json, and samples exactly as that precision given explicitly; a precision the
device cannot run fails before any output, leaving an earlier one intact."""

from __future__ import annotations

import json

import numpy as np
import pytest

from diffuse import autoprecision
from diffuse.checkpoint import save_checkpoint
from diffuse.cli import main
from helpers.cpus import EPYC, fake_cpu, timings_favouring
from helpers.sample_models import DIFFUSION, base_unet, upsampler


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision-checkpoints")
    return {
        "model": str(save_checkpoint(root / "model", base_unet(), diffusion=DIFFUSION)),
        "upsampler": str(save_checkpoint(root / "upsampler", upsampler(), diffusion=DIFFUSION)),
    }


def sample(checkpoint, out, *options) -> int:
    argv = ["sample", checkpoint, "--n", "3", "--batch-size", "2", "--steps", "2"]
    return main([*argv, "--classes", "1,2", "--out", str(out), "--no-progress", *options])


def recorded(out) -> tuple[str | None, str | None]:
    info = json.loads((out / "info.json").read_text())
    return info["precision"], info["upsampler_precision"]


def images(out) -> np.ndarray:
    with np.load(out / "samples.npz") as npz:
        return npz["arr_0"].astype(int)


def test_auto_is_fp32_without_bf16_instructions_and_is_recorded(checkpoints, tmp_path, capsys):
    assert sample(checkpoints["model"], tmp_path / "auto") == 0
    out = capsys.readouterr().out
    assert "precision auto -> fp32 (no bf16 instructions on CPU of the test suite)" in out
    assert recorded(tmp_path / "auto") == ("fp32", None)
    assert not autoprecision.cache_path().exists()  # nothing was timed


def test_auto_times_bf16_once_per_machine_and_samples_as_explicit_bf16(
    checkpoints, tmp_path, monkeypatch, capsys
):
    fake_cpu(tmp_path, monkeypatch, "avx512_bf16")
    timed = []
    monkeypatch.setattr(autoprecision, "time_precisions", timings_favouring("bf16", timed))
    argv = ("--upsampler", checkpoints["upsampler"], "--upsampler-steps", "2")
    assert sample(checkpoints["model"], tmp_path / "auto", *argv) == 0
    out = capsys.readouterr().out
    assert f"precision auto -> bf16 (measured on {EPYC}, batch 2:" in out
    assert f"upsampler: precision auto -> bf16 (measured on {EPYC}, batch 2:" in out
    assert recorded(tmp_path / "auto") == ("bf16", "bf16") and len(timed) == 2
    assert sample(checkpoints["model"], tmp_path / "again", *argv) == 0
    assert out.count("measured on") == 2 and "measured earlier" in capsys.readouterr().out
    assert len(timed) == 2  # cached for this machine
    assert sample(checkpoints["model"], tmp_path / "bf16", *argv, "--precision", "bf16") == 0
    assert "precision auto" not in capsys.readouterr().out  # said only for "auto"
    assert recorded(tmp_path / "bf16") == ("bf16", "bf16")
    # the same kernels on the same inputs; a level of slack keeps the test independent of
    # kernel determinism
    assert np.abs(images(tmp_path / "auto") - images(tmp_path / "bf16")).max() <= 1
    assert sample(checkpoints["model"], tmp_path / "fp32", *argv, "--precision", "fp32") == 0
    assert recorded(tmp_path / "fp32") == ("fp32", "fp32")


def test_a_precision_the_device_cannot_run_fails_before_any_output(checkpoints, tmp_path, capsys):
    out = tmp_path / "samples"
    assert sample(checkpoints["model"], out, "--precision", "fp32") == 0
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert sample(checkpoints["model"], out, "--overwrite", "--precision", "fp16") == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "fp16 autocast is for CUDA devices" in error
    assert "use bf16 or fp32 (or auto)" in error
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    with pytest.raises(SystemExit) as stop:
        sample(checkpoints["model"], tmp_path / "bad", "--precision", "fp8")
    assert stop.value.code == 2 and "invalid choice: 'fp8'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
