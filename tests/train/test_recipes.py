"""The presets' training recipes: the papers' settings for the papers' models (sources in
diffuse.train.recipes), the CPU presets' own."""

from __future__ import annotations

import json

import pytest

from diffuse import presets
from diffuse.cli import main
from diffuse.nn import ClassifierConfig
from diffuse.train import recipe

# EMA 0.9999 without warm-up, no weight decay, a constant rate: all three papers.
PAPER = dict(ema_rates=(0.9999,), ema_warmup=False, weight_decay=0.0, lr_decay="none")
# DDPM appendix B and its TF code: Adam, clipping at 1, 5000 warm-up steps, random flips.
DDPM = dict(PAPER, grad_clip=1.0, warmup_steps=5000, random_flip=True)
# improved-diffusion: lr 1e-4, batch 128, no clipping, no flips in its data loader.
IDDPM = dict(PAPER, lr=1e-4, batch_size=128, grad_clip=0.0, warmup_steps=0, random_flip=False)
# guided-diffusion: no clipping, random flips; ADM's tables: lr 1e-4, batch 256 unless noted.
ADM = dict(PAPER, lr=1e-4, batch_size=256, grad_clip=0.0, warmup_steps=0, random_flip=True)

# The article of issue 14: AdamW 3e-4 (PyTorch's default weight decay 0.01), batch 128,
# p_uncond 0.2, no clipping, no flips; the papers' EMA kept.
ARTICLE = dict(
    PAPER, lr=3e-4, weight_decay=0.01, batch_size=128, p_uncond=0.2, grad_clip=0.0,
    random_flip=False,
)  # fmt: skip

PINNED = {
    **{
        f"article-{variant}": ARTICLE
        for variant in ("res-conv", "res", "res-res", "res-res-atn", "res-large")
    },
    "ddpm-cifar10": dict(DDPM, steps=800_000, batch_size=128, lr=2e-4),
    "ddpm-256": dict(DDPM, steps=500_000, batch_size=64, lr=2e-5),
    "iddpm-cifar10": dict(IDDPM, steps=500_000),
    "iddpm-imagenet64": dict(IDDPM, steps=1_500_000),
    "adm-imagenet64": dict(ADM, steps=540_000, batch_size=2048, lr=3e-4),
    "adm-imagenet128": dict(ADM, steps=4_360_000),
    "adm-imagenet256": dict(ADM, steps=1_980_000),
    "adm-imagenet256-uncond": dict(ADM, steps=1_980_000),
    "adm-imagenet512": dict(ADM, steps=1_940_000),
    "adm-lsun-256": dict(ADM, steps=500_000),
    "adm-upsampler-64-256": dict(ADM, steps=500_000),
    "adm-upsampler-128-512": dict(ADM, steps=1_050_000),
}

# guided-diffusion's classifier command: AdamW 3e-4, weight decay 0.05, annealed, no EMA.
ADM_CLASSIFIER = dict(
    steps=300_000,
    batch_size=256,
    lr=3e-4,
    weight_decay=0.05,
    lr_decay="linear",
    min_lr_ratio=0.0,
    grad_clip=0.0,
    random_flip=True,
    ema_rates=(),
)


def settings(config, names) -> dict:
    return {name: getattr(config, name) for name in names}


def test_every_paper_diffusion_preset_has_its_pinned_recipe():
    papers = [
        name
        for name in presets.names()
        if presets.get(name).source != presets.SMALL
        and not isinstance(presets.get(name).model_config, ClassifierConfig)
    ]
    assert sorted(papers) == sorted(PINNED)
    for name, expected in PINNED.items():
        assert settings(recipe(name), expected) == expected, name


@pytest.mark.parametrize("preset", ["adm-classifier-64", "adm-classifier-256", "adm-imagenet128"])
def test_the_noisy_classifiers_train_with_guided_diffusions_command(preset):
    config = recipe(preset, "classifier")
    assert settings(config, ADM_CLASSIFIER) == ADM_CLASSIFIER


def test_the_cpu_presets_keep_their_own_choices():
    digits = recipe("digits")
    assert (digits.grad_clip, digits.ema_warmup, digits.random_flip) == (1.0, True, False)
    assert (digits.lr, digits.ema_rates, digits.lr_decay) == (2e-3, (0.999,), "cosine")
    for name in ("digits", "fashion-14"):
        classifier = recipe(name, "classifier")
        assert (classifier.grad_clip, classifier.random_flip) == (1.0, False)
    # The article's CPU family: one budget for all five (2000 steps of 32), its p_uncond.
    for variant in ("res-conv", "res", "res-res", "res-res-atn", "res-large"):
        article = recipe(f"fashion-article-{variant}")
        assert (article.steps, article.batch_size, article.p_uncond) == (2000, 32, 0.2)


def test_train_starts_a_paper_preset_with_its_recipe(tmp_path, capsys):
    argv = ["train", "--preset", "iddpm-cifar10", "--data", "digits", "--out", str(tmp_path / "r")]
    assert main([*argv, "--show-config"]) == 0
    shown = json.loads(capsys.readouterr().out)["train"]
    expected = {
        k: list(v) if isinstance(v, tuple) else v for k, v in PINNED["iddpm-cifar10"].items()
    }
    assert {k: shown[k] for k in expected} == expected
    assert not (tmp_path / "r").exists()
