"""Classifier-free guidance as a model wrapper: the paper's combination in one batched pass,
the guidance interval, and w = 0 as conditional sampling."""

import numpy as np
import pytest
import torch

from diffuse.diffusion import GaussianDiffusion, beta_schedule, ddim_sample, ddpm_sample
from diffuse.diffusion.guidance import (
    ClassifierFreeGuidance,
    guidance_interval,
    guidance_scale_to_weight,
)
from diffuse.errors import ConfigError
from diffuse.testing.mixture import GaussianMixtureOracle


class Recorder(torch.nn.Module):
    """eps(x, y) = x + y, plus a constant variance channel; records every call."""

    def __init__(self, learned_variance=False):
        super().__init__()
        self.calls = []
        self.learned_variance = learned_variance

    def forward(self, x, t, y, low_res=None):
        self.calls.append((x.shape[0], y.tolist(), None if low_res is None else low_res.shape[0]))
        out = x + y.reshape(-1, 1, 1, 1).float()
        return torch.cat([out, out * 0 + 7], 1) if self.learned_variance else out


def test_weight_zero_is_the_conditional_model():
    model = Recorder()
    x, t, y = torch.zeros(3, 1, 2, 2), torch.zeros(3, dtype=torch.long), torch.tensor([0, 1, 2])
    out = ClassifierFreeGuidance(model, 0.0, null_class=10, channels=1)(x, t, y=y)
    torch.testing.assert_close(out, model(x, t, y=y))
    assert model.calls[0] == (3, [0, 1, 2], None)


def test_guided_output_is_the_paper_combination_in_one_batched_pass():
    model = Recorder(learned_variance=True)
    x = torch.randn(2, 1, 2, 2)
    t = torch.tensor([5, 5])
    y = torch.tensor([3, 4])
    low_res = torch.zeros(2, 1, 1, 1)
    out = ClassifierFreeGuidance(model, 2.0, null_class=10, channels=1)(x, t, y=y, low_res=low_res)
    assert model.calls == [(4, [3, 4, 10, 10], 4)]  # one pass, twice the batch
    cond, uncond = x + y.reshape(-1, 1, 1, 1), x + 10
    torch.testing.assert_close(out[:, :1], 3.0 * cond - 2.0 * uncond)
    torch.testing.assert_close(out[:, 1:], torch.full_like(x, 7.0))


def test_scale_conversion():
    assert guidance_scale_to_weight(7.5) == 6.5


def test_guidance_interval_is_the_timesteps_whose_noise_level_lies_inside():
    betas = beta_schedule("linear", 1000)
    sigma = np.sqrt(1.0 / np.cumprod(1.0 - betas) - 1.0)  # EDM's sigma of each step
    low, high = guidance_interval(GaussianDiffusion(betas), 0.28, 5.42)
    assert sigma[low - 1] <= 0.28 < sigma[low] and sigma[high] <= 5.42 < sigma[high + 1]
    # A respaced chain answers in original indices too, at its kept steps.
    respaced = GaussianDiffusion(betas).respace(range(0, 1000, 10))
    low_r, high_r = guidance_interval(respaced, 0.28, 5.42)
    assert low_r % 10 == 0 and low <= low_r < low + 10 and high - 10 < high_r <= high


def test_an_interval_without_steps_or_reversed_is_refused():
    process = GaussianDiffusion(beta_schedule("linear", 1000))
    with pytest.raises(ConfigError, match="no timestep"):
        guidance_interval(process, 500.0, 600.0)
    with pytest.raises(ConfigError, match="sigma_low < sigma_high"):
        guidance_interval(process, 2.0, 1.0)
    with pytest.raises(ConfigError, match="t_low <= t_high"):
        ClassifierFreeGuidance(Recorder(), 1.0, 10, 1, interval=(5, 2))


