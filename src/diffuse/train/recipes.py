"""Training recipes: the default :class:`TrainConfig` of each preset and task.

The small CPU presets have recipes tuned on this 2-core machine (``digits`` is the main
job of the README: a few minutes, samples recognised as their class >= 80 % of the time,
see ``benchmarks/digits_quality.py``).

The papers' presets train as their papers did. Where a paper leaves a setting open, its
released code decides (see the design's "Fidelity to the reference implementation").
Sources, cited by their tag at each value below:

[DDPM]       Ho, Jain & Abbeel 2020, appendix B (Adam at 2e-4, 2e-5 at 256x256; batch 128
             on CIFAR10, 64 at 256x256; EMA 0.9999; random flips on every data set but
             LSUN Bedroom; training steps per data set).
[DDPM code]  hojonathanho/diffusion: ``scripts/run_cifar.py`` (``total_bs=128``,
             ``lr=2e-4``) and ``run_celebahq.py`` (``total_bs=64``, ``lr=0.00002``), both
             with ``optimizer='adam'``, ``grad_clip=1.``, ``warmup=5000``, ``randflip=1``; and
             ``diffusion_tf/tpu_utils/tpu_utils.py`` (``ema_decay=0.9999`` with no
             ``num_updates``: no EMA warm-up).
[IDDPM]      openai/improved-diffusion README, "Models and Hyperparameters" (``--lr 1e-4
             --batch_size 128``; the checkpoints' names give their steps: 500K on CIFAR-10,
             1500K on ImageNet 64); its ``train_util.py`` (no gradient clipping, EMA 0.9999
             without warm-up, constant rate, no weight decay) and ``image_datasets.py``
             (no random flips).
[ADM]        Dhariwal & Nichol 2021, appendix hyperparameter tables (batch, learning rate and
             iterations per model; ImageNet 64x64: batch 2048, 3e-4, 540K; 128: 256, 1e-4,
             4360K; 256: 1980K; 512: 1940K; upsamplers 64->256: 500K, 128->512: 1050K).
[ARTICLE]    the DDPM/DDIM/classifier-free-guidance article of issue 14 and its code
             (gmongaras/Diffusion_models_from_scratch, ``src/train.py`` and
             ``src/model_trainer.py``, ``src/CustomDataset.py``): AdamW at 3e-4 with
             PyTorch's default weight decay 0.01 (and eps 1e-4, which TrainConfig does not
             set), batch 128, p_uncond 0.2, no clipping, no EMA, no flips.
[ADM code]   openai/guided-diffusion: ``scripts/image_train.py`` defaults (EMA 0.9999, no
             weight decay, no annealing), ``train_util.py`` / ``fp16_util.py`` (no gradient
             clipping), ``image_datasets.py`` (``random_flip=True`` by default, also for
             the upsamplers' data and, with random crops, the classifier's); README (the
             classifier command: 300K iterations, batch 256, AdamW 3e-4, weight decay 0.05,
             annealed).

AdamW with no weight decay is Adam, so every paper's optimizer is AdamW here with the
standard betas (0.9, 0.999). The papers' fp16 training is a hardware choice left to
``train.precision``.
"""

from __future__ import annotations

from dataclasses import replace

from diffuse import presets
from diffuse.train.train_config import TrainConfig

# What the three papers' diffusion trainings share: EMA 0.9999 with no warm-up [DDPM code,
# IDDPM, ADM code], no weight decay and a constant rate after any warm-up.
_PAPER = TrainConfig(ema_rates=(0.9999,), ema_warmup=False, weight_decay=0.0, lr_decay="none")

# DDPM: gradients clipped at norm 1 and 5000 warm-up steps [DDPM code]; flips [DDPM].
_DDPM = replace(_PAPER, grad_clip=1.0, warmup_steps=5000, random_flip=True)

# Improved DDPM: Adam 1e-4, batch 128, no clipping, no flips [IDDPM].
_IDDPM = replace(_PAPER, lr=1e-4, batch_size=128, grad_clip=0.0, random_flip=False)

# ADM: Adam 1e-4, batch 256 unless stated [ADM]; no clipping, random flips [ADM code].
_ADM = replace(_PAPER, lr=1e-4, batch_size=256, grad_clip=0.0, random_flip=True)

# The small CPU models: a high rate with warm-up and cosine decay, a faster EMA.
_SMALL = TrainConfig(
    batch_size=128,
    lr=2e-3,
    warmup_steps=50,
    lr_decay="cosine",
    min_lr_ratio=0.05,
    ema_rates=(0.999,),
    sample_steps=25,
    cfg_weight=1.0,
)

# The Fashion-MNIST family (fashion, fashion-14, fashion-upsampler-14-28).
_FASHION = replace(
    _SMALL,
    lr=1e-3,
    warmup_steps=200,
    ema_rates=(0.9995,),
    log_every=100,
    checkpoint_every=1000,
    sample_every=1000,
)

# The article's five models (article-<variant>) and their CPU versions (fashion-article-...).
_ARTICLE_VARIANTS = ("res-conv", "res", "res-res", "res-res-atn", "res-large")

