"""The variational bound with the exact denoiser of Gaussian data."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import stats

from diffuse.diffusion import (
    GaussianDiffusion,
    beta_schedule,
    bits_per_dim,
    ddim_invert,
    ddim_sample,
    rate_distortion,
    space_timesteps,
)
from diffuse.testing.oracle import GaussianOracle

MU, STD = 0.1, 0.3
N = 128


def discretized_gaussian_data(generator):
    x = MU + STD * torch.randn(N, 1, 8, 8, generator=generator, dtype=torch.float64)
    return torch.round((x.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1


def entropy_bits_per_dim() -> float:
    """The exact entropy of N(MU, STD^2) quantized to the 256 levels on [-1, 1]."""
    levels = np.linspace(-1, 1, 256)
    edges = np.concatenate([[-np.inf], levels[:-1] + 1 / 255, [np.inf]])
    p = np.diff(stats.norm.cdf(edges, MU, STD))
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


@pytest.fixture(scope="module", params=["linear", "cosine"])
def bounds(request):
    process = GaussianDiffusion(beta_schedule(request.param, 1000))
    generator = torch.Generator().manual_seed(0)
    x0 = discretized_gaussian_data(generator)
    oracle = bits_per_dim(GaussianOracle(process, MU, STD), process, x0, generator=generator)
    wrong = bits_per_dim(GaussianOracle(process, MU + 0.2, STD), process, x0, generator=generator)
    return oracle, wrong


def test_bound_is_above_the_entropy_and_below_a_wrong_model(bounds):
    oracle, wrong = bounds
    total = oracle["total"]
    stderr = total.std().item() / np.sqrt(N)
    entropy = entropy_bits_per_dim()
    assert total.mean().item() > entropy - 4 * stderr
    # The exact denoiser of the continuous density is close to optimal on quantized data.
    assert total.mean().item() < entropy + 1.0
    assert wrong["total"].mean().item() > total.mean().item() + 10 * stderr


def test_bound_terms_add_up(bounds):
    oracle, _ = bounds
    assert oracle["vb"].shape == (N, 1000) and oracle["x0_mse"].shape == (N, 1000)
    torch.testing.assert_close(oracle["total"], oracle["prior"] + oracle["vb"].sum(1))
    assert (oracle["vb"][:, 1:] >= -1e-12).all()  # KL terms are non-negative
    # Predicting x0 gets better as the noise goes down.
    mse = oracle["x0_mse"].mean(0)
    assert mse[0] < mse[500] < mse[999]


def test_rate_distortion_table(bounds):
    oracle, _ = bounds
    rows = rate_distortion(oracle)
    assert len(rows) == 1001
    assert rows[0]["reverse_time"] == 1 and rows[0]["step"] == 999
    rates = [r["rate"] for r in rows]
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(rates))
    assert rows[-1]["rate"] == pytest.approx(oracle["total"].mean().item())
    # With nothing sent the best guess is the mean: distortion is the data's spread.
    assert rows[0]["distortion"] == pytest.approx(127.5 * STD, rel=0.1)
    assert rows[-2]["distortion"] < 2.0


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddim_inversion_recovers_the_latent(schedule):
    """Sampling with eta = 0 and inverting returns x_T; the error is the ODE's
    discretization error, first order in the step size."""
    full = GaussianDiffusion(beta_schedule(schedule, 1000))
    oracle = GaussianOracle(full, MU, STD)
    x_T = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    errors = {}
    for steps in (100, 1000):
        process = full.respace(space_timesteps(1000, f"ddim{steps}"))
        x0 = ddim_sample(oracle, process, x_T, clip_denoised=False)
        recovered = ddim_invert(oracle, process, x0)
        errors[steps] = ((recovered - x_T).norm() / x_T.norm()).item()
    assert errors[1000] < 0.01
    assert 5 < errors[100] / errors[1000] < 15
