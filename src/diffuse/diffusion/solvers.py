"""Higher-order solvers of the probability-flow ODE, for sampling in few steps.

DPM-Solver++(2M) (Lu, Zhou, Bao, Chen, Li, Zhu 2022, "DPM-Solver++: Fast Solver for
Guided Sampling of Diffusion Probabilistic Models", Algorithm 2) integrates the diffusion
ODE in the log signal-to-noise ratio lambda = log(alpha / sigma), alpha = sqrt(abar),
sigma = sqrt(1 - abar), with the data prediction x0(x_t) held linear in lambda between
steps (a second-order multistep method that reuses the previous step's prediction, so
each step costs one network evaluation, as DDIM's does). Its first-order form is exactly
DDIM with eta = 0. It works from the predicted x0 of any parameterization, with clipping
(thresholding) and with guidance: it is another update in the loop of
:mod:`diffuse.diffusion.samplers`.
"""

from __future__ import annotations

import torch

from diffuse.diffusion.gaussian import GaussianDiffusion, Model
from diffuse.diffusion.guidance import Guide
from diffuse.diffusion.samplers import StepCallback, reverse_steps, walk


def dpm_solver_2m_sample(
    model: Model,
    process: GaussianDiffusion,
    x: torch.Tensor,
    *,
    start_step: int | None = None,
    model_kwargs: dict | None = None,
    clip_denoised: bool = True,
    guide: Guide | None = None,
    progress: bool = False,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Deterministic sampling by DPM-Solver++(2M) from x_T (or x_start_step) to x_0.

    Each step from noise level (alpha, sigma) to the next one (alpha', sigma') of the
    chain, with h = lambda' - lambda, is (Lu et al. 2022, Algorithm 2)

        x' = (sigma' / sigma) x - alpha' (exp(-h) - 1) D,
        D  = (1 + 1 / (2r)) x0_i - 1 / (2r) x0_{i-1},   r = h_{i-1} / h_i,

    with D = x0_i at the first step and at the last one, which goes to sigma' = 0 and
    returns the predicted x0 (as DDIM's last step does). The ``process`` respacing sets the
    steps. It draws no noise, so it takes no generator.

    start_step, model_kwargs, clip_denoised, guide, progress, callback: as for
    :func:`~diffuse.diffusion.samplers.ddpm_sample`.
    """
    history: dict[str, torch.Tensor] = {}

    def update(x_t, t, pred):
        alpha, sigma = process.alpha_sigma(t, x_t)
        # The next step of the reverse chain is the process's previous one.
        alpha_next, sigma_next = process.alpha_sigma(t, x_t, previous=True)
        h = torch.log(alpha_next / sigma_next) - torch.log(alpha / sigma)
        x0 = pred["pred_x0"]
        last = sigma_next == 0
        if history:
            half_inverse_ratio = 0.5 * h / history["h"]  # 1 / (2r)
            second_order = (1.0 + half_inverse_ratio) * x0 - half_inverse_ratio * history["x0"]
            direction = torch.where(last, x0, second_order)
        else:
            direction = x0
        history.update(x0=x0, h=h)
        # At the last step sigma' = 0, h = inf and this is x0 itself.
        return (sigma_next / sigma) * x_t - alpha_next * torch.expm1(-h) * direction

    steps = reverse_steps(process, start_step)
    return walk(
        model,
        process,
        x,
        steps,
        update,
        description="DPM-Solver++(2M)",
        model_kwargs=model_kwargs,
        clip_denoised=clip_denoised,
        guide=guide,
        progress=progress,
        callback=callback,
    )
