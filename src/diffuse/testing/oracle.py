"""Exact denoisers for Gaussian data: networks whose answers are known in closed form.

For data x0 ~ N(mu, s^2), independently per pixel, x_t = a x0 + b eps with a = sqrt(abar)
and b = sqrt(1 - abar) is Gaussian too, and the minimum-MSE predictions are linear in x_t:

    E[x0 | x_t]  = mu + a s^2 (x_t - a mu) / (a^2 s^2 + b^2)
    E[eps | x_t] = b (x_t - a mu) / (a^2 s^2 + b^2)

These are what a perfectly trained network outputs, so every sampler, likelihood and
guidance method can be checked against exact values with no training.
"""

from __future__ import annotations

import torch

from diffuse.diffusion.gaussian import GaussianDiffusion


class GaussianOracle:
    """The optimal network for x0 ~ N(mean, std^2) per pixel under ``process``.

    process:     the process the "network" was trained on (the full chain: the oracle is
                 called with original timestep indices, as any network is); the output
                 is in its parameterization, ``process.prediction``.
    mean, std:   the data distribution's parameters (floats or tensors broadcastable to x).
    """

    def __init__(
        self, process: GaussianDiffusion, mean: float | torch.Tensor, std: float | torch.Tensor
    ) -> None:
        self.process = process
        self.mean = mean
        self.std = std

    def posterior(self, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E[x0 | x_t], E[eps | x_t]) at original timesteps ``t``."""
        a, b = self.process.alpha_sigma(t, x_t)
        centred = (x_t - a * self.mean) / (a**2 * self.std**2 + b**2)
        return self.mean + a * self.std**2 * centred, b * centred

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, **_: object) -> torch.Tensor:
        x0, eps = self.posterior(x_t, t)
        return self.process.prediction_target(x0, x_t, t, eps)
