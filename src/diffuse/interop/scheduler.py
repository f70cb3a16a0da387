"""Our diffusion settings as a diffusers scheduler's configuration, and back.

A :class:`~diffuse.diffusion.DiffusionConfig` becomes the configuration of diffusers'
``DDPMScheduler`` (which ``DDIMScheduler.from_config`` also reads):

- schedule: ``linear`` is diffusers' ``"linear"`` from ``beta_start`` to ``beta_end`` (DDPM's
  1e-4 and 0.02, scaled by 1000 / T); ``cosine`` (Improved DDPM eq. 17, s = 0.008, betas
  capped at 0.999) is diffusers' ``"squaredcos_cap_v2"``.
- prediction: eps, x0, v are ``epsilon``, ``sample``, ``v_prediction``. A posterior-mean
  network has no diffusers form.
- variance: fixed_small (beta-tilde), fixed_large (beta) and learned_range (Improved DDPM
  eq. 15, the second half of the output channels) are diffusers' ``variance_type`` of the
  same names and sample the same: both add no noise at the last step, where their
  first-step variances differ. ``learned`` has no diffusers form: diffusers reads that
  output as the variance, diffuse as its logarithm.
- sampling: ``clip_sample=True`` (x0 clipped to [-1, 1], as ``diffuse sample`` does unless
  ``--no-clip``) and ``timestep_spacing="leading"`` with ``steps_offset=0``: diffusers' DDIM
  with N steps then visits ``range(0, T, T // N)``, our ``"ddimN"``, whenever N divides T.
  DDIM's last step goes to alpha-bar 1 (``set_alpha_to_one``, DDIMScheduler's default),
  as a respaced chain of ours does. Our DDIM derives the noise from the clipped x0
  (guided-diffusion's rule); diffusers does so with ``use_clipped_model_output=True``.

The loss is not part of a scheduler; an imported model is given the loss its variance
trains with (``mse`` for a fixed variance, Improved DDPM's ``hybrid`` for a learned one).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from diffuse.diffusion import DiffusionConfig
from diffuse.diffusion.gaussian import LEARNED_VARIANCES
from diffuse.diffusion.schedules import linear_beta_range
from diffuse.errors import InexpressibleError

PREDICTION_TYPES = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}
VARIANCE_TYPES = {
    "fixed_small": "fixed_small",
    "fixed_large": "fixed_large",
    "learned_range": "learned_range",
}
# diffusers' variance types read back: each of ours, and "fixed_small_log", which draws
# the same noise as "fixed_small" (its standard deviation through exp(0.5 log)).
IMPORTED_VARIANCES = {theirs: ours for ours, theirs in VARIANCE_TYPES.items()} | {
    "fixed_small_log": "fixed_small"
}
BETA_SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
# How DDIM and DDPM sample an exported model as diffuse does (see the module's docstring).
SAMPLING = {
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "thresholding": False,
    "timestep_spacing": "leading",
    "steps_offset": 0,
}


def scheduler_problems(diffusion: DiffusionConfig) -> list[str]:
    """What in ``diffusion`` diffusers' schedulers cannot express, one entry each."""
    problems = []
    if diffusion.prediction not in PREDICTION_TYPES:
        problems.append(
            f"prediction {diffusion.prediction!r} (diffusers' schedulers take a network "
            "predicting eps, x0 or v)"
        )
    if diffusion.variance not in VARIANCE_TYPES:
        problems.append(
            f"variance {diffusion.variance!r} (diffusers reads a 'learned' output as the "
            "variance, diffuse as its logarithm; fixed_small, fixed_large and learned_range "
            "are the same in both)"
        )
    return problems


def scheduler_config(diffusion: DiffusionConfig) -> dict[str, Any]:
    """The ``DDPMScheduler(**arguments)`` of the process ``diffusion`` describes.

    Raises :class:`InexpressibleError` naming each problem of :func:`scheduler_problems`.
    """
    problems = scheduler_problems(diffusion)
    if problems:
        raise InexpressibleError("diffusers' DDPMScheduler", problems)
    config: dict[str, Any] = {
        "num_train_timesteps": diffusion.timesteps,
        "beta_schedule": BETA_SCHEDULES[diffusion.schedule],
        "trained_betas": None,
        "rescale_betas_zero_snr": False,
        "prediction_type": PREDICTION_TYPES[diffusion.prediction],
        "variance_type": VARIANCE_TYPES[diffusion.variance],
        **SAMPLING,
    }
    if diffusion.schedule == "linear":
        config["beta_start"], config["beta_end"] = linear_beta_range(diffusion.timesteps)
    return config


def diffusion_from_scheduler(
    arguments: Mapping[str, Any], *, learns_variance: bool
) -> DiffusionConfig:
    """Our diffusion settings of a scheduler built from ``arguments`` (every constructor
    argument, defaults included), for a network whose output holds a variance when
    ``learns_variance``.

    A scheduler without ``variance_type`` (DDIMScheduler) means fixed_small for a network
    without a variance output. Sampling-only settings (clipping, thresholding, timestep
    spacing) are not part of a checkpoint and are not read. Raises
    :class:`InexpressibleError` naming every setting diffuse cannot reproduce.
    """
    problems = []
    steps = int(arguments["num_train_timesteps"])
    name = arguments["beta_schedule"]
    schedule = {theirs: ours for ours, theirs in BETA_SCHEDULES.items()}.get(name)
    if arguments.get("trained_betas") is not None:
        problems.append("trained_betas (diffuse stores a named schedule, linear or cosine)")
    elif schedule is None:
        problems.append(f"beta_schedule={name!r} (diffuse's: linear, squaredcos_cap_v2 = cosine)")
    elif schedule == "linear":
        start, end = linear_beta_range(steps)
        given = (arguments["beta_start"], arguments["beta_end"])
        if not all(
            math.isclose(a, b, rel_tol=1e-6) for a, b in zip(given, (start, end), strict=True)
        ):
            problems.append(
                f"a linear schedule from {given[0]:g} to {given[1]:g} over {steps} steps "
                f"(diffuse's runs from {start:g} to {end:g}: 1e-4 and 0.02 times 1000 / T)"
            )
    if arguments.get("rescale_betas_zero_snr"):
        problems.append("rescale_betas_zero_snr=True (diffuse's schedules are not rescaled)")
    theirs = arguments["prediction_type"]
    prediction = {value: key for key, value in PREDICTION_TYPES.items()}.get(theirs)
    if prediction is None:
        problems.append(
            f"prediction_type={theirs!r} (diffuse's: {sorted(PREDICTION_TYPES.values())})"
        )
    variance_type = arguments.get("variance_type")
    if variance_type is None:
        variance = "fixed_small"
        if learns_variance:
            problems.append(
                "a UNet with a variance output (twice the image channels) and a scheduler "
                "without variance_type to read it (use a DDPMScheduler configuration)"
            )
    else:
        variance = IMPORTED_VARIANCES.get(variance_type)
        if variance is None:
            problems.append(
                f"variance_type={variance_type!r} (diffuse's: {sorted(IMPORTED_VARIANCES)})"
            )
        elif (variance in LEARNED_VARIANCES) != learns_variance:
            problems.append(
                f"variance_type={variance_type!r} with a UNet that "
                f"{'has' if learns_variance else 'lacks'} a variance output (twice the "
                "image channels)"
            )
    if problems:
        raise InexpressibleError("diffuse's diffusion settings", problems)
    return DiffusionConfig(
        schedule=schedule,
        timesteps=steps,
        prediction=prediction,
        variance=variance,
        loss="hybrid" if variance in LEARNED_VARIANCES else "mse",
    )
