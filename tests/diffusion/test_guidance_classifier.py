"""Classifier guidance (ADM Algorithms 1 and 2) against closed forms and exact mixtures.

The data is a two-class mixture of Gaussians whose exact denoiser and exact noisy
classifier p(y | x_t) are known (testing.mixture), so guidance can be checked with no
training: at scale 0 half the samples fall at each mode, at scale 1 guidance samples the
class-conditional distribution (exactly, in the continuous limit), and larger scales push
everything to the target mode.
"""

from __future__ import annotations

import math

import pytest
import torch

from diffuse.diffusion import (
    GaussianDiffusion,
    beta_schedule,
    ddim_sample,
    ddpm_sample,
    space_timesteps,
)
from diffuse.diffusion.guidance import ClassifierFreeGuidance, ClassifierGuidance
from diffuse.diffusion.solvers import dpm_solver_2m_sample
from diffuse.errors import ConfigError
from diffuse.testing.mixture import GaussianMixtureOracle
from diffuse.testing.oracle import GaussianOracle

# Two classes at -/+0.25 in each of 4 pixels with spread 0.5: the modes are 1.0 apart, so
# a sample of class 1 lies nearer its own mode with probability Phi(1.0 / (2 * 0.5)).
MODE, STD, SHAPE = 0.25, 0.5, (1, 2, 2)
EXACT_CONDITIONAL = 0.5 * (1 + math.erf(1.0 / math.sqrt(2)))  # Phi(1) = 0.841
N = 2000


@pytest.fixture(scope="module")
def full():
    return GaussianDiffusion(beta_schedule("linear", 1000))


@pytest.fixture(scope="module")
def mixture(full):
    means = torch.tensor([-MODE, MODE]).reshape(2, 1, 1, 1).expand(2, *SHAPE)
    return GaussianMixtureOracle(full, means, STD)


def at_target(x: torch.Tensor) -> float:
    """Fraction of samples nearer the class-1 mode (the sign of the pixel mean)."""
    return (x.mean(dim=(1, 2, 3)) > 0).double().mean().item()


def sample(name, model, process, guide, model_kwargs=None, seed=0):
    x_T = torch.randn(N, *SHAPE, generator=torch.Generator().manual_seed(seed))
    common = dict(clip_denoised=False, guide=guide, model_kwargs=model_kwargs)
    if name == "ddpm":
        generator = torch.Generator().manual_seed(seed + 1)
        return ddpm_sample(model, process, x_T, generator=generator, **common)
    if name == "ddim":
        return ddim_sample(model, process, x_T, **common)
    return dpm_solver_2m_sample(model, process, x_T, **common)


