"""Presets: exact parameter counts of the published models, sizes of the small ones."""

from __future__ import annotations

import re

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from diffuse import presets
from diffuse.errors import ConfigError

# Parameters of the networks the reference constructors build with the flags of the
# guided-diffusion / improved-diffusion READMEs (the released checkpoints' sizes), and of
# DDPM's networks (35.7 M and 114 M in Ho et al. 2020).
PAPER_PARAMETERS = {
    "ddpm-cifar10": 35_746_307,
    "ddpm-256": 113_673_219,
    "iddpm-cifar10": 52_546_438,
    "iddpm-imagenet64": 121_063_942,
    "adm-imagenet64": 295_904_454,
    "adm-imagenet128": 421_529_606,
    "adm-imagenet256": 553_838_086,
    "adm-imagenet256-uncond": 552_814_086,
    "adm-imagenet512": 558_997_638,
    "adm-lsun-256": 552_814_086,
    "adm-upsampler-64-256": 311_795_910,
    "adm-upsampler-128-512": 308_835_270,
    "adm-classifier-64": 65_438_568,
    "adm-classifier-128": 42_568_040,
    "adm-classifier-256": 54_096_360,
    "adm-classifier-512": 54_448_360,
}
# The article's five models (issue 14), built from our blocks with its published settings.
ARTICLE_PARAMETERS = {
    "article-res-conv": 213_955_123,
    "article-res": 175_102_771,
    "article-res-res": 254_968_627,
    "article-res-res-atn": 267_569_971,
    "article-res-large": 383_032_755,
}
ARTICLE_RECIPES = {
    "res-conv": ("res", "conv", "clsatn", "chnatn"),
    "res": ("res", "clsatn", "chnatn"),
    "res-res": ("res", "res", "clsatn", "chnatn"),
    "res-res-atn": ("res", "res", "clsatn", "atn", "chnatn"),
    "res-large": ("res", "clsatn", "chnatn"),
}
FASHION_ARTICLE = [f"fashion-article-{variant}" for variant in ARTICLE_RECIPES]
SMALL = ["digits", "fashion", "fashion-14", "fashion-upsampler-14-28", "tiny", *FASHION_ARTICLE]


def low_res_input(config, n: int, device: str = "cpu") -> dict:
    """The keyword argument an upsampler also needs (nothing for other networks)."""
    if config.kind != "superres":
        return {}
    size = config.low_res_size
    return {"low_res": torch.zeros(n, config.in_channels, size, size, device=device)}


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(PAPER_PARAMETERS))
def test_paper_preset_has_the_published_parameter_count(name):
    model = presets.build(name)  # meta device: nothing allocated
    assert next(model.parameters()).is_meta
    assert parameter_count(model) == PAPER_PARAMETERS[name]


@pytest.mark.parametrize("name", sorted(ARTICLE_PARAMETERS))
def test_article_preset_has_its_pinned_parameter_count(name):
    model = presets.build(name)  # meta device: nothing allocated
    assert next(model.parameters()).is_meta
    assert parameter_count(model) == ARTICLE_PARAMETERS[name]


@pytest.mark.parametrize("variant", sorted(ARTICLE_RECIPES))
def test_article_presets_have_the_published_settings(variant):
    large = variant == "res-large"
    article = presets.get(f"article-{variant}")
    config, diffusion = article.model_config, article.diffusion
    assert config.blocks == ARTICLE_RECIPES[variant]
    assert (config.image_size, config.in_channels, config.out_channels) == (64, 3, 6)
    assert config.model_channels == (192 if large else 128)
    # "channel multiplier 1" as the article's code applies it: width 2 ** i at level i
    assert (config.channel_mult, config.attention_resolutions) == ((2, 4, 8), (16,))
    assert (config.embedding_channels, config.num_classes, config.null_class) == (512, 1000, True)
    assert (diffusion.schedule, diffusion.timesteps) == ("cosine", 1000)
    assert (diffusion.variance, diffusion.loss) == ("learned_range", "hybrid")
    # The CPU version: the same recipe and shape at Fashion-MNIST's size.
    small = presets.get(f"fashion-article-{variant}")
    assert small.model_config.blocks == config.blocks and small.diffusion == diffusion
    assert small.model_config.channel_mult == (2, 4, 8) and small.image_size == 28
    assert small.model_config.model_channels == (18 if large else 12)


def test_every_preset_is_listed_and_consistent():
    assert set(presets.names()) == set(PAPER_PARAMETERS) | set(ARTICLE_PARAMETERS) | set(SMALL)
    for name in presets.names():
        preset = presets.get(name)
        config = preset.model_config
        assert preset.name == name and preset.image_size == config.image_size
        assert preset.source and preset.description
        if config.kind != "classifier":
            channels = config.in_channels * (2 if preset.diffusion.learns_variance else 1)
            assert config.out_channels == channels, name


def test_improved_ddpm_presets_rescale_timesteps_to_1000():
    for name in ("iddpm-cifar10", "iddpm-imagenet64"):
        preset = presets.get(name)
        assert preset.diffusion.timesteps * preset.model_config.timestep_scale == 1000


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown preset 'cifar'.*ddpm-cifar10"):
        presets.get("cifar")


@pytest.mark.parametrize("name", SMALL)
def test_small_preset_docstring_states_its_size_and_cost(name):
    preset = presets.get(name)
    model = presets.build(name)
    config = preset.model_config
    x = torch.zeros(1, config.in_channels, config.image_size, config.image_size, device="meta")
    t = torch.zeros(1, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter:
        model(x, t, **low_res_input(config, 1, device="meta"))
    text = " ".join(preset.description.split())
    params = int(re.search(r"([\d,]+) parameters", text).group(1).replace(",", ""))
    gflops = float(re.search(r"([\d.]+) GFLOP per image", text).group(1))
    assert params == parameter_count(model)
    assert gflops == pytest.approx(counter.get_total_flops() / 1e9, rel=0.02)


@pytest.mark.parametrize("name", SMALL)
def test_small_preset_runs_on_the_cpu(name):
    model = presets.build(name, device="cpu").eval()
    config = model.config
    x = torch.randn(2, config.in_channels, config.image_size, config.image_size)
    with torch.no_grad():
        labels = torch.tensor([1, model.null_class])
        out = model(x, torch.tensor([0, 999]), labels, **low_res_input(config, 2))
    assert out.shape == (2, config.out_channels, config.image_size, config.image_size)
