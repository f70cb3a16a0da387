"""Sampling loops: DDPM ancestral sampling, DDIM, DDIM inversion, completion, interpolation.

Every sampler is a function ``(model, process, x, ...)`` that walks the reverse process
of ``process`` (a full chain or a respaced one) from ``x`` with :func:`walk`, the loop
they share. They take these keyword arguments (each sampler's docstring says which):

model_kwargs:   extra keyword arguments for the network (class labels ``y``, ``low_res``).
clip_denoised:  clip the predicted x0 to [-1, 1] before each step.
generator:      a ``torch.Generator``, or one per sample so that sample i does not depend
                on the batch it is drawn in.
progress:       show a progress bar.
guide:          a hook ``guide(process, x_t, t, pred) -> pred`` applied to the prediction of
                every step: classifier guidance (:mod:`diffuse.diffusion.guidance`).
callback:       called after every step with a dict ``step`` (process index), ``x`` (the
                new sample) and ``pred_x0`` (the prediction it came from): DDPM Fig. 6.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from diffuse.diffusion.gaussian import GaussianDiffusion, Model
from diffuse.diffusion.guidance import Guide
from diffuse.diffusion.noise import Generator, randn_like

StepCallback = Callable[[dict], None]
# (x_t, t, pred) -> x_{t-1}: how one sampler moves given the process's prediction.
Update = Callable[[torch.Tensor, torch.Tensor, dict], torch.Tensor]


def _timestep(index: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), index, device=x.device, dtype=torch.long)


def walk(
    model: Model,
    process: GaussianDiffusion,
    x: torch.Tensor,
    steps: range,
    update: Update,
    *,
    description: str,
    model_kwargs: dict | None = None,
    clip_denoised: bool = True,
    guide: Guide | None = None,
    progress: bool = False,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """The loop every sampler shares: at each process index of ``steps``, predict (and
    guide) at x, then move x with ``update``; the sampler is the update. ``description``
    labels the progress bar; the other keyword arguments are those of
    :func:`ddpm_sample`.

    Without a ``guide`` the whole loop runs under ``torch.inference_mode`` (about 6 %
    faster than ``no_grad`` for the CPU presets: no autograd bookkeeping at all) and the
    result is cloned out of it, so callers get an ordinary tensor. A guide needs
    gradients with respect to x, so with one the loop runs under ``no_grad``.
    """
    # A guide differentiates through x_t itself (under enable_grad), which inference
    # tensors do not allow.
    grad_mode = torch.inference_mode() if guide is None else torch.no_grad()
    with grad_mode:
        for index in tqdm(steps, desc=description, disable=not progress, leave=False):
            t = _timestep(index, x)
            pred = process.predict(model, x, t, model_kwargs, clip_denoised)
            if guide is not None:
                pred = guide(process, x, t, pred)
            x = update(x, t, pred)
            if callback is not None:
                callback({"step": index, "x": x, "pred_x0": pred["pred_x0"]})
    return x.clone() if guide is None else x


def reverse_steps(process: GaussianDiffusion, start_step: int | None) -> range:
    first = process.num_timesteps - 1 if start_step is None else start_step
    if not 0 <= first < process.num_timesteps:
        raise ValueError(f"start_step must be in [0, {process.num_timesteps - 1}], got {first}")
    return range(first, -1, -1)


def ddpm_sample(
    model: Model,
    process: GaussianDiffusion,
    x: torch.Tensor,
    *,
    start_step: int | None = None,
    model_kwargs: dict | None = None,
    clip_denoised: bool = True,
    generator: Generator = None,
    guide: Guide | None = None,
    progress: bool = False,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Ancestral sampling (DDPM Algorithm 2) from ``x`` = x_T down to x_0.

    start_step:     with s, ``x`` is taken to be x_s and the chain runs from there: the
                    stochastic completion of an intermediate latent (DDPM Fig. 7).
    model_kwargs:   extra keyword arguments for the network (class labels ``y``, ``low_res``).
    clip_denoised:  clip the predicted x0 to [-1, 1] before each step.
    generator:      the noise of every step: a ``torch.Generator``, or one per sample so
                    that sample i does not depend on the batch it is drawn in.
    guide:          ``guide(process, x_t, t, pred) -> pred`` applied to every prediction
                    (classifier guidance, :mod:`diffuse.diffusion.guidance`).
    progress:       show a progress bar.
    callback:       called after every step with ``step``, ``x`` and ``pred_x0`` (DDPM Fig. 6).
    """

    def update(x_t, t, pred):
        return process.ddpm_update(pred, x_t, t, randn_like(x_t, generator))

    steps = reverse_steps(process, start_step)
    return walk(
        model,
        process,
        x,
        steps,
        update,
        description="DDPM",
        model_kwargs=model_kwargs,
        clip_denoised=clip_denoised,
        guide=guide,
        progress=progress,
        callback=callback,
    )