def test_outside_the_interval_only_the_conditional_branch_runs():
    model = Recorder(learned_variance=True)
    cfg = ClassifierFreeGuidance(model, 2.0, null_class=10, channels=1, interval=(100, 200))
    x = torch.randn(3, 1, 2, 2)
    y = torch.tensor([1, 2, 3])
    cond = x + y.reshape(-1, 1, 1, 1)

    out = cfg(x, torch.tensor([50, 50, 50]), y=y)
    assert model.calls == [(3, [1, 2, 3], None)]  # unguided: one pass of the batch
    torch.testing.assert_close(out[:, :1], cond)

    model.calls.clear()
    t = torch.tensor([150, 250, 100])  # rows 0 and 2 inside
    out = cfg(x, t, y=y)
    assert model.calls == [(5, [1, 2, 3, 10, 10], None)]  # only the guided rows doubled
    expected = torch.where(
        torch.tensor([True, False, True]).reshape(-1, 1, 1, 1), 3 * cond - 2 * (x + 10), cond
    )
    torch.testing.assert_close(out[:, :1], expected)
    torch.testing.assert_close(out[:, 1:], torch.full_like(x, 7.0))


def test_weight_zero_samples_the_conditional_model_exactly():
    full = GaussianDiffusion(beta_schedule("cosine", 1000))
    mixture = GaussianMixtureOracle(full, torch.tensor([-0.5, 0.5]), 0.3)
    process = full.respace(range(0, 1000, 50))
    x_T = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    y = torch.arange(64) % 2
    runs = [
        ddpm_sample(
            model, process, x_T, model_kwargs={"y": y}, generator=torch.Generator().manual_seed(1)
        )
        for model in (mixture, ClassifierFreeGuidance(mixture, 0.0, mixture.null_class, 1))
    ]
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)


def test_interval_guidance_costs_one_extra_pass_per_guided_step():
    full = GaussianDiffusion(beta_schedule("linear", 1000))
    process = full.respace(range(0, 1000, 100))
    interval = guidance_interval(full, 0.28, 5.42)
    model = Recorder()
    cfg = ClassifierFreeGuidance(model, 1.5, null_class=10, channels=1, interval=interval)
    ddim_sample(cfg, process, torch.zeros(2, 1, 2, 2), model_kwargs={"y": torch.tensor([0, 1])})
    inside = sum(interval[0] <= t <= interval[1] for t in process.timestep_map)
    assert 0 < inside < 10
    assert [batch for batch, _, _ in model.calls] == [
        4 if interval[0] <= t <= interval[1] else 2 for t in process.timestep_map[::-1]
    ]


def test_null_class_and_channels_are_read_from_the_model():
    # A loaded checkpoint's network knows its null class and image channels, so the
    # wrapper needs neither typed by hand; the result is that of the explicit values.
    model = Recorder(learned_variance=True)
    model.null_class, model.in_channels = 10, 1
    x, t, y = torch.randn(2, 1, 2, 2), torch.zeros(2, dtype=torch.long), torch.tensor([3, 4])
    inferred = ClassifierFreeGuidance(model, 2.0)
    assert (inferred.null_class, inferred.channels) == (10, 1)
    explicit = ClassifierFreeGuidance(model, 2.0, null_class=10, channels=1)
    torch.testing.assert_close(inferred(x, t, y=y), explicit(x, t, y=y))
    assert ClassifierFreeGuidance(model, 2.0, null_class=5).null_class == 5  # given wins


def test_a_model_without_null_class_is_refused_with_the_fix():
    model = Recorder()
    model.null_class, model.in_channels = None, 1  # conditional, trained without dropout
    with pytest.raises(ConfigError, match=r"no null class .*pass null_class=\.\.\."):
        ClassifierFreeGuidance(model, 1.0)
    with pytest.raises(ConfigError, match=r"no attribute 'in_channels'; pass channels="):
        ClassifierFreeGuidance(Recorder(), 1.0, null_class=10)
