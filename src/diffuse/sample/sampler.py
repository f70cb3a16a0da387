"""Which sampler walks a stage's reverse process, over which steps.

Samplers (all take the same model, guidance and per-sample generators):

- ``ddpm``: ancestral sampling (DDPM Algorithm 2), stochastic; needs many steps (250+).
- ``ddim``: DDIM (Song et al. 2021, eq. 12) with ``eta`` (0: deterministic).
- ``dpm++2m``: DPM-Solver++(2M) (Lu et al. 2022), deterministic, second order: the most
  accurate at 10 to 50 steps.

Steps are a respacing of the training chain (Improved DDPM section 4): a count ``"50"``
(evenly spaced, from the first step to the last), ``"ddim50"`` (DDIM's constant stride
``range(0, T, k)``), ``"quad50"`` (quadratic, t_i ~ (i / n)^2 T: dense near the data; DDIM
appendix D.2 and DPM-Solver's "time_quadratic"), or counts per section like ``"10,15,20"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from diffuse.diffusion import GaussianDiffusion, ddim_sample, ddpm_sample, space_timesteps
from diffuse.diffusion.solvers import dpm_solver_2m_sample
from diffuse.errors import ConfigError

SAMPLERS = ("ddpm", "ddim", "dpm++2m")
STOCHASTIC = ("ddpm",)


def quadratic_spacing(num_timesteps: int, count: int) -> list[int]:
    """``count`` steps at t_i = round((T - 1) (i / (count - 1))^2), made strictly increasing:
    quadratic selection of DDIM (appendix D.2), fine near the data where x0 changes fast."""
    if not 2 <= count <= num_timesteps:
        raise ConfigError(f"quadratic spacing needs 2 to {num_timesteps} steps, got {count}")
    steps: list[int] = []
    for value in np.round((num_timesteps - 1) * np.linspace(0.0, 1.0, count) ** 2):
        steps.append(max(int(value), steps[-1] + 1) if steps else int(value))
    # Pushing early duplicates up can overrun the end; pull the tail back below T.
    for i in range(count - 1, -1, -1):
        steps[i] = min(steps[i], num_timesteps - count + i)
    return steps


def respacing(num_timesteps: int, steps: str | int) -> list[int]:
    """The kept timesteps of a steps specification (see the module docstring)."""
    match = re.fullmatch(r"quad(\d+)", str(steps).strip())
    if match:
        return quadratic_spacing(num_timesteps, int(match.group(1)))
    return space_timesteps(num_timesteps, steps)


@dataclass(frozen=True)
class SamplerSettings:
    """How one stage samples.

    name:           one of ``SAMPLERS``: ``ddpm``, ``ddim`` or ``dpm++2m``.
    steps:          the respacing of the training chain: ``"50"``, ``"ddim50"``,
                    ``"quad50"``, ``"10,15,20"`` or an int.
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

    def process(self, full: GaussianDiffusion) -> GaussianDiffusion:
        """The respaced process over this sampler's steps of the training process ``full``."""
        return full.respace(respacing(full.num_timesteps, self.steps))

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
