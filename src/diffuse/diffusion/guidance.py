"""Guidance: steering samples toward a class.

Classifier-free guidance (Ho & Salimans 2021, eq. 6) combines the conditional and
unconditional predictions of one network trained with label dropout:

    eps~(x, c) = (1 + w) eps(x, c) - w eps(x, null)

``w`` is the guidance weight of the paper: w = 0 is plain conditional sampling. Other
libraries (GLIDE, diffusers, Stable Diffusion) write the same thing with a "guidance
scale" s = 1 + w, eps~ = eps(x, null) + s (eps(x, c) - eps(x, null)); this library's
interface takes w, and ``guidance_scale_to_weight`` converts (diffusers' 7.5 is w = 6.5).

The combination is applied to the network's raw output. For every parameterization
(eps, x0, v, mean) the output is an affine function of eps at fixed x_t and t whose
coefficients do not depend on the class, so combining outputs is exactly combining
eps. With a learned variance only the first half of the channels is combined; the
variance comes from the conditional branch (as in GLIDE).

Classifier guidance (Dhariwal & Nichol 2021, section 4) adds the gradient of a noisy
classifier's log p(y | x_t), scaled by s, to the sampler's prediction. It is a hook
``guide(process, x_t, t, pred) -> pred`` that every sampler of
:mod:`diffuse.diffusion.samplers` and :mod:`diffuse.diffusion.solvers` applies to the
prediction of each step, so it works with any sampler, any prediction type, conditional
and unconditional networks, and on top of classifier-free guidance.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from diffuse.diffusion.gaussian import GaussianDiffusion
from diffuse.errors import ConfigError

# (process, x_t, t, pred) -> pred: transforms the prediction dict of one sampling step.
Guide = Callable[[GaussianDiffusion, torch.Tensor, torch.Tensor, dict], dict]


def guidance_scale_to_weight(scale: float) -> float:
    """Convert a diffusers-style guidance scale s = 1 + w to the paper's weight w."""
    return scale - 1.0


def guidance_interval(
    process: GaussianDiffusion, sigma_low: float, sigma_high: float
) -> tuple[int, int]:
    """The original timesteps whose noise level lies in (sigma_low, sigma_high].

    Kynkaanniemi et al. 2024 ("Applying guidance in a limited interval improves sample
    and distribution quality") guide only at medium noise levels. Their noise level is
    EDM's sigma = sqrt((1 - abar) / abar), which grows with t; this returns the first and
    last original timestep index (inclusive) of ``process`` inside the interval, for
    ``ClassifierFreeGuidance(interval=...)``. Give the training process (or any respacing
    of it: the indices returned are original ones either way).
    """
    if not 0.0 <= sigma_low < sigma_high:
        raise ConfigError(
            f"the guidance interval needs 0 <= sigma_low < sigma_high, got ({sigma_low}, "
            f"{sigma_high})"
        )
    sigma = process.edm_sigmas
    inside = ((sigma > sigma_low) & (sigma <= sigma_high)).nonzero()[0]
    if inside.size == 0:
        raise ConfigError(
            f"no timestep has a noise level in ({sigma_low}, {sigma_high}]; this process "
            f"spans sigma {sigma[0]:.4g} to {sigma[-1]:.4g}"
        )
    return int(process.timestep_map[inside[0]]), int(process.timestep_map[inside[-1]])


class ClassifierFreeGuidance:
    """Wrap a class-conditional network so that it returns the guided output.

    model:       the network, called as ``model(x, t, y=labels, **kwargs)``.
    weight:      w of Ho & Salimans eq. 6; 0 gives the conditional model unchanged.
    null_class:  the label index the network was trained to treat as "no class"; None
                 reads the model's ``null_class`` (every network of :mod:`diffuse.nn` and a
                 loaded checkpoint's model have it).
    channels:    the image channels; output channels beyond these (a learned variance)
                 are taken from the conditional branch. None reads the model's
                 ``in_channels``.
    interval:    (t_low, t_high): guide only at original timesteps t_low <= t <= t_high
                 (see :func:`guidance_interval`); elsewhere the conditional output is
                 returned and the unconditional branch is not evaluated. None: everywhere.

    The conditional and unconditional branches run as one batched forward pass; only the
    samples whose timestep is inside the interval are doubled.
    """

    def __init__(
        self,
        model,
        weight: float,
        null_class: int | None = None,
        channels: int | None = None,
        interval: tuple[int, int] | None = None,
    ) -> None:
        if interval is not None and not 0 <= interval[0] <= interval[1]:
            raise ConfigError(f"guidance interval {interval} must be 0 <= t_low <= t_high")
        self.model = model
        self.weight = float(weight)
        self.null_class = int(_from_model(model, "null_class", null_class))
        self.channels = int(_from_model(model, "in_channels", channels))
        self.interval = None if interval is None else (int(interval[0]), int(interval[1]))

    def guided(self, t: torch.Tensor) -> torch.Tensor:
        """Which samples [N] of a batch at original timesteps ``t`` get guidance."""
        if self.weight == 0.0:
            return torch.zeros_like(t, dtype=torch.bool)
        if self.interval is None:
            return torch.ones_like(t, dtype=torch.bool)
        return (t >= self.interval[0]) & (t <= self.interval[1])

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
        rows = None  # every sample guided: no mask, so no device synchronisation
        if self.weight == 0.0 or self.interval is not None:
            guided = self.guided(t)
            if not guided.any():
                return self.model(x, t, y=y, **kwargs)
            rows = None if guided.all() else guided.nonzero().squeeze(1)

        def with_guided_rows(value):
            if not torch.is_tensor(value):
                return value
            return torch.cat([value, value if rows is None else value[rows]])

        n = x.shape[0]
        null = torch.full_like(y, self.null_class)
        out = self.model(
            with_guided_rows(x),
            with_guided_rows(t),
            y=torch.cat([y, null if rows is None else null[rows]]),
            **{key: with_guided_rows(value) for key, value in kwargs.items()},
        )
        cond, uncond = out[:n], out[n:, : self.channels]
        c = self.channels
        cond_guided = cond[:, :c] if rows is None else cond[rows, :c]
        combined = cond_guided + self.weight * (cond_guided - uncond)
        if rows is None:
            return torch.cat([combined, cond[:, c:]], dim=1) if cond.shape[1] > c else combined
        result = cond.clone()
        result[rows, :c] = combined
        return result


