"""Samplers against exact answers: the optimal denoiser of Gaussian data.

With x0 ~ N(mu, s^2) per pixel the optimal eps prediction is linear in x_t, so every
sampler is a linear-Gaussian recursion x_{t-1} = A x_t + B + C z. The exact mean and
variance of its output are propagated here step by step with numpy, from the papers'
formulas written out independently of the library (DDPM eq. 11, DDIM eq. 12), and the
library's samples must match them within 4 standard errors, with enough samples that a
1 % error in the standard deviation would be caught.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffuse.diffusion import (
    GaussianDiffusion,
    beta_schedule,
    ddim_sample,
    ddpm_sample,
    space_timesteps,
)
from diffuse.testing.oracle import GaussianOracle

MU, STD = 0.8, 0.5
# 100,000 independent samples: 4 standard errors of the std are 0.9 % of it, so a 1 %
# error is caught. float32, as networks run; few rows keep per-example overhead low.
SHAPE = (100, 1, 10, 100)
PREDICTIONS = ["eps", "x0", "mean", "v"]


def exact_moments(abar: np.ndarray, mu: float, s: float, *, eta: float | None, sigma2: str):
    """Mean and variance of a sampler's output when started from N(0, 1).

    ``abar`` are the cumulative alphas of the chain walked (full or respaced). ``eta`` is
    None for DDPM ancestral sampling (DDPM eq. 11 with variance ``sigma2``), or the DDIM
    eta (DDIM eqs. 12 and 16).
    """
    m, v = 0.0, 1.0
    abar_prev = np.append(1.0, abar[:-1])
    for i in range(len(abar) - 1, -1, -1):
        a, b = np.sqrt(abar[i]), np.sqrt(1 - abar[i])
        # eps_hat(x) = k x + c
        k = b / (a**2 * s**2 + b**2)
        c = -k * a * mu
        if eta is None:
            alpha = abar[i] / abar_prev[i]
            beta = 1 - alpha
            scale = beta / b
            A = (1 - scale * k) / np.sqrt(alpha)
            B = -scale * c / np.sqrt(alpha)
            if i == 0:
                var = 0.0
            elif sigma2 == "fixed_small":
                var = beta * (1 - abar_prev[i]) / (1 - abar[i])
            else:
                var = beta
        else:
            var = eta**2 * (1 - abar_prev[i]) / (1 - abar[i]) * (1 - abar[i] / abar_prev[i])
            # x0_hat = (x - b eps_hat) / a
            direction = np.sqrt(max(1 - abar_prev[i] - var, 0.0))
            A = np.sqrt(abar_prev[i]) * (1 - b * k) / a + direction * k
            B = np.sqrt(abar_prev[i]) * (-b * c) / a + direction * c
        m, v = A * m + B, A**2 * v + var
    return m, v


def run_and_compare(process, oracle_process, sampler, *, eta=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x_T = torch.randn(SHAPE, generator=generator, dtype=torch.float32)
    oracle = GaussianOracle(oracle_process, MU, STD)
    if sampler == "ddpm":
        out = ddpm_sample(oracle, process, x_T, clip_denoised=False, generator=generator)
    else:
        out = ddim_sample(oracle, process, x_T, eta=eta, clip_denoised=False, generator=generator)
    m, v = exact_moments(process.alphas_cumprod, MU, STD, eta=eta, sigma2=process.variance)
    n = out.numel()
    std_exact = np.sqrt(v)
    mean_err = (out.mean().item() - m) / (std_exact / np.sqrt(n))
    std_err = (out.std().item() - std_exact) / (std_exact / np.sqrt(2 * n))
    assert abs(mean_err) < 4, f"mean {out.mean().item():.5f} vs exact {m:.5f}"
    assert abs(std_err) < 4, f"std {out.std().item():.5f} vs exact {std_exact:.5f}"
    return out, m, std_exact


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_ddpm_ancestral_matches_exact_recursion_and_data(schedule, prediction):
    process = GaussianDiffusion(beta_schedule(schedule, 1000), prediction=prediction)
    out, m, s = run_and_compare(process, process, "ddpm")
    # DDPM at T = 1000 recovers the data distribution itself within 1 %.
    assert abs(m - MU) < 0.01 * MU and abs(s - STD) < 0.01 * STD
    assert abs(out.mean().item() - MU) < 0.01 * MU
    assert abs(out.std().item() - STD) < 0.01 * STD


@pytest.mark.parametrize(("std", "variance"), [(1.0, "fixed_large"), (1.5, "fixed_small")])
def test_ddpm_lands_on_data_for_several_spreads(std, variance):
    """s = 0.5 is covered above for every prediction type and schedule."""
    process = GaussianDiffusion(beta_schedule("linear", 1000), variance=variance)
    generator = torch.Generator().manual_seed(1)
    x_T = torch.randn(SHAPE, generator=generator, dtype=torch.float32)
    out = ddpm_sample(
        GaussianOracle(process, MU, std), process, x_T, clip_denoised=False, generator=generator
    )
    assert abs(out.mean().item() - MU) < 0.01 * max(MU, std)
    assert abs(out.std().item() - std) < 0.01 * std


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("steps", [10, 50, 1000])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_matches_exact_recursion(schedule, prediction, steps, eta):
    full = GaussianDiffusion(beta_schedule(schedule, 1000), prediction=prediction)
    process = full.respace(space_timesteps(1000, f"ddim{steps}"))
    _, _, s = run_and_compare(process, full, "ddim", eta=eta, seed=steps)
    if steps == 1000:
        assert abs(s - STD) < 0.02 * STD


def test_ddim_with_few_steps_is_not_the_data_distribution():
    """Guard on the test itself: the exact recursion differs measurably from (mu, s)."""
    full = GaussianDiffusion(beta_schedule("linear", 1000))
    process = full.respace(space_timesteps(1000, "ddim10"))
    _, v = exact_moments(process.alphas_cumprod, MU, STD, eta=0.0, sigma2="fixed_small")
    assert abs(np.sqrt(v) - STD) > 0.02 * STD


def test_samples_are_ordinary_tensors_usable_by_autograd():
    """Unguided loops run under inference_mode; what they return must not be an
    inference tensor (it could not enter autograd later)."""
    full = GaussianDiffusion(beta_schedule("linear", 1000))
    process = full.respace(space_timesteps(1000, "ddim5"))
    x_T = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    out = ddim_sample(GaussianOracle(full, MU, STD), process, x_T)
    assert not out.is_inference()
    weight = torch.ones((), requires_grad=True)
    (weight * out).sum().backward()
    assert weight.grad == out.sum()
