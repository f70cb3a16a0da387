"""Log-densities and divergences of the Gaussians that make up the variational bound."""

from __future__ import annotations

import math

import torch

# Half the width of one of the 256 bins that cover [-1, 1] (DDPM eq. 13).
HALF_BIN = 1.0 / 255.0


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) element-wise, in nats."""
    return 0.5 * (
        -1.0
        + logvar2
        - logvar1
        + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def _log_interval_probability(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """log(Phi(upper) - Phi(lower)) for standardized bounds, accurate in both tails."""
    # In the upper tail use the mirrored interval, where the CDFs are small and exact.
    flip = lower > 0
    a = torch.where(flip, -upper, lower)
    b = torch.where(flip, -lower, upper)
    log_b = torch.special.log_ndtr(b)
    log_a = torch.special.log_ndtr(a)
    return log_b + torch.log1p(-torch.exp(log_a - log_b).clamp(max=1.0 - 1e-12))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    """log p(x) under DDPM's discretized Gaussian decoder (eq. 13), element-wise, in nats.

    ``x`` holds data scaled to [-1, 1] in 256 levels. Each level owns the bin
    [x - 1/255, x + 1/255], with the first bin extended to -inf and the last to +inf,
    so the 256 probabilities sum to one. The Gaussian CDF is computed exactly
    (``log_ndtr``), not with the tanh approximation of the original code.
    """
    inv_scale = torch.exp(-log_scale)
    upper = (x - mean + HALF_BIN) * inv_scale
    lower = (x - mean - HALF_BIN) * inv_scale
    log_below_upper = torch.special.log_ndtr(upper)  # first bin: (-inf, upper]
    log_above_lower = torch.special.log_ndtr(-lower)  # last bin: [lower, inf)
    log_inside = _log_interval_probability(lower, upper)
    return torch.where(
        x < -0.999, log_below_upper, torch.where(x > 0.999, log_above_lower, log_inside)
    )


def mean_over_pixels(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch: [N, ...] -> [N]."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


NATS_PER_BIT = math.log(2.0)
