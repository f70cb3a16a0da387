"""DPM-Solver++(2M) against an independent implementation and against the data it should
reach.

For Gaussian data x0 ~ N(mu, s^2) the optimal denoiser is linear, so a deterministic
sampler maps x_T to a*x_T + c elementwise: sampling x_T = 0 and 1 gives the exact mean (c)
and spread (|a|) of what it would produce from N(0, 1), free of Monte-Carlo noise. The
probability-flow ODE itself lands exactly on N(mu, s^2); the sampler's distance from it
at few steps is its discretization error.
"""

from __future__ import annotations

import inspect

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
from diffuse.diffusion.solvers import dpm_solver_2m_sample
from diffuse.testing.oracle import GaussianOracle

MU, STD = 0.8, 0.5


def reference_dpm_solver_2m(x: np.ndarray, abar: np.ndarray) -> np.ndarray:
    """Lu et al. 2022, Algorithm 2, written out for the Gaussian's optimal x0(x_t)."""
    previous_x0 = previous_h = None
    for i in range(len(abar) - 1, -1, -1):
        alpha, sigma = np.sqrt(abar[i]), np.sqrt(1 - abar[i])
        x0 = MU + alpha * STD**2 * (x - alpha * MU) / (alpha**2 * STD**2 + sigma**2)
        if i == 0:  # the last step goes to sigma = 0: the data prediction itself
            return x0
        alpha_next, sigma_next = np.sqrt(abar[i - 1]), np.sqrt(1 - abar[i - 1])
        h = np.log(alpha_next / sigma_next) - np.log(alpha / sigma)
        if previous_x0 is None:
            d = x0
        else:
            r = previous_h / h
            d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * previous_x0
        x = sigma_next / sigma * x - alpha_next * (np.exp(-h) - 1) * d
        previous_x0, previous_h = x0, h
    raise AssertionError("unreachable")


@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "mean"])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_matches_the_papers_algorithm(prediction, schedule):
    full = GaussianDiffusion(beta_schedule(schedule, 1000), prediction=prediction)
    kept = space_timesteps(1000, "quad12")
    abar = np.cumprod(1 - beta_schedule(schedule, 1000))[kept]
    x_T = torch.linspace(-3, 3, 13, dtype=torch.float64).reshape(13, 1, 1, 1)
    out = dpm_solver_2m_sample(
        GaussianOracle(full, MU, STD), full.respace(kept), x_T, clip_denoised=False
    )
    expected = reference_dpm_solver_2m(x_T.numpy(), abar)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-9, atol=1e-9)


def affine_map(sampler, process, oracle) -> tuple[float, float]:
    """(mean, spread) of a deterministic sampler's outputs from N(0, 1) starts."""
    x_T = torch.tensor([0.0, 1.0], dtype=torch.float64).reshape(2, 1, 1, 1)
    out = sampler(oracle, process, x_T, clip_denoised=False).flatten()
    return out[0].item(), (out[1] - out[0]).item()


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_reaches_the_data_mean_and_spread_in_few_steps_where_ddim_does_not(schedule):
    full = GaussianDiffusion(beta_schedule(schedule, 1000))
    oracle = GaussianOracle(full, MU, STD)
    errors = {}
    for steps in (10, 20, 50):
        process = full.respace(space_timesteps(1000, f"quad{steps}"))
        for name, sampler in (("ddim", ddim_sample), ("dpm++2m", dpm_solver_2m_sample)):
            mean, spread = affine_map(sampler, process, oracle)
            # x_T is not exactly N(0, 1) at the linear schedule's abar_T = 4e-5 (mean 0.005)
            assert abs(mean - MU) < 0.005
            errors[name, steps] = abs(spread - STD) / STD
    assert errors["dpm++2m", 20] < 0.025 and errors["dpm++2m", 50] < 0.003
    assert errors["dpm++2m", 10] < errors["ddim", 10]
    for steps in (20, 50):
        assert errors["dpm++2m", steps] < errors["ddim", steps] / 2.5
    # Second order: 2.5 times the steps cut the error by more than 2.5^1.5; DDIM's by ~2.5.
    assert errors["dpm++2m", 20] / errors["dpm++2m", 50] > 2.5**1.5
    assert errors["ddim", 20] / errors["ddim", 50] < 2.5**1.5


@pytest.mark.parametrize("sampler", [ddpm_sample, ddim_sample, dpm_solver_2m_sample])
def test_samplers_name_and_document_each_keyword(sampler):
    """The signature lists every option (no pass-through), and the docstring explains each."""
    parameters = inspect.signature(sampler).parameters.values()
    assert all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in parameters)
    keywords = [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert {"model_kwargs", "clip_denoised", "guide", "progress", "callback"} <= set(keywords)
    assert all(name in sampler.__doc__ for name in keywords)
    process = GaussianDiffusion(beta_schedule("cosine", 10))
    with pytest.raises(TypeError, match="clip_x0"):
        sampler(GaussianOracle(process, MU, STD), process, torch.zeros(1, 1, 2, 2), clip_x0=False)
