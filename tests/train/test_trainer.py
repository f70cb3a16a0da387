"""Unit tests of the trainer's parts: schedule, EMA, data order, random streams, objectives,
settings and overrides. Each formula is checked against an independent computation."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffuse.diffusion.diffusion_config import DiffusionConfig
from diffuse.diffusion.timesteps import LossAwareSampler, TimestepSampler
from diffuse.errors import ConfigError
from diffuse.nn import ClassifierConfig, UNetConfig
from diffuse.train import EMA, TrainConfig, classifier_for, parse_override, spec_from_preset
from diffuse.train.objectives import (
    ClassifierObjective,
    DiffusionObjective,
    Draws,
    downsample,
    objective_for,
)
from diffuse.train.optim import build_optimizer, learning_rate
from diffuse.train.randomness import (
    BatchOrder,
    derive_seed,
    generator,
    seeded_global_rng,
    shard,
)
from diffuse.train.spec import parse_value

# ------------------------------------------------------------------ learning rate


def test_warmup_is_linear_then_constant():
    config = TrainConfig(steps=100, lr=1e-3, warmup_steps=10)
    rates = [learning_rate(config, s) for s in range(100)]
    assert rates[:10] == pytest.approx([1e-3 * (s + 1) / 10 for s in range(10)])
    assert rates[10:] == pytest.approx([1e-3] * 90)


@pytest.mark.parametrize("decay", ["linear", "cosine"])
def test_decay_reaches_the_floor_at_the_last_step(decay):
    config = TrainConfig(steps=101, lr=1.0, warmup_steps=0, lr_decay=decay, min_lr_ratio=0.1)
    assert learning_rate(config, 0) == pytest.approx(1.0)
    assert learning_rate(config, 100) == pytest.approx(0.1)
    # halfway: linear 1 - 0.5, cosine (1 + cos(pi/2)) / 2 = 0.5 as well; at a quarter they differ
    quarter = {"linear": 0.75, "cosine": 0.5 * (1 + math.cos(math.pi / 4))}[decay]
    assert learning_rate(config, 25) == pytest.approx(0.1 + 0.9 * quarter)


# -------------------------------------------------------------------------- EMA


def test_ema_follows_the_closed_form_with_warmup():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, rates=(0.9, 0.5), warmup=True)
    expected = {0.9: 0.0, 0.5: 0.0}
    for n, value in enumerate([1.0, 2.0, -1.0, 4.0, 3.0]):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(n)
        for rate in expected:
            d = min(rate, (1 + n) / (10 + n))
            expected[rate] = d * expected[rate] + (1 - d) * value
    for rate, value in expected.items():
        assert ema.state(rate)["weight"].item() == pytest.approx(value, rel=1e-6)


def test_ema_warmup_decays_as_its_docstring_says_at_the_first_updates():
    """diffuse.train.ema: the update after n earlier ones uses min(rate, (1 + n) / (10 + n));
    the first update (n = 0) uses 1/10, the second 2/11, the third 3/12."""
    model = nn.Linear(1, 1, bias=False)
    ema = EMA(model, rates=(0.9999, 0.15), warmup=True)
    assert [ema.decay(0.9999, n) for n in (0, 1, 2)] == pytest.approx([1 / 10, 2 / 11, 3 / 12])
    assert [ema.decay(0.15, n) for n in (0, 1, 2)] == pytest.approx([0.1, 0.15, 0.15])
    # and the updates apply them in that order: ema <- d ema + (1 - d) theta
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, rates=(0.9999,), warmup=True)
    average = 0.0
    for n, (value, d) in enumerate(zip([4.0, -2.0, 8.0], [1 / 10, 2 / 11, 3 / 12], strict=True)):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(n)
        average = d * average + (1 - d) * value
        # float32 averages against float64 arithmetic
        assert ema.state(0.9999)["weight"].item() == pytest.approx(average, rel=1e-6)


def test_ema_without_warmup_uses_the_rate():
    ema = EMA(nn.Linear(1, 1), rates=(0.9999,), warmup=False)
    assert ema.decay(0.9999, 0) == 0.9999
    assert EMA(nn.Linear(1, 1), rates=(0.9999,)).decay(0.9999, 0) == pytest.approx(0.1)


def test_ema_load_restores_the_averages():
    model = nn.Linear(3, 2)
    ema = EMA(model, rates=(0.99,))
    saved = {0.99: {k: torch.randn_like(v) for k, v in ema.state(0.99).items()}}
    ema.load(saved)
    for key, value in saved[0.99].items():
        assert torch.equal(ema.state(0.99)[key], value)
    with pytest.raises(KeyError, match=r"0\.99"):
        ema.load({0.5: saved[0.99]})


# ------------------------------------------------------------- data order, seeds


def test_every_epoch_is_a_permutation_and_steps_are_pure_functions():
    order = BatchOrder(size=10, batch_size=4, seed=3)
    stream = torch.cat([order.indices(s) for s in range(5)])  # 20 positions = 2 epochs
    assert sorted(stream[:10].tolist()) == list(range(10))
    assert sorted(stream[10:].tolist()) == list(range(10))
    assert not torch.equal(stream[:10], stream[10:])  # a fresh order each epoch
    fresh = BatchOrder(size=10, batch_size=4, seed=3)
    assert torch.equal(fresh.indices(3), order.indices(3))  # no hidden state
    assert not torch.equal(BatchOrder(10, 4, seed=4).indices(0), order.indices(0))


def test_shards_partition_the_global_batch():
    rows = [shard(12, rank, 3) for rank in range(3)]
    covered = [i for r in rows for i in range(12)[r]]
    assert covered == list(range(12))


def test_random_streams_are_reproducible_and_distinct():
    # Pinned: a change here would give every run resumed from an older checkpoint other
    # batches, noise and timesteps than it started with.
    assert derive_seed(1, 2, 3) == 8208089874740249663
    assert len({derive_seed(0, 1, s) for s in range(100)}) == 100
    a = torch.rand(5, generator=generator(7, 1, 2))
    assert torch.equal(a, torch.rand(5, generator=generator(7, 1, 2)))


def test_seeded_global_rng_leaves_the_callers_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with seeded_global_rng(42, torch.device("cpu")):
        first = torch.rand(3)
    assert torch.equal(torch.rand(3), expected)
    with seeded_global_rng(42, torch.device("cpu")):
        assert torch.equal(torch.rand(3), first)


# -------------------------------------------------------------------- objectives


class EchoNet(nn.Module):
    """Returns zeros; records what it was called with."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, t, **kwargs):
        self.calls.append((x, t, kwargs))
        return torch.zeros_like(x)


