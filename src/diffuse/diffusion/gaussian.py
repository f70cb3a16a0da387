"""The Gaussian diffusion process of DDPM, Improved DDPM and DDIM as pure functions.

Every method takes the network's output as a tensor, so each formula can be tested
without a network; only :meth:`GaussianDiffusion.predict` and
:meth:`GaussianDiffusion.training_losses` call a model, always with the *original*
timestep indices (which differ from the process's own indices on a respaced chain).

Notation: x0 is the data, x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (DDPM eq. 4),
abar_t = prod_{s<=t} (1 - beta_s). Timesteps are indices 0 .. T-1; index 0 is the
papers' t = 1, so "abar_prev" at index 0 is 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np
import torch

from diffuse.diffusion.distributions import (
    NATS_PER_BIT,
    discretized_gaussian_log_likelihood,
    mean_over_pixels,
    normal_kl,
)
from diffuse.diffusion.noise import Generator, randn_like
from diffuse.diffusion.schedules import SCHEDULES, beta_schedule, validate_betas
from diffuse.errors import ConfigError

if (
    TYPE_CHECKING
):  # for annotations only: diffusion_config.py imports this module, never the reverse
    from diffuse.diffusion.diffusion_config import DiffusionConfig

Model = Callable[..., torch.Tensor]

PREDICTIONS = ("eps", "x0", "mean", "v")
VARIANCES = ("fixed_small", "fixed_large", "learned", "learned_range")
LEARNED_VARIANCES = ("learned", "learned_range")
LOSSES = ("mse", "kl", "hybrid")
# The allowed values of each setting of a process and of its DiffusionConfig.
CHOICES = {"schedule": SCHEDULES, "prediction": PREDICTIONS, "variance": VARIANCES, "loss": LOSSES}


def check_choices(**settings: object) -> None:
    """Raise :class:`ConfigError` naming the first of ``settings`` (keywords of
    :data:`CHOICES`, e.g. ``prediction="eps"``) whose value is not one it allows."""
    for name, value in settings.items():
        if value not in CHOICES[name]:
            raise ConfigError(f"diffusion {name} {value!r} is not one of {CHOICES[name]}")


class GaussianDiffusion:
    """A Gaussian diffusion process over ``len(betas)`` steps.

    betas:          the noise schedule, float64 [T], each in (0, 1).
    prediction:     what the network predicts: ``eps`` (DDPM eq. 11), ``x0``, ``mean`` (the
                    posterior mean mu~, DDPM's baseline) or ``v`` (sqrt(abar) eps -
                    sqrt(1 - abar) x0; Salimans & Ho 2022).
    variance:       ``fixed_small`` (sigma^2 = beta-tilde, DDPM eq. 7), ``fixed_large``
                    (sigma^2 = beta, with beta-tilde at the first step so that the decoder
                    stays finite), ``learned`` (the network outputs log sigma^2) or
                    ``learned_range`` (Improved DDPM eq. 15).
    loss:           ``mse`` (L_simple, DDPM eq. 14), ``kl`` (L_vlb = T * E_t[L_t]) or
                    ``hybrid`` (L_simple + 0.001 L_vlb with the mean detached in L_vlb,
                    Improved DDPM section 3.1).
    timestep_map:   the original timestep index of each step; set by :meth:`respace`.

    :meth:`from_config` builds one from a checkpoint's :class:`DiffusionConfig`.
    """

    def __init__(
        self,
        betas: Iterable[float],
        *,
        prediction: str = "eps",
        variance: str = "fixed_small",
        loss: str = "mse",
        timestep_map: Iterable[int] | None = None,
    ) -> None:
        self._check_settings(prediction, variance, loss)
        self.prediction = prediction
        self.variance = variance
        self.loss = loss
        self.learns_variance = variance in LEARNED_VARIANCES

        self.betas = validate_betas(betas)
        T = self.num_timesteps = len(self.betas)
        if timestep_map is None:
            self.timestep_map = np.arange(T, dtype=np.int64)
        else:
            self.timestep_map = np.asarray(list(timestep_map), dtype=np.int64)
            if self.timestep_map.shape != (T,):
                raise ConfigError(
                    f"timestep_map has {self.timestep_map.size} entries for {T} steps"
                )

        self._tables = _noise_tables(self.betas)
        # guided-diffusion's names for the float64 arrays [T] most read from outside.
        self.alphas_cumprod = self._tables["abar"]
        self.alphas_cumprod_prev = self._tables["abar_prev"]
        self.alphas_cumprod_next = self._tables["abar_next"]
        self.posterior_variance = self._tables["posterior_variance"]
        self.posterior_log_variance_clipped = self._tables["posterior_log_variance"]
        self.posterior_mean_coef1 = self._tables["coef1"]
        self.posterior_mean_coef2 = self._tables["coef2"]
        # Whether each step is the step the network was trained on, so that a "mean"
        # network's output is this process's mean itself; :meth:`respace` clears it.
        self._trained_steps = True
        # The tables as tensors, per (device, dtype) they have been asked for.
        self._device_tables: dict[tuple[torch.device, torch.dtype], dict[str, torch.Tensor]] = {}
        self._timestep_maps: dict[torch.device, torch.Tensor] = {}

    @classmethod
    def from_config(cls, config: DiffusionConfig) -> GaussianDiffusion:
        """The process ``config`` describes: the betas of its named schedule
        (:func:`~diffuse.diffusion.schedules.beta_schedule` over ``config.timesteps``) with
        its prediction, variance and loss, checked as the constructor checks them."""
        return cls(
            beta_schedule(config.schedule, config.timesteps),
            prediction=config.prediction,
            variance=config.variance,
            loss=config.loss,
        )

    @staticmethod
    def _check_settings(prediction: str, variance: str, loss: str) -> None:
        """Refuse unknown values and a loss that cannot train the variance as asked: a
        learned variance learns only through the bound (``kl`` or ``hybrid``), and
        ``hybrid`` adds the bound to L_simple only to train a learned variance."""
        check_choices(prediction=prediction, variance=variance, loss=loss)
        learned = variance in LEARNED_VARIANCES
        if learned and loss == "mse":
            raise ConfigError(
                f"variance {variance!r} is learned only through the variational bound: "
                "use loss 'hybrid' (Improved DDPM) or 'kl'"
            )
        if not learned and loss == "hybrid":
            raise ConfigError(
                "loss 'hybrid' trains a learned variance; with a fixed variance use 'mse' or 'kl'"
            )

    # ------------------------------------------------------------------ helpers

    def __repr__(self) -> str:
        return (
            f"GaussianDiffusion(T={self.num_timesteps}, prediction={self.prediction!r}, "
            f"variance={self.variance!r}, loss={self.loss!r})"
        )

    def _coef(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Table ``name`` at timesteps ``t`` [N], shaped to broadcast against ``like``."""
        key = (t.device, like.dtype)
        tables = self._device_tables.get(key)
        if tables is None:
            tables = {
                k: torch.from_numpy(v).to(device=t.device, dtype=like.dtype)
                for k, v in self._tables.items()
            }
            self._device_tables[key] = tables
        return tables[name][t].reshape(-1, *([1] * (like.dim() - 1)))

    # ------------------------------------------------------------ noise levels

    def alpha_sigma(
        self, t: torch.Tensor, like: torch.Tensor, *, previous: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The signal and noise scales (alpha_t, sigma_t) of q(x_t | x0) at process steps ``t``.

        q(x_t | x0) = N(alpha_t x0, sigma_t^2 I) with alpha_t = sqrt(abar_t) and
        sigma_t = sqrt(1 - abar_t) (DDPM eq. 4), so alpha_t^2 + sigma_t^2 = 1: the process
        preserves variance. Each is shaped [N, 1, ...] to broadcast against ``like`` and
        has its dtype (and ``t``'s device); the values come from float64 tables.

        previous: the scales of the step before ``t`` instead, the one a reverse step from
                  ``t`` lands on (abar_{t-1}; at index 0 the data itself: alpha = 1, sigma = 0).
        """
        suffix = "_prev" if previous else ""
        return (
            self._coef(f"sqrt_abar{suffix}", t, like),
            self._coef(f"sqrt_one_minus_abar{suffix}", t, like),
        )

    @property
    def edm_sigmas(self) -> np.ndarray:
        """The noise level sigma_t / alpha_t = sqrt((1 - abar_t) / abar_t) of every step,
        float64 [T], rising with t.

        It is EDM's sigma (Karras et al. 2022, section 2 and Table 1's VP column): x_t /
        alpha_t = x0 + sigma eps, the noise scale once the signal is scaled back to the data;
        k-diffusion's discrete schedules call these ``sigmas``. Indexed by process step (on
        a respaced process, the kept steps'; ``timestep_map`` gives their original indices).
        """
        return self._tables["sqrt_recipm1_abar"].copy()

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """The original timestep indices for process indices ``t``: what the network sees."""
        table = self._timestep_maps.get(t.device)
        if table is None:
            table = self._timestep_maps[t.device] = torch.from_numpy(self.timestep_map).to(t.device)
        return table[t]

    def call_model(self, model: Model, x_t: torch.Tensor, t: torch.Tensor, model_kwargs=None):
        """Run the network on x_t at process steps ``t`` (mapped to the original indices)."""
        return model(x_t, self.model_timesteps(t), **(model_kwargs or {}))

    def split_output(self, model_output: torch.Tensor, x_t: torch.Tensor):
        """Split the network output into (mean part, variance part or None)."""
        channels = x_t.shape[1]
        expected = 2 * channels if self.learns_variance else channels
        if model_output.shape[1] != expected:
            raise ConfigError(
                f"the model returned {model_output.shape[1]} channels for {channels}-channel "
                f"images; variance {self.variance!r} needs {expected}"
            )
        if self.learns_variance:
            return model_output[:, :channels], model_output[:, channels:]
        return model_output, None

    # --------------------------------------------------------- forward process

    def q_mean_variance(self, x0: torch.Tensor, t: torch.Tensor):
        """Mean, variance and log variance of q(x_t | x0) (DDPM eq. 4)."""
        mean = self._coef("sqrt_abar", t, x0) * x0
        variance = 1.0 - self._coef("abar", t, x0)
        return mean, variance, torch.log(variance)

    def q_sample(
        self,
        x0: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: Generator = None,
    ) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (DDPM eq. 4)."""
        if noise is None:
            noise = randn_like(x0, generator)
        alpha, sigma = self.alpha_sigma(t, x0)
        return alpha * x0 + sigma * noise

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Mean, variance and clipped log variance of q(x_{t-1} | x_t, x0) (DDPM eqs. 6, 7)."""
        mean = self._coef("coef1", t, x_t) * x0 + self._coef("coef2", t, x_t) * x_t
        variance = self._coef("posterior_variance", t, x_t).expand_as(x_t)
        log_variance = self._coef("posterior_log_variance", t, x_t).expand_as(x_t)
        return mean, variance, log_variance

    # ----------------------------------------------------- conversions (eps, x0, v)

    def x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar), DDPM eq. 4 solved for x0."""
        return (
            self._coef("sqrt_recip_abar", t, x_t) * x_t
            - self._coef("sqrt_recipm1_abar", t, x_t) * eps
        )

    def eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar), DDPM eq. 4 solved for eps."""
        return (self._coef("sqrt_recip_abar", t, x_t) * x_t - x0) / self._coef(
            "sqrt_recipm1_abar", t, x_t
        )

    def v_target(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022, section 4)."""
        alpha, sigma = self.alpha_sigma(t, x0)
        return alpha * eps - sigma * x0

    def _x0_from_prediction(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        if self.prediction == "eps":
            return self.x0_from_eps(x_t, t, output)
        if self.prediction == "x0":
            return output
        if self.prediction == "v":
            # x0 = sqrt(abar) x_t - sqrt(1 - abar) v
            alpha, sigma = self.alpha_sigma(t, x_t)
            return alpha * x_t - sigma * output
        # mean: invert mu~ = coef1 x0 + coef2 x_t of the chain the network was trained on
        return (output - self._coef("trained_coef2", t, x_t) * x_t) / self._coef(
            "trained_coef1", t, x_t
        )

    # --------------------------------------------------------- reverse process

    def _variance_from_output(self, var_output, x_t: torch.Tensor, t: torch.Tensor):
        if self.variance in ("fixed_small", "fixed_large"):
            name = "posterior" if self.variance == "fixed_small" else "large"
            variance = self._coef(f"{name}_variance", t, x_t).expand_as(x_t)
            return variance, self._coef(f"{name}_log_variance", t, x_t).expand_as(x_t)
        if self.variance == "learned":
            log_variance = var_output
        else:  # learned_range, Improved DDPM eq. 15
            fraction = (var_output + 1.0) / 2.0
            log_variance = fraction * self._coef("log_beta", t, x_t) + (
                1.0 - fraction
            ) * self._coef("posterior_log_variance", t, x_t)
        return torch.exp(log_variance), log_variance

    def p_mean_variance(
        self,
        model_output: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        clip_denoised: bool = True,
    ) -> dict[str, torch.Tensor]:
        """p(x_{t-1} | x_t) from the network's output.

        Returns a dict with ``mean``, ``variance``, ``log_variance`` (of the reverse step),
        ``pred_x0`` (clipped to [-1, 1] when ``clip_denoised``) and ``pred_eps`` (the noise
        consistent with x_t and ``pred_x0``). For ``eps``, ``x0`` and ``v`` predictions the
        mean is mu~(x_t, pred_x0) (DDPM eq. 7, which for eps equals eq. 11), so clipping
        x0 moves the mean. A ``mean`` prediction is the mean itself and clipping changes
        only the reported ``pred_x0``, as in DDPM's and guided-diffusion's code; on a
        respaced chain the network's one-step mean becomes the kept step's mean
        mu~(x_t, x0) through its unclipped x0 (guided-diffusion keeps the one-step mean there).
        """
        output, var_output = self.split_output(model_output, x_t)
        variance, log_variance = self._variance_from_output(var_output, x_t, t)
        pred_x0 = self._x0_from_prediction(output, x_t, t)
        mean = None
        if self.prediction == "mean":
            mean = output if self._trained_steps else self.q_posterior(pred_x0, x_t, t)[0]
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1.0, 1.0)
        if self.prediction == "eps" and not clip_denoised:
            pred_eps = output
        else:
            pred_eps = self.eps_from_x0(x_t, t, pred_x0)
        if mean is None:
            mean = self.q_posterior(pred_x0, x_t, t)[0]
        return {
            "mean": mean,
            "variance": variance,
            "log_variance": log_variance,
            "pred_x0": pred_x0,
            "pred_eps": pred_eps,
        }

    def predict(
        self,
        model: Model,
        x_t: torch.Tensor,
        t: torch.Tensor,
        model_kwargs: dict | None = None,
        clip_denoised: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Run the network and return :meth:`p_mean_variance` of its output."""
        return self.p_mean_variance(
            self.call_model(model, x_t, t, model_kwargs), x_t, t, clip_denoised
        )

    def ddpm_update(self, pred: dict, x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor):
        """x_{t-1} = mean + sigma z with z = ``noise`` and no noise at the last step (DDPM Alg. 2)."""
        nonzero = (t != 0).to(x_t.dtype).reshape(-1, *([1] * (x_t.dim() - 1)))
        return pred["mean"] + nonzero * torch.exp(0.5 * pred["log_variance"]) * noise

    def ddim_update(
        self, pred: dict, x_t: torch.Tensor, t: torch.Tensor, eta: float, noise: torch.Tensor | None
    ) -> torch.Tensor:
        """One DDIM step from ``pred_x0`` and ``pred_eps`` (DDIM eq. 12 with sigma of eq. 16).

        x_{t-1} = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z, with
        sigma (``step_sigma``) = eta sqrt((1 - abar_prev) / (1 - abar)) sqrt(1 - abar / abar_prev).
        eta = 0 is deterministic; eta = 1 has DDPM's fixed_small variance.
        """
        alpha_prev, sigma_prev = self.alpha_sigma(t, x_t, previous=True)
        if eta == 0:
            return alpha_prev * pred["pred_x0"] + sigma_prev * pred["pred_eps"]
        if noise is None:
            raise ValueError("DDIM with eta > 0 needs noise")
        step_sigma = eta * self._coef("ddim_sigma_unit", t, x_t)
        abar_prev = self._coef("abar_prev", t, x_t)
        return (
            alpha_prev * pred["pred_x0"]
            + torch.sqrt((1.0 - abar_prev - step_sigma**2).clamp(min=0.0)) * pred["pred_eps"]
            + step_sigma * noise
        )

    def ddim_reverse_update(self, pred: dict, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_{t+1} = sqrt(abar_next) x0 + sqrt(1 - abar_next) eps: DDIM run forwards (inversion,
        DDIM section 5 / eq. 14 as an ODE step towards noise)."""
        return (
            self._coef("sqrt_abar_next", t, x_t) * pred["pred_x0"]
            + self._coef("sqrt_one_minus_abar_next", t, x_t) * pred["pred_eps"]
        )

    def ddpm_step(self, model_output, x_t, t, noise, clip_denoised: bool = True) -> torch.Tensor:
        """x_{t-1} by ancestral sampling (DDPM Algorithm 2) from the network's output."""
        return self.ddpm_update(
            self.p_mean_variance(model_output, x_t, t, clip_denoised), x_t, t, noise
        )

    def ddim_step(
        self, model_output, x_t, t, eta, noise, clip_denoised: bool = True
    ) -> torch.Tensor:
        """x_{t-1} by DDIM (eq. 12) with any eta from the network's output."""
        pred = self.p_mean_variance(model_output, x_t, t, clip_denoised)
        return self.ddim_update(pred, x_t, t, eta, noise)

    def ddim_reverse_step(self, model_output, x_t, t) -> torch.Tensor:
        """x_{t+1} from x_t, deterministically (DDIM inversion); never clips."""
        pred = self.p_mean_variance(model_output, x_t, t, clip_denoised=False)
        return self.ddim_reverse_update(pred, x_t, t)

    # --------------------------------------------------------------- likelihood

    def vb_terms_bpd(
        self,
        model_output: torch.Tensor,
        x0: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        clip_denoised: bool = False,
    ) -> torch.Tensor:
        """The variational-bound term at each example's step, in bits/dim [N].

        For t > 0: L_{t-1} = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) (DDPM eq. 5).
        For t = 0: L_0 = -log p(x0 | x_1) under the discretized Gaussian decoder (eq. 13).
        """
        pred = self.p_mean_variance(model_output, x_t, t, clip_denoised)
        return self.prediction_vb_terms_bpd(pred, x0, x_t, t)

    def prediction_vb_terms_bpd(
        self, pred: dict[str, torch.Tensor], x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`vb_terms_bpd` from the prediction ``pred`` that :meth:`p_mean_variance`
        made of the network's output (for a caller that needs the prediction too)."""
        true_mean, _, true_log_variance = self.q_posterior(x0, x_t, t)
        kl = mean_over_pixels(
            normal_kl(true_mean, true_log_variance, pred["mean"], pred["log_variance"])
        )
        decoder_nll = -mean_over_pixels(
            discretized_gaussian_log_likelihood(x0, pred["mean"], 0.5 * pred["log_variance"])
        )
        return torch.where(t == 0, decoder_nll, kl) / NATS_PER_BIT

    def prior_bpd(self, x0: torch.Tensor) -> torch.Tensor:
        """L_T = KL(q(x_T | x0) || N(0, I)) in bits/dim [N] (DDPM eq. 5)."""
        t = torch.full((x0.shape[0],), self.num_timesteps - 1, device=x0.device, dtype=torch.long)
        mean, _, log_variance = self.q_mean_variance(x0, t)
        zeros = torch.zeros_like(mean)
        return mean_over_pixels(normal_kl(mean, log_variance, zeros, zeros)) / NATS_PER_BIT

    # ----------------------------------------------------------------- training

    def training_losses(
        self,
        model: Model,
        x0: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor | None = None,
        model_kwargs: dict | None = None,
        generator: Generator = None,
        mse_weights: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-example training losses at steps ``t``.

        Returns ``loss`` [N] (what to minimize) and, where they apply, ``mse`` [N] (the
        mean-squared error of the prediction against its target, DDPM eq. 14 for eps) and
        ``vb`` [N] (the bound term in bits/dim). ``kl`` trains on T * vb; ``hybrid`` on
        mse + (T / 1000) * vb with the predicted mean detached inside vb, which is
        L_simple + 0.001 L_vlb (Improved DDPM section 3.1).

        mse_weights: per-example weights [N] of the MSE inside ``loss`` (for instance
                     :meth:`min_snr_weights`); ``mse`` itself is reported unweighted.
        """
        if noise is None:
            noise = randn_like(x0, generator)
        x_t = self.q_sample(x0, t, noise)
        model_output = self.call_model(model, x_t, t, model_kwargs)
        output, var_output = self.split_output(model_output, x_t)
        terms: dict[str, torch.Tensor] = {}
        if self.loss in ("mse", "hybrid"):
            target = self.prediction_target(x0, x_t, t, noise)
            terms["mse"] = mean_over_pixels((target - output) ** 2)
        if self.loss == "kl" or self.learns_variance:
            if self.loss == "hybrid":
                # The bound trains the variance only; the mean learns from the MSE.
                model_output = torch.cat([output.detach(), var_output], dim=1)
            terms["vb"] = self.vb_terms_bpd(model_output, x0, x_t, t, clip_denoised=False)
        if self.loss == "kl":
            if mse_weights is not None:
                raise ConfigError("the kl loss has no MSE term to weight")
            terms["loss"] = terms["vb"] * self.num_timesteps
            return terms
        mse = terms["mse"] if mse_weights is None else terms["mse"] * mse_weights
        terms["loss"] = (
            mse if self.loss == "mse" else mse + terms["vb"] * (self.num_timesteps / 1000.0)
        )
        return terms

    def min_snr_weights(self, t: torch.Tensor, gamma: float) -> torch.Tensor:
        """Min-SNR-gamma loss weights [N] (float32) at steps ``t`` for this process's
        prediction target (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR
        Weighting Strategy", ICCV).

        The paper weights the error of the predicted x0 by min(SNR_t, gamma), with
        SNR_t = abar_t / (1 - abar_t): steps with little noise, whose easy denoising
        otherwise dominates the gradient, count no more than gamma. At a fixed x_t every
        target's error is a fixed multiple g_t of the x0 error it implies: g^2 = SNR for
        eps (x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)), 1 for x0, SNR + 1 for v
        (x0 = sqrt(abar) x_t - sqrt(1 - abar) v) and coef1^2 for the posterior mean
        (DDPM eq. 7). The weights are min(SNR_t, gamma) / g_t^2, so every prediction type
        minimises the same min(SNR_t, gamma) ||x0 - x0_hat||^2; for eps that is
        min(1, gamma / SNR_t), never above L_simple's 1.
        """
        if not gamma > 0:
            raise ConfigError(f"the min-SNR gamma must be positive, got {gamma!r}")
        like = torch.empty(0, dtype=torch.float64, device=t.device)
        abar = self._coef("abar", t, like)
        snr = abar / (1.0 - abar)
        if self.prediction == "eps":
            gain_squared = snr
        elif self.prediction == "x0":
            gain_squared = torch.ones_like(snr)
        elif self.prediction == "v":
            gain_squared = snr + 1.0
        else:
            gain_squared = self._coef("trained_coef1", t, like) ** 2
        return (snr.clamp(max=gamma) / gain_squared).float()

    def prediction_target(self, x0, x_t, t, noise) -> torch.Tensor:
        """What a perfect network outputs for this prediction type, given the x0 and the
        ``noise`` that made x_t: eps itself (DDPM eq. 14's target), x0, v = sqrt(abar) eps -
        sqrt(1 - abar) x0 (Salimans & Ho 2022, section 4) or the posterior mean
        mu~(x_t, x0) (DDPM eq. 7)."""
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            return x0
        if self.prediction == "v":
            return self.v_target(x0, t, noise)
        return self.q_posterior(x0, x_t, t)[0]

    # ---------------------------------------------------------------- respacing

    def respace(self, steps: Iterable[int]) -> GaussianDiffusion:
        """A process over the kept ``steps`` only (Improved DDPM section 4).

        Its betas are recomputed from the kept alphas_cumprod, beta_i = 1 - abar_i /
        abar_{i-1}, so its marginals q(x_t | x0) at the kept steps are the original ones.
        Its methods take indices into the kept steps; the network is called with the
        original indices. Respacing a respaced process composes.
        """
        kept = sorted({int(s) for s in steps})
        if not kept or kept[0] < 0 or kept[-1] >= self.num_timesteps:
            raise ConfigError(f"steps to keep must be indices in [0, {self.num_timesteps - 1}]")
        abar = self.alphas_cumprod[kept]
        betas = 1.0 - abar / np.append(1.0, abar[:-1])
        respaced = GaussianDiffusion(
            betas,
            prediction=self.prediction,
            variance=self.variance,
            loss=self.loss,
            timestep_map=self.timestep_map[kept],
        )
        for name in ("trained_coef1", "trained_coef2"):
            respaced._tables[name] = self._tables[name][kept]
        respaced._trained_steps = self._trained_steps and len(kept) == self.num_timesteps
        return respaced


def _noise_tables(betas: np.ndarray) -> dict[str, np.ndarray]:
    """Every per-step coefficient the formulas use, float64 [T], by name."""
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.append(1.0, abar[:-1])
    abar_next = np.append(abar[1:], 0.0)
    # q(x_{t-1} | x_t, x0) = N(mu~, beta~), DDPM eqs. 6 and 7.
    posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)
    # beta~ is 0 at the first step; its log is clipped to the second step's value.
    first = posterior_variance[1] if len(betas) > 1 else betas[0]
    coef1 = betas * np.sqrt(abar_prev) / (1.0 - abar)
    coef2 = (1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar)
    large_variance = np.append(first, betas[1:])
    return {
        "sqrt_abar": np.sqrt(abar),
        "sqrt_one_minus_abar": np.sqrt(1.0 - abar),
        "sqrt_recip_abar": np.sqrt(1.0 / abar),
        "sqrt_recipm1_abar": np.sqrt(1.0 / abar - 1.0),
        "abar": abar,
        "abar_prev": abar_prev,
        "abar_next": abar_next,
        "sqrt_abar_prev": np.sqrt(abar_prev),
        "sqrt_one_minus_abar_prev": np.sqrt(1.0 - abar_prev),
        "sqrt_abar_next": np.sqrt(abar_next),
        "sqrt_one_minus_abar_next": np.sqrt(1.0 - abar_next),
        # DDIM eq. 16 at eta = 1: sqrt((1 - abar_prev) / (1 - abar) (1 - abar / abar_prev)).
        "ddim_sigma_unit": np.sqrt((1.0 - abar_prev) / (1.0 - abar) * (1.0 - abar / abar_prev)),
        "posterior_variance": posterior_variance,
        "posterior_log_variance": np.log(np.append(first, posterior_variance[1:])),
        "coef1": coef1,
        "coef2": coef2,
        "log_beta": np.log(betas),
        "large_variance": large_variance,
        "large_log_variance": np.log(large_variance),
        # A "mean" network predicts mu~ of the chain it was trained on; respacing keeps
        # these so that x0 is recovered with the coefficients the network learned.
        "trained_coef1": coef1,
        "trained_coef2": coef2,
    }