def _from_model(model, attribute: str, given: int | None) -> int:
    """``given``, else the model's ``attribute`` (``null_class``, ``in_channels``)."""
    if given is not None:
        return given
    value = getattr(model, attribute, None)
    if value is None:
        reason = (
            "it has no null class (it was trained without label dropout, so classifier-free "
            "guidance cannot serve it)"
            if hasattr(model, attribute)
            else f"it has no attribute {attribute!r}"
        )
        argument = "null_class" if attribute == "null_class" else "channels"
        raise ConfigError(
            f"ClassifierFreeGuidance cannot read {attribute} from the model: {reason}; pass "
            f"{argument}=... explicitly"
        )
    return value


class ClassifierGuidance:
    """Classifier guidance of ADM (Dhariwal & Nichol 2021, Algorithms 1 and 2).

    classifier:  a noisy classifier ``classifier(x_t, t) -> logits [N, K]``, trained on the
                 same noise schedule; it is called with the original timestep indices,
                 also on a respaced chain.
    labels:      the class to steer each sample toward, [N] integers in [0, K).
    scale:       s, the gradient scale (ADM: 1 to 10; 0 turns guidance off).

    With g = s * grad_x log p(y | x_t) the prediction of each step changes in two ways,
    one per algorithm, and each sampler reads the part its update uses:

    - Algorithm 1 (ancestral sampling): the mean becomes mu + Sigma g;
    - Algorithm 2 (DDIM and the ODE solvers): eps becomes eps - sqrt(1 - abar) g and the
      predicted x0 is recomputed from it.

    clip_denoised: clip that x0 to [-1, 1] and take eps from it, as the sampler does with
                 the unguided prediction (give the sampler's setting). ADM does not clip
                 again; but x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) multiplies the
                 guidance by (1 - abar) / sqrt(abar), about 2e4 at the cosine schedule's
                 last step (abar ~ 2e-9), which ADM's DDIM chains (ending at 960 of 1000)
                 never visit: a classifier not quite blind there throws every sample out
                 of range.
    """

    def __init__(
        self, classifier, labels: torch.Tensor, scale: float, clip_denoised: bool = True
    ) -> None:
        self.classifier = classifier
        self.labels = labels
        self.scale = float(scale)
        self.clip_denoised = clip_denoised

    def gradient(self, process: GaussianDiffusion, x_t: torch.Tensor, t: torch.Tensor):
        """g = scale * grad_x log p(labels | x_t) at process steps ``t``."""
        if self.labels.shape != (x_t.shape[0],):
            raise ConfigError(
                f"classifier guidance got {tuple(self.labels.shape)} labels for a batch of "
                f"{x_t.shape[0]}: give one label per sample"
            )
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            logits = self.classifier(x, process.model_timesteps(t))
            if logits.dtype in (torch.float16, torch.bfloat16):
                logits = logits.float()  # a softmax in half precision loses the gradient
            if int(self.labels.max()) >= logits.shape[1] or int(self.labels.min()) < 0:
                raise ConfigError(
                    f"labels must be classes of the classifier, in [0, {logits.shape[1] - 1}]"
                )
            log_probs = torch.log_softmax(logits, dim=1)
            selected = log_probs.gather(1, self.labels.to(x.device).reshape(-1, 1)).sum()
            (grad,) = torch.autograd.grad(selected, x)
        return self.scale * grad.to(x_t.dtype)

    def __call__(self, process: GaussianDiffusion, x_t: torch.Tensor, t: torch.Tensor, pred):
        if self.scale == 0.0:
            return pred
        g = self.gradient(process, x_t, t)
        _, sigma = process.alpha_sigma(t, x_t)
        eps = pred["pred_eps"] - sigma * g
        x0 = process.x0_from_eps(x_t, t, eps)
        if self.clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
            eps = process.eps_from_x0(x_t, t, x0)
        return {
            **pred,
            "mean": pred["mean"] + pred["variance"] * g,
            "pred_eps": eps,
            "pred_x0": x0,
        }