# The article's models: AdamW 3e-4 (weight decay 0.01), batch 128, p_uncond 0.2, no
# clipping, no flips [ARTICLE]. It keeps no EMA; here the papers' EMA 0.9999 is kept, since
# sampling and evaluation read the EMA weights (the raw weights stay in every checkpoint).
# It gives no step count; 500K as for any other network.
_ARTICLE = replace(
    _PAPER,
    steps=500_000,
    lr=3e-4,
    weight_decay=0.01,
    batch_size=128,
    p_uncond=0.2,
    grad_clip=0.0,
    random_flip=False,
)

# Their CPU-sized versions: the Fashion-MNIST recipe at batch 32 for 2000 steps, EMA 0.999
# for the short run, p_uncond 0.2. One training step of 32 costs 0.60 (res), 0.80
# (res-res-atn), 0.85 (res-conv), 0.87 (res-res) and 0.93 (res-large) CPU-seconds in one
# thread, fashion's 1.90; scaled by fashion's measured 26 images/s on two cores, each run
# takes about 13 (res) to 20 (res-large) minutes there.
_FASHION_ARTICLE = replace(_FASHION, steps=2000, batch_size=32, ema_rates=(0.999,), p_uncond=0.2)

_DIFFUSION: dict[str, TrainConfig] = {
    "digits": replace(_SMALL, steps=400, log_every=25, checkpoint_every=200),
    "fashion": replace(
        _FASHION, steps=20_000, warmup_steps=500, checkpoint_every=2000, sample_every=2000
    ),
    "fashion-14": replace(_FASHION, steps=10_000),
    "fashion-upsampler-14-28": replace(_FASHION, steps=5000),
    "tiny": replace(
        _SMALL,
        steps=200,
        batch_size=32,
        warmup_steps=10,
        ema_rates=(0.99,),
        log_every=10,
        checkpoint_every=100,
        sample_columns=4,
    ),
    **{f"article-{variant}": _ARTICLE for variant in _ARTICLE_VARIANTS},
    **{f"fashion-article-{variant}": _FASHION_ARTICLE for variant in _ARTICLE_VARIANTS},
    # CIFAR10: 800K steps at batch 128, lr 2e-4 [DDPM].
    "ddpm-cifar10": replace(_DDPM, steps=800_000, batch_size=128, lr=2e-4),
    # CelebA-HQ's settings, 0.5M steps at batch 64, lr 2e-5 [DDPM] (LSUN Church and Cat
    # train longer; LSUN Bedroom, 2.4M steps, without flips).
    "ddpm-256": replace(_DDPM, steps=500_000, batch_size=64, lr=2e-5),
    "iddpm-cifar10": replace(_IDDPM, steps=500_000),
    "iddpm-imagenet64": replace(_IDDPM, steps=1_500_000),
    "adm-imagenet64": replace(_ADM, steps=540_000, batch_size=2048, lr=3e-4),
    "adm-imagenet128": replace(_ADM, steps=4_360_000),
    "adm-imagenet256": replace(_ADM, steps=1_980_000),
    "adm-imagenet256-uncond": replace(_ADM, steps=1_980_000),
    "adm-imagenet512": replace(_ADM, steps=1_940_000),
    # The LSUN models' iterations differ per class [ADM]; 500K, the longest.
    "adm-lsun-256": replace(_ADM, steps=500_000),
    "adm-upsampler-64-256": replace(_ADM, steps=500_000),
    "adm-upsampler-128-512": replace(_ADM, steps=1_050_000),
}

# Any other network trained as a diffusion model: guided-diffusion's defaults [ADM code].
_DEFAULT = replace(_ADM, steps=500_000)

# ADM's noisy classifier [ADM code]: AdamW 3e-4, weight decay 0.05, linearly annealed to 0,
# batch 256, 300K iterations, no EMA, no clipping, random flips (the random crops of its
# data loader are not reproduced).
_CLASSIFIER = TrainConfig(
    steps=300_000,
    batch_size=256,
    lr=3e-4,
    weight_decay=0.05,
    lr_decay="linear",
    grad_clip=0.0,
    random_flip=True,
    ema_rates=(),
)

# The CPU presets' classifiers keep clipping at 1 and train on unflipped images.
_CPU_CLASSIFIER = replace(_CLASSIFIER, grad_clip=1.0, random_flip=False)

_SMALL_CLASSIFIER: dict[str, TrainConfig] = {
    "digits": replace(_CPU_CLASSIFIER, steps=1000, batch_size=128, lr=1e-3, checkpoint_every=500),
    "fashion": replace(_CPU_CLASSIFIER, steps=5000, batch_size=128, lr=1e-3, checkpoint_every=1000),
    "tiny": replace(_CPU_CLASSIFIER, steps=200, batch_size=32, lr=2e-3, checkpoint_every=100),
}


def recipe(preset: str, task: str = "diffusion") -> TrainConfig:
    """The default training settings of ``preset`` for ``task`` ("diffusion" or "classifier")."""
    if task == "classifier":
        cpu_sized = preset in presets.names() and presets.get(preset).source == presets.SMALL
        return _SMALL_CLASSIFIER.get(preset, _CPU_CLASSIFIER if cpu_sized else _CLASSIFIER)
    return _DIFFUSION.get(preset, _DEFAULT)
