"""Beta schedules and timestep respacing."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from diffuse.diffusion import GaussianDiffusion, beta_schedule, space_timesteps
from diffuse.errors import ConfigError


def test_linear_schedule_endpoints_scale_with_T():
    betas = beta_schedule("linear", 1000)
    assert betas.dtype == np.float64 and betas.shape == (1000,)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    assert np.allclose(np.diff(betas), np.diff(betas)[0])
    betas = beta_schedule("linear", 4000)
    assert betas[0] == pytest.approx(2.5e-5) and betas[-1] == pytest.approx(0.005)


def test_cosine_schedule_follows_improved_ddpm_eq_17():
    T = 1000
    betas = beta_schedule("cosine", T)

    def f(t):
        return math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2

    abar = np.cumprod(1 - betas)
    for t in (0, 1, 100, 500, 900):
        assert abar[t] == pytest.approx(f(t + 1) / f(0), rel=1e-12)
    assert betas.max() == pytest.approx(0.999)  # clipped near t = T
    assert (betas > 0).all() and (betas <= 0.999).all()


def test_user_betas_are_validated():
    assert np.array_equal(beta_schedule([0.1, 0.2]), [0.1, 0.2])
    for bad in ([0.1, 0.0], [0.5, 1.0], [0.1, float("nan")], [], [[0.1]], ["x"]):
        with pytest.raises(ConfigError):
            beta_schedule(bad)
    with pytest.raises(ConfigError, match="unknown beta schedule"):
        beta_schedule("quadratic", 10)
    with pytest.raises(ConfigError, match="positive integer"):
        beta_schedule("linear", 0)
    with pytest.raises(ConfigError, match="more than 20 steps"):
        beta_schedule("linear", 20)


def test_ddim_spacing_is_a_constant_stride():
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    assert space_timesteps(1000, "ddim1000") == list(range(1000))
    assert space_timesteps(10, "ddim3") == [0, 4, 8]
    with pytest.raises(ConfigError, match="exactly 7"):
        space_timesteps(10, "ddim7")


def test_quadratic_spacing_is_strictly_increasing_from_first_to_last_step():
    for count in (2, 3, 10, 50, 999, 1000):
        steps = space_timesteps(1000, f"quad{count}")
        assert len(steps) == count and steps[0] == 0 and steps[-1] == 999
        assert all(a < b for a, b in itertools.pairwise(steps))
    # quadratic: the middle step sits at a quarter of the chain
    assert space_timesteps(1000, "quad41")[20] == round(999 / 4)
    with pytest.raises(ConfigError, match="quadratic spacing"):
        space_timesteps(10, "quad11")


def test_section_counts():
    assert space_timesteps(1000, "250") == space_timesteps(1000, 250)
    assert space_timesteps(1000, "even250") == space_timesteps(1000, "250")
    kept = space_timesteps(1000, "1000")
    assert kept == list(range(1000))
    # 300 steps in 3 sections of 100: 10, 15 and 20 evenly strided steps, ends included.
    kept = space_timesteps(300, "10,15,20")
    assert len(kept) == 45
    assert kept[:10] == [round(i * 99 / 9) for i in range(10)]
    assert kept[10] == 100 and kept[24] == 199 and kept[25] == 200 and kept[-1] == 299
    # Uneven sections: the first sections take the extra steps.
    assert space_timesteps(10, "2,2,2") == [0, 3, 4, 6, 7, 9]
    assert space_timesteps(1000, "1") == [0]
    with pytest.raises(ConfigError, match="cannot keep 200"):
        space_timesteps(300, "10,200")
    with pytest.raises(ConfigError, match="invalid timestep spacing"):
        space_timesteps(1000, "fast")
    with pytest.raises(ConfigError):
        space_timesteps(10, [3, 12])
    assert space_timesteps(10, [5, 1, 5]) == [1, 5]


def reference_spacing(num_timesteps: int, spec: str) -> list[int]:
    """The respacing rule of the released Improved DDPM / ADM code, written out plainly.

    ``ddimN``: the first integer stride i (from 1) with len(range(0, T, i)) == N. Counts per
    section: T // n steps per section, the remainder spread one each over the first
    sections; in each section a float stride (size - 1) / (count - 1) (1 for a single
    step) is added up and every running sum rounded with Python's round (half to even).
    """
    if spec.startswith("ddim"):
        count = int(spec[len("ddim") :])
        for stride in range(1, num_timesteps):
            if len(range(0, num_timesteps, stride)) == count:
                return list(range(0, num_timesteps, stride))
        raise ValueError(f"no integer stride gives {count} steps")
    counts = [int(c) for c in spec.split(",")]
    size_per_section, remainder = divmod(num_timesteps, len(counts))
    kept = set()
    start = 0
    for index, count in enumerate(counts):
        size = size_per_section + (1 if index < remainder else 0)
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            kept.add(start + round(position))
            position += stride
        start += size
    return sorted(kept)


@pytest.mark.parametrize("T", [1000, 4000])
def test_every_step_count_keeps_the_reference_timesteps(T):
    """A released checkpoint sampled with N steps visits the reference code's timesteps."""
    for count in range(1, 1001):
        assert space_timesteps(T, str(count)) == reference_spacing(T, str(count)), count