def _draws(n, shape=(1, 4, 4), weights=None, drop=None):
    return Draws(
        t=torch.arange(n) * 7,
        weights=torch.ones(n) if weights is None else weights,
        noise=torch.randn(n, *shape, generator=torch.Generator().manual_seed(0)),
        drop=torch.zeros(n, dtype=torch.bool) if drop is None else drop,
    )


def test_label_dropout_uses_the_null_class_at_rate_p_uncond():
    process = DiffusionConfig(timesteps=100).build()
    objective = DiffusionObjective(
        process, TimestepSampler(100), p_uncond=0.25, null_class=10, conditional=True
    )
    draws = objective.draw(
        4000, (1, 2, 2), torch.Generator().manual_seed(0), torch.Generator(), "cpu"
    )
    assert draws.drop.float().mean().item() == pytest.approx(0.25, abs=0.02)
    net = EchoNet()
    y = torch.arange(6) % 3
    drop = torch.tensor([True, False, True, False, False, True])
    objective.losses(net, torch.zeros(6, 1, 4, 4), y, _draws(6, drop=drop))
    assert net.calls[0][2]["y"].tolist() == [10, 1, 10, 0, 1, 10]


def test_importance_weights_multiply_the_loss():
    process = DiffusionConfig(timesteps=100, loss="mse").build()
    objective = DiffusionObjective(process, TimestepSampler(100))
    weights = torch.tensor([0.5, 2.0, 3.0])
    draws = _draws(3, weights=weights)
    x = torch.rand(3, 1, 4, 4) * 2 - 1
    loss, stats = objective.losses(EchoNet(), x, torch.zeros(3, dtype=torch.long), draws)
    # the network predicts eps = 0, so the per-example mse is the mean of noise^2
    mse = draws.noise.pow(2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(stats["mse"], mse)
    torch.testing.assert_close(loss, weights * mse)
    assert "loss_weighted" not in stats  # uniform timesteps: it would repeat the loss
    objective = DiffusionObjective(process, LossAwareSampler(100))
    loss, stats = objective.losses(EchoNet(), x, torch.zeros(3, dtype=torch.long), draws)
    # importance-sampled timesteps: the weighted loss, the unbiased L estimate, is logged too
    torch.testing.assert_close(stats["loss_weighted"], weights * mse)
    torch.testing.assert_close(stats["loss"], mse)


def test_upsampler_gets_the_area_downsampled_image():
    process = DiffusionConfig(timesteps=100).build()
    objective = DiffusionObjective(process, TimestepSampler(100), low_res_size=2)
    net = EchoNet()
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    objective.losses(net, x, torch.zeros(1, dtype=torch.long), _draws(1))
    low_res = net.calls[0][2]["low_res"]
    blocks = x.reshape(1, 1, 2, 2, 2, 2).mean(dim=(3, 5))  # mean of each 2x2 block
    torch.testing.assert_close(low_res, blocks)
    torch.testing.assert_close(downsample(x, 2), blocks)


def test_classifier_objective_is_cross_entropy_on_x_t():
    process = DiffusionConfig(timesteps=50).build()
    objective = ClassifierObjective(process, TimestepSampler(50))
    seen = {}

    def classifier(x_t, t):
        seen["x_t"], seen["t"] = x_t, t
        return torch.stack([x_t.mean(dim=(1, 2, 3)), -x_t.mean(dim=(1, 2, 3))], dim=1)

    x = torch.rand(4, 1, 4, 4)
    y = torch.tensor([0, 1, 0, 1])
    draws = _draws(4)
    loss, stats = objective.losses(classifier, x, y, draws)
    torch.testing.assert_close(seen["x_t"], process.q_sample(x, draws.t, draws.noise))
    logits = classifier(seen["x_t"], seen["t"])
    torch.testing.assert_close(loss, F.cross_entropy(logits, y, reduction="none"))
    torch.testing.assert_close(stats["accuracy"], (logits.argmax(1) == y).float())


@pytest.mark.parametrize(
    ("task", "loss", "sampler"),
    [
        ("diffusion", "kl", LossAwareSampler),
        ("diffusion", "hybrid", TimestepSampler),
        ("diffusion", "mse", TimestepSampler),
        ("classifier", "kl", TimestepSampler),
    ],
)
def test_importance_sampling_is_used_for_the_kl_loss(task, loss, sampler):
    overrides = {"diffusion.loss": loss}
    if loss == "hybrid":
        overrides |= {"diffusion.variance": "learned_range", "model.out_channels": 2}
    spec = spec_from_preset("tiny", "digits", task=task, overrides=overrides)
    objective = objective_for(spec, spec.diffusion.build())
    assert type(objective.sampler) is sampler
    objective.observe(torch.tensor([3, 3]), {"loss": torch.tensor([1.0, 2.0])})
    if sampler is LossAwareSampler:
        assert objective.sampler.counts[3] == 2  # every step's losses reach the sampler


# ------------------------------------------------------------ settings, overrides


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train.lr=2e-4", ("train.lr", 2e-4)),
        ("model.channel_mult=1,2,2", ("model.channel_mult", [1, 2, 2])),
        ("model.channel_mult=[1, 2]", ("model.channel_mult", [1, 2])),
        ("diffusion.schedule=linear", ("diffusion.schedule", "linear")),
        ("train.p_uncond=null", ("train.p_uncond", None)),
        ("train.random_flip=true", ("train.random_flip", True)),
    ],
)
def test_overrides_parse(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lr=1", "section"),
        ("optim.lr=1", "section"),
        ("train.lr", "<section>.<field>=<value>"),
    ],
)
def test_bad_override_syntax_is_refused(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_override(text)


def test_overrides_change_the_spec_and_unknown_fields_are_named():
    spec = spec_from_preset(
        "tiny", "digits", overrides={"model.model_channels": 32, "train.lr": 0.5}
    )
    assert spec.model.model_channels == 32 and spec.train.lr == 0.5
    with pytest.raises(ConfigError, match="learning_rate"):
        spec.with_overrides({"train.learning_rate": 1.0})
    with pytest.raises(ConfigError, match="widht"):
        spec.with_overrides({"model.widht": 1})
    with pytest.raises(ConfigError, match="schedule"):
        spec.with_overrides({"diffusion.schedule": "quadratic"})
    with pytest.raises(ConfigError, match="preset"):
        spec_from_preset("no-such-preset", "digits")


def test_one_value_of_a_list_setting_is_a_list_of_one_and_none_an_empty_list():
    spec = spec_from_preset("tiny", "digits")
    one = spec.with_overrides(dict([parse_override("train.ema_rates=0.99")]))
    assert one.train.ema_rates == (0.99,)
    for text in ("model.attention_resolutions=", "model.attention_resolutions=[]"):
        none = spec.with_overrides(dict([parse_override(text)]))
        assert none.model.attention_resolutions == ()
    # a resolution the network does not have is named as such, not as a type error
    with pytest.raises(ConfigError, match=r"attention_resolutions \[3\] do not occur"):
        spec.with_overrides(dict([parse_override("model.attention_resolutions=3")]))


def test_learned_variance_needs_twice_the_channels():
    with pytest.raises(ConfigError, match=r"model\.out_channels=2"):
        spec_from_preset("tiny", "digits", overrides={"diffusion.variance": "learned_range"})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"lr": 0.0}, "train.lr"),
        ({"batch_size": 0}, "train.batch_size"),
        ({"ema_rates": (1.0,)}, "ema_rates"),
        ({"precision": "fp8"}, "precision"),
        ({"p_uncond": 1.0}, "p_uncond"),
        ({"grad_clip": float("nan")}, "grad_clip"),
    ],
)
def test_train_config_names_bad_values(settings, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**settings)


