"""The mathematics of Gaussian diffusion, independent of any network.

Works with any callable ``model(x, t, **cond) -> tensor`` where ``t`` holds the
original integer timestep indices.
"""

from diffuse.diffusion.diffusion_config import DiffusionConfig
from diffuse.diffusion.gaussian import GaussianDiffusion
from diffuse.diffusion.guidance import (
    ClassifierFreeGuidance,
    ClassifierGuidance,
    guidance_interval,
    guidance_scale_to_weight,
)
from diffuse.diffusion.likelihood import bits_per_dim, rate_distortion
from diffuse.diffusion.noise import randn, randn_like, seeded_generators
from diffuse.diffusion.samplers import (
    ddim_invert,
    ddim_sample,
    ddpm_sample,
    interpolate,
    latent_interpolate,
    slerp,
)
from diffuse.diffusion.schedules import beta_schedule, space_timesteps
from diffuse.diffusion.solvers import dpm_solver_2m_sample
from diffuse.diffusion.timesteps import (
    LossAwareSampler,
    TimestepSampler,
    UniformSampler,
    make_timestep_sampler,
)

__all__ = [
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "DiffusionConfig",
    "GaussianDiffusion",
    "LossAwareSampler",
    "TimestepSampler",
    "UniformSampler",
    "beta_schedule",
    "bits_per_dim",
    "ddim_invert",
    "ddim_sample",
    "ddpm_sample",
    "dpm_solver_2m_sample",
    "guidance_interval",
    "guidance_scale_to_weight",
    "interpolate",
    "latent_interpolate",
    "make_timestep_sampler",
    "randn",
    "randn_like",
    "rate_distortion",
    "seeded_generators",
    "slerp",
    "space_timesteps",
]