def test_the_reference_rounds_the_running_sum_of_strides():
    # 999 / 20 = 49.95 added ten times is 499.49999999999994 in floating point, which
    # rounds to 499; rounding 10 * 49.95 = 499.5 to even would give 500.
    kept = space_timesteps(1000, "21")
    assert 499 in kept and 500 not in kept
    assert kept == reference_spacing(1000, "21")


@pytest.mark.parametrize(
    ("T", "spec"),
    [
        (300, "10,15,20"),
        (1000, "10,15,20"),
        (1000, "90,60,60,20,20"),  # ADM's 250-step LSUN schedule (appendix J)
        (1000, "1,1,1"),
        (4000, "7,7,7"),  # 4000 = 1334 + 1333 + 1333
        (4000, "33,1,250,100"),
        (10, "2,2,2"),
    ],
)
def test_section_specs_keep_the_reference_timesteps(T, spec):
    assert space_timesteps(T, spec) == reference_spacing(T, spec)


def test_ddim_strides_match_the_reference_for_every_count():
    for count in range(2, 1001):
        try:
            expected = reference_spacing(1000, f"ddim{count}")
        except ValueError:
            with pytest.raises(ConfigError, match="no constant stride"):
                space_timesteps(1000, f"ddim{count}")
        else:
            assert space_timesteps(1000, f"ddim{count}") == expected, count
    for count in (25, 50, 100, 250, 1000, 4000):
        assert space_timesteps(4000, f"ddim{count}") == reference_spacing(4000, f"ddim{count}")


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_respacing_with_every_step_reproduces_the_process(schedule):
    full = GaussianDiffusion(beta_schedule(schedule, 200), prediction="v", variance="fixed_large")
    same = full.respace(range(200))
    np.testing.assert_allclose(same.betas, full.betas, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(same.timestep_map, np.arange(200))
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    out = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    t = torch.tensor([0, 1, 100, 199])
    a = full.p_mean_variance(out, x, t)
    b = same.p_mean_variance(out, x, t)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spec", ["ddim25", "10,15,20", "7"])
def test_respaced_process_keeps_the_marginals(spec):
    full = GaussianDiffusion(beta_schedule("cosine", 300))
    kept = space_timesteps(300, spec)
    respaced = full.respace(kept)
    np.testing.assert_allclose(respaced.alphas_cumprod, full.alphas_cumprod[kept], rtol=1e-9)
    np.testing.assert_array_equal(respaced.timestep_map, kept)
    # The network sees the original indices.
    seen = []
    respaced.call_model(
        lambda x, t: seen.append(t) or x, torch.zeros(2, 1, 2, 2), torch.tensor([0, 1])
    )
    assert seen[0].tolist() == kept[:2]
    # Respacing composes.
    twice = respaced.respace([0, len(kept) - 1])
    assert twice.timestep_map.tolist() == [kept[0], kept[-1]]
    np.testing.assert_allclose(twice.alphas_cumprod, full.alphas_cumprod[[kept[0], kept[-1]]])
