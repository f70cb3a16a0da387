"""The user's paths on a CUDA GPU: train in each precision, resume, train a classifier,
sample (plain, guided, with each sampler) on the GPU, and move a GPU-trained checkpoint
to the CPU. Skipped where torch sees no CUDA device (CI's machines have none); run on a
GPU machine with ``pytest tests/test_cuda.py`` (or ``benchmarks/gpu_check.sh``). They are
marked ``gpu``: every other test sees no GPU (tests/conftest.py).

Sampling draws its noise on the CPU (one generator per image), so the same checkpoint and
seed give the same images on either device up to the kernels' rounding: cuDNN's float32
convolutions run in TF32 by default (10-bit mantissa), a few grey levels at most.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from diffuse.checkpoint import load_checkpoint
from diffuse.cli import main
from helpers.train_processes import QUICK

# Read when the module is collected, before any test hides the GPUs (tests/conftest.py).
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]

SHORT = ["--steps", "4", "--batch-size", "16", "--seed", "3", "--set", "train.log_every=1"]


def train(out, *extra: str) -> int:
    argv = ["train", "--preset", "tiny", "--data", "digits", "--out", str(out)]
    return main([*argv, *QUICK, *extra])


def sample(run, out, *extra: str) -> np.ndarray:
    argv = ["sample", str(run), "--n", "6", "--batch-size", "4", "--steps", "8"]
    assert main([*argv, "--seed", "5", "--out", str(out), "--no-progress", *extra]) == 0
    with np.load(out / "samples.npz") as npz:
        return npz["arr_0"].astype(int)


def losses(run) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if '"loss"' in line]


@pytest.fixture
def cuda_run(tmp_path):
    """The tiny preset trained 4 steps on the GPU in float32 (per test: the GPU is shown
    to a test, not to the fixtures of a wider scope)."""
    run = tmp_path / "cuda-run"
    assert train(run, *SHORT, "--device", "cuda", "--precision", "fp32") == 0
    return run


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_on_the_gpu_in_each_precision_gives_a_finite_loss(precision, tmp_path):
    run = tmp_path / precision
    assert train(run, *SHORT, "--device", "cuda", "--precision", precision) == 0
    assert losses(run) and all(np.isfinite(losses(run)))
    assert load_checkpoint(run).step == 4


def test_auto_precision_on_the_gpu_is_timed_once_and_cached(tmp_path, capsys):
    # Timed where the GPU runs bf16 (the faster of fp32, bf16 and bf16 in NCHW), else fp32.
    name = torch.cuda.get_device_name()
    for run in ("first", "second"):
        assert train(tmp_path / run, "--steps", "1", "--batch-size", "8", "--device", "cuda") == 0
        out = capsys.readouterr().out
        if torch.cuda.get_device_capability() < (8, 0):  # no bf16 before Ampere
            assert f"precision auto -> fp32 ({name} has no bf16 support)" in out
        elif run == "first":
            assert re.search(
                rf"precision auto -> \S+.* \(measured on {re.escape(name)}, batch 8", out
            )
        else:
            assert f"(measured earlier on {name}, batch 8" in out


def test_a_gpu_run_resumes_on_the_gpu(cuda_run, tmp_path):
    run = tmp_path / "resumed"
    assert train(run, *SHORT, "--device", "cuda", "--precision", "fp32", "--stop-at", "2") == 0
    assert load_checkpoint(run).step == 2
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert load_checkpoint(run).step == 4
    # The same four steps as the uninterrupted run, up to the GPU's non-deterministic sums.
    np.testing.assert_allclose(losses(run), losses(cuda_run), rtol=1e-3)


def test_a_gpu_checkpoint_samples_the_same_images_on_the_gpu_and_the_cpu(cuda_run, tmp_path):
    for sampler in ("ddim", "ddpm", "dpm++2m"):
        extra = ("--sampler", sampler, "--precision", "fp32")
        on_gpu = sample(cuda_run, tmp_path / f"gpu-{sampler}", "--device", "cuda", *extra)
        on_cpu = sample(cuda_run, tmp_path / f"cpu-{sampler}", "--device", "cpu", *extra)
        assert on_gpu.shape == (6, 8, 8, 1)
        assert np.abs(on_gpu - on_cpu).max() <= 4, sampler


def test_bf16_sampling_on_the_gpu_stays_close_to_float32(cuda_run, tmp_path):
    fp32 = sample(cuda_run, tmp_path / "fp32", "--device", "cuda", "--precision", "fp32")
    bf16 = sample(cuda_run, tmp_path / "bf16", "--device", "cuda", "--precision", "bf16")
    assert np.abs(fp32 - bf16).mean() < 4


def test_classifier_guidance_on_the_gpu(cuda_run, tmp_path):
    classifier = tmp_path / "classifier"
    argv = ["train-classifier", "--preset", "tiny", "--data", "digits", "--out", str(classifier)]
    assert main([*argv, "--steps", "2", "--batch-size", "8", "--device", "cuda"]) == 0
    guided = ["--classifier", str(classifier), "--classifier-scale", "2", "--classes", "3"]
    images = sample(cuda_run, tmp_path / "guided", "--device", "cuda", *guided)
    assert images.shape == (6, 8, 8, 1)
    with np.load(tmp_path / "guided" / "samples.npz") as npz:
        assert npz["arr_1"].tolist() == [3] * 6


def test_likelihood_on_the_gpu_matches_the_cpu(cuda_run, tmp_path):
    bits = {}
    for device in ("cuda", "cpu"):
        out = tmp_path / f"nll-{device}"
        argv = ["nll", str(cuda_run), "--data", "digits", "--n", "4", "--out", str(out)]
        assert main([*argv, "--device", device, "--no-progress"]) == 0
        bits[device] = json.loads((out / "nll.json").read_text())["bpd"]
    assert bits["cuda"] == pytest.approx(bits["cpu"], rel=1e-3)