class LinearClassifier:
    """logits = W^T flatten(x): log p(y | x) has the gradient W_y - sum_k p_k W_k."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight
        self.timesteps = []

    def __call__(self, x, t):
        self.timesteps.append(t.tolist())
        return x.flatten(1) @ self.weight


def test_guided_step_is_algorithm_1_for_the_mean_and_algorithm_2_for_eps(full):
    process = full.respace(space_timesteps(1000, "10"))
    weight = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    classifier = LinearClassifier(weight)
    x = torch.randn(5, *SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 1, 0])
    t = torch.full((5,), 6)
    pred = process.predict(GaussianOracle(full, 0.3, 0.7), x, t, clip_denoised=False)
    guided = ClassifierGuidance(classifier, labels, 2.5, clip_denoised=False)(process, x, t, pred)

    # The classifier sees the original timestep of respaced index 6.
    assert classifier.timesteps == [[int(process.timestep_map[6])] * 5]
    probs = torch.softmax(x.flatten(1) @ weight, dim=1)
    grad = (weight.T[labels] - probs @ weight.T).reshape(x.shape)
    g = 2.5 * grad
    variance = pred["variance"]
    torch.testing.assert_close(guided["mean"], pred["mean"] + variance * g)  # Algorithm 1
    abar = float(process.alphas_cumprod[6])
    eps = pred["pred_eps"] - math.sqrt(1 - abar) * g  # Algorithm 2
    torch.testing.assert_close(guided["pred_eps"], eps)
    torch.testing.assert_close(guided["pred_x0"], (x - math.sqrt(1 - abar) * eps) / math.sqrt(abar))
    assert ClassifierGuidance(classifier, labels, scale=0.0)(process, x, t, pred) is pred


def test_labels_outside_the_classifier_are_refused(full):
    classifier = LinearClassifier(torch.zeros(4, 3))
    x, t = torch.zeros(2, *SHAPE), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ConfigError, match=r"\[0, 2\]"):
        ClassifierGuidance(classifier, torch.tensor([0, 3]), 1.0).gradient(full, x, t)
    with pytest.raises(ConfigError, match="one label per sample"):
        ClassifierGuidance(classifier, torch.tensor([0]), 1.0).gradient(full, x, t)


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpm++2m"])
def test_guidance_moves_unconditional_samples_to_the_target_mode(full, mixture, name):
    process = full.respace(space_timesteps(1000, "50"))
    target = torch.ones(N, dtype=torch.long)
    fractions = {
        scale: at_target(
            sample(
                name, mixture, process, ClassifierGuidance(mixture.classifier, target, scale, False)
            )
        )
        for scale in (0.0, 1.0, 4.0)
    }
    standard_error = math.sqrt(0.25 / N)
    assert abs(fractions[0.0] - 0.5) < 4 * standard_error  # no guidance: both modes
    assert fractions[0.0] < fractions[1.0] < fractions[4.0]
    assert fractions[4.0] > 0.99
    if name != "ddpm":  # the deterministic samplers follow the conditional ODE closely
        assert abs(fractions[1.0] - EXACT_CONDITIONAL) < 0.03


def test_guidance_sharpens_a_conditional_model_and_combines_with_cfg(full, mixture):
    process = full.respace(space_timesteps(1000, "50"))
    target = torch.ones(N, dtype=torch.long)
    kwargs = {"y": target}
    conditional = at_target(sample("ddim", mixture, process, None, kwargs))
    assert abs(conditional - EXACT_CONDITIONAL) < 0.03  # the model alone: p(x | y)
    guided = at_target(
        sample(
            "ddim",
            mixture,
            process,
            ClassifierGuidance(mixture.classifier, target, 1.0, False),
            kwargs,
        )
    )
    cfg = ClassifierFreeGuidance(mixture, 1.0, mixture.null_class, channels=1)
    cfg_only = at_target(sample("ddim", cfg, process, None, kwargs))
    both = at_target(
        sample(
            "ddim", cfg, process, ClassifierGuidance(mixture.classifier, target, 1.0, False), kwargs
        )
    )
    assert conditional + 0.05 < guided and conditional + 0.05 < cfg_only
    assert both > max(guided, cfg_only)


@pytest.mark.parametrize("prediction", ["x0", "v", "mean"])
def test_guidance_works_with_every_prediction_type(prediction, mixture):
    full = GaussianDiffusion(beta_schedule("linear", 1000), prediction=prediction)
    means = mixture.means
    model = GaussianMixtureOracle(full, means, STD)
    process = full.respace(space_timesteps(1000, "20"))
    target = torch.ones(N, dtype=torch.long)
    guide = ClassifierGuidance(model.classifier, target, 3.0, clip_denoised=False)
    assert at_target(sample("dpm++2m", model, process, guide)) > 0.99
    assert at_target(sample("ddpm", model, process, guide)) > 0.95


def test_a_classifier_not_blind_at_the_last_step_does_not_throw_cosine_samples_out_of_range():
    """The cosine schedule's last step has sqrt(abar) ~ 5e-5, so the x0 of a guided eps
    carries the guidance times ~2e4: clipped as the sampler clips the unguided x0, a
    classifier with a small gradient at every noise level moves the samples a little."""
    full = GaussianDiffusion(beta_schedule("cosine", 1000))
    process = full.respace(space_timesteps(1000, "25"))
    assert int(process.timestep_map[-1]) == 999
    data = GaussianOracle(full, 0.0, 0.3)
    classifier = LinearClassifier(torch.tensor([[0.01, -0.01]] * 4))
    x_T = torch.randn(N, *SHAPE, generator=torch.Generator().manual_seed(0))
    labels = torch.zeros(N, dtype=torch.long)
    plain = ddim_sample(data, process, x_T)
    guided = ddim_sample(data, process, x_T, guide=ClassifierGuidance(classifier, labels, 1.0))
    assert abs(guided.std().item() - plain.std().item()) < 0.02
    assert 0 < guided.mean().item() < 0.1  # toward class 0, a little
