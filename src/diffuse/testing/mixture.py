"""Exact denoiser and exact noisy classifier of a mixture of Gaussians, one per class.

Data: class k with probability pi_k, then x0 ~ N(mu_k, s^2 I). Under x_t = a x0 + b eps
(a = sqrt(abar), b = sqrt(1 - abar)) each class stays Gaussian, x_t | k ~ N(a mu_k, v I)
with v = a^2 s^2 + b^2, so everything a network or a classifier would learn is known:

    log p(k | x_t)  = log pi_k - |x_t - a mu_k|^2 / (2 v) + const    (the noisy classifier)
    E[x0 | x_t, k]  = mu_k + a s^2 (x_t - a mu_k) / v
    E[eps | x_t, k] = b (x_t - a mu_k) / v
    E[. | x_t]      = sum_k p(k | x_t) E[. | x_t, k]

It stands in for a class-conditional network with a null class (classifier-free guidance)
and for ADM's noisy classifier (classifier guidance) in tests and measurements, where
the distribution that sampling should reach is known exactly.
"""

from __future__ import annotations

import torch

from diffuse.diffusion.gaussian import GaussianDiffusion


class GaussianMixtureOracle:
    """The optimal class-conditional network for a mixture of Gaussians under ``process``.

    process:     the process the "network" was trained on (the full chain: it is called
                 with original timestep indices, as any network is).
    means:       mu_k, [K, *image_shape] (or [K] for the same value in every pixel).
    std:         s, the standard deviation of every class around its mean.
    weights:     pi_k [K], the class probabilities (uniform when None).

    The output is in the parameterization of ``process.prediction``.

    Labels ``y`` in [0, K) select a class; the label K (``null_class``) or ``y=None`` gives
    the unconditional mixture.
    """

    def __init__(
        self,
        process: GaussianDiffusion,
        means: torch.Tensor,
        std: float,
        weights: torch.Tensor | None = None,
    ) -> None:
        self.process = process
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.std = float(std)
        k = self.means.shape[0]
        weights = torch.full((k,), 1.0 / k) if weights is None else torch.as_tensor(weights)
        self.log_weights = torch.log(weights.to(torch.float64) / weights.sum())

    @property
    def num_classes(self) -> int:
        """Number of mixture components K."""
        return self.means.shape[0]

    @property
    def null_class(self) -> int:
        """The label that means "no class": K."""
        return self.num_classes

    def _terms(self, x_t: torch.Tensor, t: torch.Tensor):
        """(a, b, v, centred [N, K, ...] = x_t - a mu_k) in float64."""
        x = x_t.double()
        a, b = self.process.alpha_sigma(t, x)
        means = self.means.to(x.device).reshape(1, self.num_classes, *self.means.shape[1:])
        centred = x.unsqueeze(1) - a.unsqueeze(1) * means
        return a, b, a**2 * self.std**2 + b**2, centred

    def classifier(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Exact log p(k | x_t) [N, K] (normalised logits) at original timesteps ``t``."""
        _, _, v, centred = self._terms(x_t, t)
        squared = centred.pow(2).flatten(2).sum(2)
        logits = self.log_weights.to(x_t.device) - squared / (2 * v.reshape(-1, 1))
        return torch.log_softmax(logits, dim=1).to(x_t.dtype)

    def posterior(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None):
        """(E[x0 | x_t, y], E[eps | x_t, y]); unconditional where ``y`` is None or K."""
        a, b, v, centred = self._terms(x_t, t)
        log_probs = self.classifier(x_t, t).double()
        if y is not None:
            y = y.to(x_t.device)
            known = (y < self.num_classes).reshape(-1, 1)
            chosen = torch.nn.functional.one_hot(
                y.clamp(max=self.num_classes - 1), self.num_classes
            )
            probs = torch.where(known, chosen.double(), log_probs.exp())
        else:
            probs = log_probs.exp()
        probs = probs.reshape(*probs.shape, *([1] * (x_t.dim() - 1)))
        eps = (probs * b.unsqueeze(1) * centred / v.unsqueeze(1)).sum(1)
        means = self.means.to(x_t.device).reshape(1, self.num_classes, *self.means.shape[1:])
        x0_k = means + (a * self.std**2 / v).unsqueeze(1) * centred
        x0 = (probs * x0_k).sum(1)
        return x0.to(x_t.dtype), eps.to(x_t.dtype)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None):
        x0, eps = self.posterior(x_t, t, y)
        return self.process.prediction_target(x0, x_t, t, eps)
