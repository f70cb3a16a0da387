"""Training recipes: the default :class:`TrainConfig` of each preset and task.

The small CPU presets have recipes tuned on this 2-core machine (``digits`` is the main
job of the README: a few minutes, samples recognised as their class >= 80 % of the time,
see ``benchmarks/digits_quality.py``). The papers' presets train with their papers'
settings: Adam(W) at 1e-4 (DDPM: 2e-4 at 32x32, with 5000 warm-up steps), batch 128,
gradient clipping at 1, EMA 0.9999. The noisy classifier follows ADM's released
training command (AdamW, lr 3e-4, weight decay 0.05, linearly annealed, no EMA).
"""

from __future__ import annotations

from dataclasses import replace

from diffuse.train.config import TrainConfig

_PAPERS = TrainConfig(steps=500_000, batch_size=128, lr=1e-4, grad_clip=1.0)

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
    "ddpm-cifar10": replace(_PAPERS, steps=800_000, lr=2e-4, warmup_steps=5000, random_flip=True),
}

_CLASSIFIER = TrainConfig(
    steps=300_000,
    batch_size=256,
    lr=3e-4,
    weight_decay=0.05,
    lr_decay="linear",
    ema_rates=(),
)

_SMALL_CLASSIFIER: dict[str, TrainConfig] = {
    "digits": replace(_CLASSIFIER, steps=1000, batch_size=128, lr=1e-3, checkpoint_every=500),
    "fashion": replace(_CLASSIFIER, steps=5000, batch_size=128, lr=1e-3, checkpoint_every=1000),
    "tiny": replace(_CLASSIFIER, steps=200, batch_size=32, lr=2e-3, checkpoint_every=100),
}


def recipe(preset: str, task: str = "diffusion") -> TrainConfig:
    """The default training settings of ``preset`` for ``task`` ("diffusion" or "classifier")."""
    if task == "classifier":
        return _SMALL_CLASSIFIER.get(preset, _CLASSIFIER)
    return _DIFFUSION.get(preset, _PAPERS)
