"""Named configurations: the published models of the three papers, the article's block
recipes, and small CPU-sized ones.

``get(name)`` returns a :class:`Preset` (network and diffusion settings, image size, source,
description); ``build(name, device="meta")`` returns the network, on the meta device by
default so that counting the parameters of a 550 M model allocates nothing. Each paper
preset reproduces the published network exactly (its parameter count is tested against the
released checkpoint's). The article's five models (``article-*``, issue 14) have its
published settings built from our blocks (no checkpoint was released); ``fashion-article-*``
are the same five sized for Fashion-MNIST on this CPU.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from diffuse.diffusion.diffusion_config import DiffusionConfig
from diffuse.errors import ConfigError
from diffuse.nn import (
    ClassifierConfig,
    EncoderConfig,
    SuperResConfig,
    UNetConfig,
    build_network,
)

GUIDED = "openai/guided-diffusion README (Dhariwal & Nichol 2021, 'Diffusion Models Beat GANs')"
IMPROVED = "openai/improved-diffusion README (Nichol & Dhariwal 2021, 'Improved DDPM')"
DDPM = "Ho, Jain & Abbeel 2020, 'Denoising Diffusion Probabilistic Models', appendix B"


@dataclass(frozen=True)
class Preset:
    """A named model: what to build and how it diffuses.

    name:         the preset's name.
    model_config: the network's architecture.
    diffusion:    the diffusion settings it is trained and sampled with.
    image_size:   height and width of its images in pixels.
    source:       where the settings come from.
    description:  what it is (with its size for the small presets).
    """

    name: str
    model_config: EncoderConfig
    diffusion: DiffusionConfig
    image_size: int
    source: str
    description: str


_PRESETS: dict[str, Callable[[], Preset]] = {}


def _preset(name: str, source: str):
    """Register the decorated function (returning model and diffusion settings) as ``name``;
    its docstring becomes the description."""

    def register(factory: Callable[[], tuple[EncoderConfig, DiffusionConfig]]):
        def make() -> Preset:
            model, diffusion = factory()
            description = inspect.getdoc(factory) or ""
            return Preset(name, model, diffusion, model.image_size, source, description)

        _PRESETS[name] = make
        return factory

    return register


def names() -> list[str]:
    """The names of all presets."""
    return sorted(_PRESETS)


def get(name: str) -> Preset:
    """The preset called ``name``."""
    if name not in _PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(names())}")
    return _PRESETS[name]()


def build(name: str, device: str | torch.device = "meta") -> nn.Module:
    """The network of preset ``name`` with fresh weights, on ``device`` (meta by default:
    shapes only, no memory)."""
    config = get(name).model_config
    with torch.device(device):
        return build_network(config)


# --- DDPM (Ho et al. 2020) --------------------------------------------------------------

_DDPM_UNET = dict(
    in_channels=3,
    out_channels=3,
    model_channels=128,
    num_res_blocks=2,
    attention_resolutions=(16,),
    num_heads=1,
    scale_shift_norm=False,
    resample="conv",
)
_DDPM_DIFFUSION = DiffusionConfig("linear", 1000, "eps", "fixed_large", "mse")


@_preset("ddpm-cifar10", DDPM)
def _ddpm_cifar10():
    """DDPM's CIFAR-10 U-Net: 35.7 M parameters, width 128, multipliers (1, 2, 2, 2), two
    blocks per level, attention at 16x16, dropout 0.1; linear schedule, T = 1000, L_simple."""
    model = UNetConfig(image_size=32, channel_mult=(1, 2, 2, 2), dropout=0.1, **_DDPM_UNET)
    return model, _DDPM_DIFFUSION


@_preset("ddpm-256", DDPM)
def _ddpm_256():
    """DDPM's 256x256 U-Net (CelebA-HQ, LSUN): 114 M parameters, multipliers
    (1, 1, 2, 2, 4, 4), attention at 16x16; linear schedule, T = 1000, L_simple."""
    model = UNetConfig(image_size=256, channel_mult=(1, 1, 2, 2, 4, 4), **_DDPM_UNET)
    return model, _DDPM_DIFFUSION


# --- Improved DDPM (Nichol & Dhariwal 2021) ----------------------------------------------

_IDDPM_DIFFUSION = DiffusionConfig("cosine", 4000, "eps", "learned_range", "hybrid")


def _iddpm_unet(image_size: int, channel_mult: tuple[int, ...], dropout: float) -> UNetConfig:
    return UNetConfig(
        image_size=image_size,
        in_channels=3,
        out_channels=6,
        model_channels=128,
        channel_mult=channel_mult,
        num_res_blocks=3,
        attention_resolutions=(16, 8),
        num_heads=4,
        attention_order="legacy",
        dropout=dropout,
        scale_shift_norm=True,
        resample="conv",
        timestep_scale=1000 / _IDDPM_DIFFUSION.timesteps,
    )


@_preset("iddpm-cifar10", IMPROVED)
def _iddpm_cifar10():
    """Improved DDPM's unconditional CIFAR-10 model (cifar10_uncond_50M_500K.pt): 52.5 M
    parameters; cosine schedule, T = 4000, learned variances, L_hybrid."""
    return _iddpm_unet(32, (1, 2, 2, 2), dropout=0.3), _IDDPM_DIFFUSION


@_preset("iddpm-imagenet64", IMPROVED)
def _iddpm_imagenet64():
    """Improved DDPM's unconditional ImageNet 64x64 model (imagenet64_uncond_100M_1500K.pt):
    121 M parameters; cosine schedule, T = 4000, learned variances, L_hybrid."""
    return _iddpm_unet(64, (1, 2, 3, 4), dropout=0.0), _IDDPM_DIFFUSION


# --- ADM (Dhariwal & Nichol 2021) ---------------------------------------------------------

_ADM_MULT = {
    64: (1, 2, 3, 4),
    128: (1, 1, 2, 3, 4),
    256: (1, 1, 2, 2, 4, 4),
    512: (0.5, 1, 1, 2, 2, 4, 4),
}


def _adm_diffusion(schedule: str = "linear") -> DiffusionConfig:
    return DiffusionConfig(schedule, 1000, "eps", "learned_range", "hybrid")


def _adm_unet(image_size: int, model_channels: int, **settings) -> dict:
    return dict(
        image_size=image_size,
        in_channels=3,
        out_channels=6,
        model_channels=model_channels,
        channel_mult=settings.pop("channel_mult", _ADM_MULT[image_size]),
        num_res_blocks=settings.pop("num_res_blocks", 2),
        attention_resolutions=settings.pop("attention_resolutions", (32, 16, 8)),
        scale_shift_norm=True,
        resample="resblock",
        **settings,
    )


@_preset("adm-imagenet64", GUIDED)
def _adm_imagenet64():
    """ADM class-conditional ImageNet 64x64 (64x64_diffusion.pt): 296 M parameters, width
    192, three blocks per level, 64 channels per head, new attention order, dropout 0.1;
    cosine schedule, T = 1000, learned variances."""
    model = UNetConfig(
        **_adm_unet(64, 192, num_res_blocks=3, num_head_channels=64, dropout=0.1),
        attention_order="new",
        num_classes=1000,
    )
    return model, _adm_diffusion("cosine")


@_preset("adm-imagenet128", GUIDED)
def _adm_imagenet128():
    """ADM class-conditional ImageNet 128x128 (128x128_diffusion.pt): 422 M parameters,
    width 256, four heads; linear schedule, T = 1000, learned variances."""
    model = UNetConfig(
        **_adm_unet(128, 256, num_heads=4), attention_order="legacy", num_classes=1000
    )
    return model, _adm_diffusion()


@_preset("adm-imagenet256", GUIDED)
def _adm_imagenet256():
    """ADM class-conditional ImageNet 256x256 (256x256_diffusion.pt): 554 M parameters,
    width 256, 64 channels per head; linear schedule, T = 1000, learned variances."""
    model = UNetConfig(
        **_adm_unet(256, 256, num_head_channels=64), attention_order="legacy", num_classes=1000
    )
    return model, _adm_diffusion()


@_preset("adm-imagenet256-uncond", GUIDED)
def _adm_imagenet256_uncond():
    """ADM unconditional ImageNet 256x256 (256x256_diffusion_uncond.pt): 553 M parameters;
    linear schedule, T = 1000, learned variances."""
    model = UNetConfig(**_adm_unet(256, 256, num_head_channels=64), attention_order="legacy")
    return model, _adm_diffusion()


@_preset("adm-imagenet512", GUIDED)
def _adm_imagenet512():
    """ADM class-conditional ImageNet 512x512 (512x512_diffusion.pt): 559 M parameters,
    multipliers (0.5, 1, 1, 2, 2, 4, 4); linear schedule, T = 1000, learned variances."""
    model = UNetConfig(
        **_adm_unet(512, 256, num_head_channels=64), attention_order="legacy", num_classes=1000
    )
    return model, _adm_diffusion()


@_preset("adm-lsun-256", GUIDED)
def _adm_lsun_256():
    """ADM unconditional LSUN 256x256 (lsun_bedroom.pt, lsun_cat.pt, lsun_horse.pt; for
    lsun_horse_nodropout.pt the dropout is unused at sampling): 553 M parameters, dropout
    0.1; linear schedule, T = 1000, learned variances."""
    model = UNetConfig(
        **_adm_unet(256, 256, num_head_channels=64, dropout=0.1), attention_order="legacy"
    )
    return model, _adm_diffusion()


@_preset("adm-upsampler-64-256", GUIDED)
def _adm_upsampler_64_256():
    """ADM class-conditional upsampler 64 -> 256 (64_256_upsampler.pt): 312 M parameters,
    width 192, four heads; linear schedule, T = 1000, learned variances."""
    model = SuperResConfig(
        **_adm_unet(256, 192, num_heads=4),
        attention_order="legacy",
        num_classes=1000,
        low_res_size=64,
    )
    return model, _adm_diffusion()


@_preset("adm-upsampler-128-512", GUIDED)
def _adm_upsampler_128_512():
    """ADM class-conditional upsampler 128 -> 512 (128_512_upsampler.pt): 309 M parameters,
    width 192, multipliers (1, 1, 2, 2, 4, 4), attention at 32 and 16 pixels; linear
    schedule, T = 1000, learned variances."""
    model = SuperResConfig(
        **_adm_unet(
            512,
            192,
            channel_mult=(1, 1, 2, 2, 4, 4),
            attention_resolutions=(32, 16),
            num_head_channels=64,
        ),
        attention_order="legacy",
        num_classes=1000,
        low_res_size=128,
    )
    return model, _adm_diffusion()


def _adm_classifier(image_size: int, depth: int) -> ClassifierConfig:
    settings = _adm_unet(image_size, 128, num_res_blocks=depth, num_head_channels=64)
    return ClassifierConfig(
        **{**settings, "out_channels": 1000}, attention_order="legacy", pool="attention"
    )


@_preset("adm-classifier-64", GUIDED)
def _adm_classifier_64():
    """ADM noisy ImageNet classifier at 64x64 (64x64_classifier.pt): 65.4 M parameters,
    width 128, depth 4, attention pooling; for the cosine-schedule 64x64 model."""
    return _adm_classifier(64, 4), _adm_diffusion("cosine")


@_preset("adm-classifier-128", GUIDED)
def _adm_classifier_128():
    """ADM noisy ImageNet classifier at 128x128 (128x128_classifier.pt): 42.6 M parameters,
    width 128, depth 2, attention pooling."""
    return _adm_classifier(128, 2), _adm_diffusion()


@_preset("adm-classifier-256", GUIDED)
def _adm_classifier_256():
    """ADM noisy ImageNet classifier at 256x256 (256x256_classifier.pt): 54.1 M parameters,
    width 128, depth 2, attention pooling."""
    return _adm_classifier(256, 2), _adm_diffusion()


@_preset("adm-classifier-512", GUIDED)
def _adm_classifier_512():
    """ADM noisy ImageNet classifier at 512x512 (512x512_classifier.pt): 54.4 M parameters,
    width 128, depth 2, attention pooling."""
    return _adm_classifier(512, 2), _adm_diffusion()


# --- Small models for this CPU -------------------------------------------------------------

SMALL = "diffuse (sized for a 2-core CPU)"
_SMALL_DIFFUSION = DiffusionConfig("cosine", 1000, "eps", "fixed_small", "mse")


def _grey_conditional(**settings) -> UNetConfig:
    """A U-Net for grey images with 10 classes and a null class (classifier-free guidance)."""
    return UNetConfig(in_channels=1, out_channels=1, num_classes=10, null_class=True, **settings)


@_preset("digits", SMALL)
def _digits():
    """sklearn digits, 8x8 grey, class-conditional with a null class (classifier-free
    guidance): width 32, multipliers (1, 2), two blocks per level, attention in the 4x4
    middle block, dropout 0.1; cosine schedule, T = 1000, L_simple. 997,729 parameters,
    0.0405 GFLOP per image forward."""
    model = _grey_conditional(
        image_size=8,
        model_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=2,
        attention_resolutions=(),
        num_head_channels=32,
        norm_groups=8,
        dropout=0.1,
    )
    return model, _SMALL_DIFFUSION


# The Fashion-MNIST networks: grey in and out, width 32, two blocks per level, 32 channels
# per head, 16 GroupNorm groups, dropout 0.1, 10 classes and a null class.
_FASHION = dict(
    in_channels=1,
    out_channels=1,
    model_channels=32,
    num_res_blocks=2,
    num_head_channels=32,
    norm_groups=16,
    dropout=0.1,
    num_classes=10,
    null_class=True,
)


@_preset("fashion", SMALL)
def _fashion():
    """Fashion-MNIST, 28x28 grey, class-conditional with a null class: width 32,
    multipliers (1, 2, 4), two blocks per level, attention at 14x14 and in the 7x7 middle
    block (32 channels per head), dropout 0.1; cosine schedule, T = 1000, L_simple.
    3,870,625 parameters, 0.80 GFLOP per image forward."""
    model = UNetConfig(
        image_size=28,
        channel_mult=(1, 2, 4),
        attention_resolutions=(14,),
        **_FASHION,
    )
    return model, _SMALL_DIFFUSION


@_preset("fashion-14", SMALL)
def _fashion_14():
    """Fashion-MNIST shrunk to 14x14 (2x2 means), the base of ``fashion-upsampler-14-28``:
    as ``fashion`` with multipliers (1, 2): attention at 14x14 and in the 7x7 middle block.
    1,019,169 parameters, 0.156 GFLOP per image forward."""
    model = UNetConfig(
        image_size=14,
        channel_mult=(1, 2),
        attention_resolutions=(14,),
        **_FASHION,
    )
    return model, _SMALL_DIFFUSION


@_preset("fashion-upsampler-14-28", SMALL)
def _fashion_upsampler_14_28():
    """Fashion-MNIST upsampler 14 -> 28 (ADM's two-stage pipeline at CPU scale): as
    ``fashion`` with the 14x14 image bilinearly resized and concatenated to x_t,
    multipliers (1, 2, 2) and attention only in the 7x7 middle block. Its base model is
    ``fashion-14``. 1,660,737 parameters, 0.50 GFLOP per image forward."""
    model = SuperResConfig(
        image_size=28,
        channel_mult=(1, 2, 2),
        attention_resolutions=(),
        low_res_size=14,
        **_FASHION,
    )
    return model, _SMALL_DIFFUSION


@_preset("tiny", SMALL)
def _tiny():
    """A tiny 8x8 grey class-conditional model (10 classes and a null class) for tests and
    demos: width 16, multipliers (1, 2), one block per level, 8 GroupNorm groups; cosine
    schedule, T = 1000, L_simple. 178,209 parameters, 0.0071 GFLOP per image forward."""
    model = _grey_conditional(
        image_size=8,
        model_channels=16,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(),
        num_head_channels=16,
        norm_groups=8,
    )
    return model, _SMALL_DIFFUSION


# --- The article's block recipes (issue 14) ---------------------------------------------------

ARTICLE = (
    "G. Mongaras, the DDPM/DDIM/classifier-free-guidance article of issue 14 "
    "(code: github.com/gmongaras/Diffusion_models_from_scratch)"
)
# Cosine schedule, T = 1000, learned variances (learned range) trained with L_hybrid
# (lambda = 0.001), as the article trains all five.
_ARTICLE_DIFFUSION = DiffusionConfig("cosine", 1000, "eps", "learned_range", "hybrid")

# The article's recipes, by the name of their residual part.
_RES_CONV = ("res", "conv", "clsatn", "chnatn")
_RES = ("res", "clsatn", "chnatn")
_RES_RES = ("res", "res", "clsatn", "chnatn")
_RES_RES_ATN = ("res", "res", "clsatn", "atn", "chnatn")
# The article's "channel multiplier 1": level i of 3 is 2 ** i times the base width.
ARTICLE_MULTIPLIERS = (2, 4, 8)


def _article_unet(blocks: tuple[str, ...], model_channels: int = 128) -> UNetConfig:
    """The article's class-conditional ImageNet 64x64 U-Net with the recipe ``blocks``.

    As published: 128 base channels (192 for the large model) and "channel multiplier 1",
    which the article's code applies as ``width_i = 128 * 2 ** (1 * i)`` for levels
    i = 1, 2, 3: widths 256, 512 and 1024 at 64, 32 and 16 pixels (our multipliers
    (2, 4, 8) of the base; the stem maps to the base width first, as its input convolution
    does). Attention at 16x16, time and class embeddings of 512 whatever the width,
    dropout 0.1, 1000 classes and a null class (p_uncond 0.2 in its training recipe). One
    recipe unit per level in the encoder (the article's one block per level; our decoder
    has one more, and our middle stays at 16x16 where the article's downsamples once more
    to 8x8), 64 channels per attention head (the article's two heads at 128 channels).
    """
    return UNetConfig(
        image_size=64,
        in_channels=3,
        out_channels=6,
        model_channels=model_channels,
        channel_mult=ARTICLE_MULTIPLIERS,
        num_res_blocks=1,
        blocks=blocks,
        attention_resolutions=(16,),
        num_head_channels=64,
        dropout=0.1,
        embedding_channels=512,
        num_classes=1000,
        null_class=True,
    )


@_preset("article-res-conv", ARTICLE)
def _article_res_conv():
    """The article's res-conv model, ImageNet 64x64 class-conditional: each unit runs a
    residual block, a ConvNeXt block, class attention and channel attention; base width
    128 (levels of 256, 512, 1024), attention at 16x16, embeddings of 512; cosine
    schedule, T = 1000, learned variances, L_hybrid. 213,955,123 parameters."""
    return _article_unet(_RES_CONV), _ARTICLE_DIFFUSION


@_preset("article-res", ARTICLE)
def _article_res():
    """The article's res model: as ``article-res-conv`` with units of a residual block,
    class attention and channel attention. 175,102,771 parameters."""
    return _article_unet(_RES), _ARTICLE_DIFFUSION


@_preset("article-res-res", ARTICLE)
def _article_res_res():
    """The article's res-res model: as ``article-res-conv`` with units of two residual
    blocks, class attention and channel attention. 254,968,627 parameters."""
    return _article_unet(_RES_RES), _ARTICLE_DIFFUSION


@_preset("article-res-res-atn", ARTICLE)
def _article_res_res_atn():
    """The article's res-res-atn model: as ``article-res-res`` with spatial self-attention
    after the class attention (at 16x16 only). 267,569,971 parameters."""
    return _article_unet(_RES_RES_ATN), _ARTICLE_DIFFUSION


@_preset("article-res-large", ARTICLE)
def _article_res_large():
    """The article's res-large model: ``article-res`` at base width 192 (levels of 384,
    768, 1536; embeddings still 512).
    383,032,755 parameters."""
    return _article_unet(_RES, model_channels=192), _ARTICLE_DIFFUSION


def _fashion_article_unet(blocks: tuple[str, ...], model_channels: int = 12) -> UNetConfig:
    """The article's U-Net shrunk for Fashion-MNIST on a 2-core CPU, with the recipe ``blocks``.

    28x28 grey, 10 classes and a null class; the article's shape scaled down: base width
    12 (18 for the large model, the article's 192 / 128) doubled at each level as the
    article's multiplier 1 does (24, 48, 96 at 28, 14 and 7 pixels), attention at 7x7 (a
    quarter of the image side, as 16 of 64), embeddings of 96 whatever the width, 12
    channels per head, 6 GroupNorm groups, dropout 0.1, one unit per level.
    """
    return UNetConfig(
        image_size=28,
        in_channels=1,
        out_channels=2,
        model_channels=model_channels,
        channel_mult=ARTICLE_MULTIPLIERS,
        num_res_blocks=1,
        blocks=blocks,
        attention_resolutions=(7,),
        num_head_channels=12,
        norm_groups=6,
        dropout=0.1,
        embedding_channels=96,
        num_classes=10,
        null_class=True,
    )


@_preset("fashion-article-res-conv", SMALL)
def _fashion_article_res_conv():
    """``article-res-conv`` for Fashion-MNIST on this CPU: units of a residual block, a
    ConvNeXt block, class attention and channel attention; widths 24, 48, 96,
    attention at 7x7, embeddings of 96; cosine schedule, T = 1000, learned variances,
    L_hybrid. 2,085,197 parameters, 0.371 GFLOP per image forward."""
    return _fashion_article_unet(_RES_CONV), _ARTICLE_DIFFUSION


@_preset("fashion-article-res", SMALL)
def _fashion_article_res():
    """``article-res`` for Fashion-MNIST on this CPU: as ``fashion-article-res-conv`` with
    units of a residual block, class attention and channel attention. 1,668,389 parameters,
    0.296 GFLOP per image forward."""
    return _fashion_article_unet(_RES), _ARTICLE_DIFFUSION


@_preset("fashion-article-res-res", SMALL)
def _fashion_article_res_res():
    """``article-res-res`` for Fashion-MNIST on this CPU: units of two residual blocks,
    class attention and channel attention. 2,422,373 parameters, 0.443 GFLOP per image
    forward."""
    return _fashion_article_unet(_RES_RES), _ARTICLE_DIFFUSION


@_preset("fashion-article-res-res-atn", SMALL)
def _fashion_article_res_res_atn():
    """``article-res-res-atn`` for Fashion-MNIST on this CPU: as
    ``fashion-article-res-res`` with spatial self-attention (at 7x7 only). 2,534,693
    parameters, 0.457 GFLOP per image forward."""
    return _fashion_article_unet(_RES_RES_ATN), _ARTICLE_DIFFUSION


@_preset("fashion-article-res-large", SMALL)
def _fashion_article_res_large():
    """``article-res-large`` for Fashion-MNIST on this CPU: ``fashion-article-res`` at
    base width 18: widths 36, 72, 144 (embeddings still 96). 3,558,767 parameters, 0.665
    GFLOP per image forward."""
    return _fashion_article_unet(_RES, model_channels=18), _ARTICLE_DIFFUSION
