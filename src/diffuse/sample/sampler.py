"""Which sampler walks a stage's reverse process, over which steps.

Samplers (all take the same model, guidance and per-sample generators):

- ``ddpm``: ancestral sampling (DDPM Algorithm 2), stochastic.
- ``ddim``: DDIM (Song et al. 2021, eq. 12) with ``eta`` (0: deterministic).
- ``dpm++2m``: DPM-Solver++(2M) (Lu et al. 2022), deterministic, second order.

Steps are a respacing of the training chain (Improved DDPM section 4): ``"even50"``
(evenly spaced, from the first step to the last), ``"ddim50"`` (DDIM's constant stride
``range(0, T, k)``), ``"quad50"`` (quadratic, t_i ~ (i / n)^2 T: dense near the data; DDIM
appendix D.2 and DPM-Solver's "time_quadratic"), counts per section like ``"10,15,20"``,
or a bare count ``"50"``: the sampler's own spacing, quadratic for ``dpm++2m`` (as the
advice below says) and even for the others. :attr:`SamplerSettings.respacing` is the
spacing a setting resolves to.

Which to use (measured with benchmarks of this repository; FID of 500 samples of the
8x8 digits model against the 1,797 digits, same seeds at every point, floor ~12.4):

- 5 to 20 steps: ``dpm++2m`` with ``quadN``. FID 15.5 / 13.0 / 12.4 at 5 / 10 / 20 steps,
  against DDIM's best (of even and quadratic spacing) 16.5 / 12.9 / 12.4: better at 5
  steps, tied (within the noise of 500 samples) at 10 and 20 on this small model. On
  Gaussian data, where the exact answer is known, its spread is off by 1-6 % at 10 steps
  and 0.2-2 % at 20, DDIM's by 8-25 % and 5-13 % (tests/test_solvers.py).
- Never ``dpm++2m`` with evenly spaced steps: its extrapolation overshoots over the long
  last steps (spread +10 to +38 % at 10 steps on Gaussian data; FID 14.0 at 10 steps).
  So a bare count means ``quadN`` for it; ``evenN`` still asks for even spacing.
- 50 steps and more: every sampler is at the floor (DDIM 12.35, DPM-Solver++ 12.37,
  ancestral 12.07 at 50 and 12.17 at 250 steps); ``ddpm`` when diversity matters more
  than reproducing a latent, ``ddim`` (eta 0) to encode, invert or interpolate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from diffuse.diffusion import GaussianDiffusion, ddim_sample, ddpm_sample, space_timesteps
from diffuse.diffusion.solvers import dpm_solver_2m_sample
from diffuse.errors import ConfigError

SAMPLERS = ("ddpm", "ddim", "dpm++2m")
STOCHASTIC = ("ddpm",)
QUADRATIC_BY_DEFAULT = ("dpm++2m",)
"""Samplers whose bare step count ``"N"`` means ``"quadN"`` (they overshoot on even steps)."""


@dataclass(frozen=True)
class SamplerSettings:
    """How one stage samples.

    name:           one of ``SAMPLERS``: ``ddpm``, ``ddim`` or ``dpm++2m``.
    steps:          the respacing of the training chain: ``"even50"``, ``"ddim50"``,
                    ``"quad50"``, ``"10,15,20"``, or a bare count ``"50"`` (or an int)
                    that takes the sampler's own spacing (:attr:`respacing`).
    eta:            DDIM's eta (ddim only): 0 deterministic, 1 DDPM-like.
    clip_denoised:  clip each predicted x0 to [-1, 1] (the data range).
    """

    name: str = "ddim"
    steps: str | int = "50"
    eta: float = 0.0
    clip_denoised: bool = True

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise ConfigError(f"unknown sampler {self.name!r}; choose one of {', '.join(SAMPLERS)}")
        if not (self.eta >= 0.0 and np.isfinite(self.eta)):
            raise ConfigError(f"eta must be a finite number >= 0, got {self.eta}")
        if self.eta != 0.0 and self.name != "ddim":
            raise ConfigError(f"eta is DDIM's; the {self.name} sampler does not take it")

    @property
    def stochastic(self) -> bool:
        """Whether sampling draws fresh noise at each step (so one x_T has many outcomes)."""
        return self.name in STOCHASTIC or self.eta > 0

    @property
    def respacing(self) -> str:
        """The respacing these settings walk: ``steps``, except that a bare count N >= 2
        means ``quadN`` for a sampler of :data:`QUADRATIC_BY_DEFAULT` (``dpm++2m``)."""
        spec = str(self.steps).strip()
        if self.name in QUADRATIC_BY_DEFAULT and _is_count(spec) and int(spec) >= 2:
            return f"quad{int(spec)}"
        return spec

    def process(self, full: GaussianDiffusion) -> GaussianDiffusion:
        """The respaced process over this sampler's steps of the training process ``full``."""
        return full.respace(space_timesteps(full.num_timesteps, self.respacing))

    def run(
        self,
        model,
        process: GaussianDiffusion,
        x: torch.Tensor,
        *,
        start_step: int | None = None,
        model_kwargs: dict | None = None,
        generator=None,
        guide=None,
        progress: bool = False,
        callback=None,
    ) -> torch.Tensor:
        """Sample from ``x`` (x_T, or the latent at ``start_step``) down to x_0."""
        common = dict(
            start_step=start_step,
            model_kwargs=model_kwargs,
            clip_denoised=self.clip_denoised,
            guide=guide,
            progress=progress,
            callback=callback,
        )
        if self.name == "ddpm":
            return ddpm_sample(model, process, x, generator=generator, **common)
        if self.name == "ddim":
            return ddim_sample(model, process, x, eta=self.eta, generator=generator, **common)
        return dpm_solver_2m_sample(model, process, x, **common)


def _is_count(spec: str) -> bool:
    """Whether ``spec`` is a bare step count such as ``"10"`` (ASCII digits only)."""
    return spec.isascii() and spec.isdigit()