def test_p_uncond_defaults_to_a_tenth_with_a_null_class_only():
    assert spec_from_preset("tiny", "digits").p_uncond == 0.1
    unconditional = spec_from_preset(
        "tiny", "digits", overrides={"model.num_classes": None, "model.null_class": False}
    )
    assert unconditional.p_uncond == 0.0
    with pytest.raises(ConfigError, match="null class"):
        _ = unconditional.with_overrides({"train.p_uncond": 0.2}).p_uncond


def test_classifier_matches_the_diffusion_network():
    unet = UNetConfig(
        image_size=8,
        in_channels=1,
        out_channels=1,
        model_channels=16,
        norm_groups=8,
        channel_mult=(1, 2),
        attention_resolutions=(),
        num_classes=10,
    )
    classifier = classifier_for(unet)
    assert isinstance(classifier, ClassifierConfig)
    assert classifier.out_channels == 10 and classifier.model_channels == 16
    spec = spec_from_preset("tiny", "digits", task="classifier")
    assert spec.model.kind == "classifier" and spec.model.out_channels == 10
    with pytest.raises(ConfigError, match="out_channels"):
        classifier_for(replace(unet, num_classes=None))


def test_parse_value_keeps_plain_strings():
    assert parse_value("cosine") == "cosine"
    assert parse_value("0.5") == 0.5
    assert np.allclose(parse_value("0.9999,0.999"), [0.9999, 0.999])


def test_the_optimizer_is_fused_adamw_where_torch_has_it_and_steps_like_the_loop():
    model = torch.nn.Linear(4, 3)
    config = TrainConfig(lr=1e-3, weight_decay=0.01)
    fused = build_optimizer(model, config)
    assert fused.defaults["fused"]  # torch 2.13's CPU kernel
    reference = torch.nn.Linear(4, 3)
    reference.load_state_dict(model.state_dict())
    loop = torch.optim.AdamW(
        reference.parameters(), lr=1e-3, betas=config.adam_betas, weight_decay=0.01
    )
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    for net, optimizer in ((model, fused), (reference, loop)):
        for _ in range(3):
            optimizer.zero_grad()
            net(x).square().mean().backward()
            optimizer.step()
    # The same update rule; the fused kernel rounds in another order (a few float32 ulps).
    torch.testing.assert_close(model.weight, reference.weight, rtol=1e-5, atol=1e-6)