def ddim_sample(
    model: Model,
    process: GaussianDiffusion,
    x: torch.Tensor,
    *,
    eta: float = 0.0,
    start_step: int | None = None,
    model_kwargs: dict | None = None,
    clip_denoised: bool = True,
    generator: Generator = None,
    guide: Guide | None = None,
    progress: bool = False,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """DDIM sampling (Song et al. 2021, eq. 12) from ``x`` = x_T (or x_start_step) to x_0.

    eta:            0 deterministic (the probability-flow ODE), 1 DDPM-like; >= 0.
    generator:      the noise of every step when eta > 0 (unused for eta = 0).
    start_step, model_kwargs, clip_denoised, guide, progress, callback: as for
    :func:`ddpm_sample`.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")

    def update(x_t, t, pred):
        noise = randn_like(x_t, generator) if eta > 0 else None
        return process.ddim_update(pred, x_t, t, eta, noise)

    steps = reverse_steps(process, start_step)
    return walk(
        model,
        process,
        x,
        steps,
        update,
        description="DDIM",
        model_kwargs=model_kwargs,
        clip_denoised=clip_denoised,
        guide=guide,
        progress=progress,
        callback=callback,
    )


def ddim_invert(
    model: Model,
    process: GaussianDiffusion,
    x0: torch.Tensor,
    *,
    end_step: int | None = None,
    model_kwargs: dict | None = None,
    progress: bool = False,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Encode images into DDIM latents by running the deterministic ODE forwards.

    Returns the latent at process index ``end_step`` (by default the last, x_T; DDIM
    section 5.4). The data stands in for the latent at index 0, where abar is close to 1,
    and each step from index i to i + 1 evaluates the network at index i (an Euler step of
    DDIM eq. 14). Decoding the result with :func:`ddim_sample` (eta = 0, the same
    ``process``, ``start_step=end_step``) reconstructs ``x0`` up to the ODE's
    discretization error. The predicted x0 is never clipped and nothing guides.
    """
    last = process.num_timesteps - 1 if end_step is None else end_step
    if not 0 <= last < process.num_timesteps:
        raise ValueError(f"end_step must be in [0, {process.num_timesteps - 1}], got {last}")

    def update(x_t, t, pred):
        return process.ddim_reverse_update(pred, x_t, t)

    return walk(
        model,
        process,
        x0,
        range(0, last),
        update,
        description="DDIM inversion",
        model_kwargs=model_kwargs,
        clip_denoised=False,
        progress=progress,
        callback=callback,
    )


def interpolate(
    model: Model,
    process: GaussianDiffusion,
    x0_a: torch.Tensor,
    x0_b: torch.Tensor,
    step: int,
    lambdas: torch.Tensor,
    *,
    model_kwargs: dict | None = None,
    clip_denoised: bool = True,
    generator: torch.Generator | None = None,
    guide: Guide | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Interpolate two images through the latent x_t (DDPM section 4.4, Figs. 8 and 9).

    Both images are encoded with the same noise by q(x_t | x0) at ``step``, the latents are
    mixed linearly, x_t = (1 - lambda) x_t(a) + lambda x_t(b), and each mix is decoded by
    ancestral sampling from ``step``. Every mix is decoded with the same noise, so the
    images differ only through lambda. ``x0_a`` and ``x0_b`` are single images
    [C, H, W]; ``lambdas`` is [L]; returns [L, C, H, W]. ``generator`` is one
    ``torch.Generator`` (a fresh randomly seeded one when None).
    """
    if generator is None:
        generator = torch.Generator(device="cpu")
        generator.seed()
    lambdas = torch.as_tensor(lambdas, dtype=x0_a.dtype, device=x0_a.device)
    pair = torch.stack([x0_a, x0_b])
    t = _timestep(step, pair)
    shared_noise = randn_like(x0_a[None], generator).expand_as(pair)
    x_t = process.q_sample(pair, t, shared_noise)
    mix = lambdas.reshape(-1, 1, 1, 1)
    latents = (1.0 - mix) * x_t[0] + mix * x_t[1]
    return ddpm_sample(
        model,
        process,
        latents,
        start_step=step,
        model_kwargs=model_kwargs,
        clip_denoised=clip_denoised,
        generator=[_copy_generator(generator) for _ in range(len(lambdas))],
        guide=guide,
        progress=progress,
    )


def _copy_generator(generator: torch.Generator) -> torch.Generator:
    copy = torch.Generator(device=generator.device)
    copy.set_state(generator.get_state())
    return copy


def slerp(a: torch.Tensor, b: torch.Tensor, lambdas: torch.Tensor) -> torch.Tensor:
    """Spherical linear interpolation of two tensors of the same shape (Shoemake 1985).

    slerp(a, b, l) = sin((1 - l) theta) / sin(theta) a + sin(l theta) / sin(theta) b, with
    theta the angle between a and b (flattened); DDIM section 5.3 interpolates latents
    x_T this way because Gaussian latents concentrate on a sphere. Returns [L, *a.shape]
    for ``lambdas`` [L]; linear interpolation when a and b are (anti)parallel.
    """
    lambdas = torch.as_tensor(lambdas, dtype=torch.float64, device=a.device)
    a64, b64 = a.double(), b.double()
    cos = (a64 * b64).sum() / (a64.norm() * b64.norm())
    theta = torch.arccos(cos.clamp(-1.0, 1.0))
    mix = lambdas.reshape(-1, *([1] * a.dim()))
    if torch.sin(theta) < 1e-6:
        out = (1.0 - mix) * a64 + mix * b64
    else:
        out = (torch.sin((1.0 - mix) * theta) * a64 + torch.sin(mix * theta) * b64) / torch.sin(
            theta
        )
    return out.to(a.dtype)


def latent_interpolate(
    model: Model,
    process: GaussianDiffusion,
    x_T_a: torch.Tensor,
    x_T_b: torch.Tensor,
    lambdas: torch.Tensor,
    *,
    model_kwargs: dict | None = None,
    clip_denoised: bool = True,
    guide: Guide | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Deterministic interpolation in DDIM's latent space (DDIM section 5.3, Fig. 6).

    The latents ``x_T_a`` and ``x_T_b`` [C, H, W] (initial noise, or :func:`ddim_invert` of
    two images) are interpolated by :func:`slerp` and each mix is decoded by DDIM with
    eta = 0; returns [L, C, H, W] for ``lambdas`` [L].
    """
    return ddim_sample(
        model,
        process,
        slerp(x_T_a, x_T_b, lambdas),
        eta=0.0,
        model_kwargs=model_kwargs,
        clip_denoised=clip_denoised,
        guide=guide,
        progress=progress,
    )
