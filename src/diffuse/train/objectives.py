"""What a training step minimises: the diffusion loss, or the noisy classifier's.

An objective draws the random quantities of a global batch (:meth:`draw`, the same on
every process), computes per-example losses on a process's rows (:meth:`losses`) and
sees each step's losses afterwards (:meth:`observe`, which feeds the importance sampler).

- :class:`DiffusionObjective`: ``GaussianDiffusion.training_losses`` at timesteps from
  a uniform or loss-aware sampler, the loss multiplied by the importance weights
  1 / (T p_t) (Improved DDPM section 3.3); labels replaced by the null class with
  probability ``p_uncond`` (classifier-free guidance, Ho & Salimans 2021, Algorithm 1);
  for an upsampler, the low-resolution input made from the batch by area downsampling
  (ADM appendix A) and passed as ``low_res``; with ``min_snr_gamma`` the MSE weighted by
  Min-SNR-gamma (Hang et al. 2023).
- :class:`ClassifierObjective`: cross-entropy of the classifier on x_t ~ q(x_t | x_0) at
  uniform t (ADM section 4.1), with its accuracy.

Per-example statistics are also reported per quarter of the timestep range
(``loss_q0`` for the quarter nearest the data, ..., ``loss_q3`` nearest pure noise). With
importance-sampled timesteps the statistics also hold ``loss_weighted``, the loss times the
importance weights: its batch mean is the unbiased estimate of the uniform-t loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from diffuse.diffusion.gaussian import GaussianDiffusion
from diffuse.diffusion.noise import randn
from diffuse.diffusion.timesteps import LossAwareSampler, TimestepSampler, make_timestep_sampler
from diffuse.train.spec import RunSpec

QUARTERS = 4


@dataclass
class Draws:
    """The random quantities of a batch, one row per example.

    t:        timestep indices [B].
    weights:  importance weights [B] (ones for uniform timesteps).
    noise:    the Gaussian noise of q(x_t | x_0), [B, C, H, W].
    drop:     whether each label is replaced by the null class [B] (bool).
    """

    t: torch.Tensor
    weights: torch.Tensor
    noise: torch.Tensor
    drop: torch.Tensor

    def rows(self, index: slice) -> Draws:
        """The draws of rows ``index``."""
        return Draws(self.t[index], self.weights[index], self.noise[index], self.drop[index])


class Objective:
    """Base of the training objectives: the shared random draws.

    process:  the diffusion process whose x_t the model sees.
    sampler:  draws the timesteps (and importance weights).
    p_uncond: probability of dropping a label to the null class.
    """

    def __init__(
        self, process: GaussianDiffusion, sampler: TimestepSampler, p_uncond: float = 0.0
    ) -> None:
        self.process = process
        self.sampler = sampler
        self.p_uncond = float(p_uncond)

    def draw(
        self,
        batch_size: int,
        image_shape: tuple[int, ...],
        generator: torch.Generator,
        noise_generator: torch.Generator,
        device: torch.device,
    ) -> Draws:
        """Draw t, weights, noise and label drops for a global batch; t and the drops come
        from ``generator`` (CPU), the noise from ``noise_generator`` (on its device)."""
        t, weights = self.sampler.sample(batch_size, generator=generator, device=device)
        drop = torch.rand(batch_size, generator=generator) < self.p_uncond
        noise = randn((batch_size, *image_shape), noise_generator, device=device)
        return Draws(t, weights, noise, drop.to(device))

    def losses(
        self, model, x: torch.Tensor, y: torch.Tensor, draws: Draws
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(per-example loss to minimise [n], per-example statistics {name: [n]})."""
        raise NotImplementedError

    def observe(self, t: torch.Tensor, stats: dict[str, torch.Tensor]) -> None:
        """See a finished step's timesteps and statistics (all of them, in batch order)."""
        self.sampler.update(t, stats["loss"])

    def quarter(self, t: torch.Tensor) -> torch.Tensor:
        """Which quarter of [0, T) each timestep lies in: 0 .. 3."""
        return torch.div(t * QUARTERS, self.process.num_timesteps, rounding_mode="floor")


class DiffusionObjective(Objective):
    """The loss of the diffusion process (mse, kl or hybrid, as the process says).

    process:      the diffusion process.
    sampler:      draws the timesteps; a loss-aware sampler for ``kl``.
    p_uncond:     label-dropout probability (0 for a model without a null class).
    null_class:   the null label, or None.
    conditional:  whether the model takes class labels ``y``.
    low_res_size: side of the upsampler's low-resolution input, or None for a plain U-Net.
    min_snr_gamma: weight the MSE by the process's Min-SNR-gamma weights; 0: unweighted.
    """

    def __init__(
        self,
        process: GaussianDiffusion,
        sampler: TimestepSampler,
        *,
        p_uncond: float = 0.0,
        null_class: int | None = None,
        conditional: bool = False,
        low_res_size: int | None = None,
        min_snr_gamma: float = 0.0,
    ) -> None:
        super().__init__(process, sampler, p_uncond)
        self.null_class = null_class
        self.conditional = conditional
        self.low_res_size = low_res_size
        self.min_snr_gamma = float(min_snr_gamma)

    def model_kwargs(self, x: torch.Tensor, y: torch.Tensor, drop: torch.Tensor) -> dict:
        """The conditioning of the network: labels (some dropped) and the low-res image."""
        kwargs = {}
        if self.conditional:
            kwargs["y"] = (
                torch.where(drop, self.null_class, y) if self.null_class is not None else y
            )
        if self.low_res_size is not None:
            kwargs["low_res"] = downsample(x, self.low_res_size)
        return kwargs

    def losses(self, model, x, y, draws):
        mse_weights = None
        if self.min_snr_gamma > 0:
            mse_weights = self.process.min_snr_weights(draws.t, self.min_snr_gamma)
        terms = self.process.training_losses(
            model,
            x,
            draws.t,
            noise=draws.noise,
            model_kwargs=self.model_kwargs(x, y, draws.drop),
            mse_weights=mse_weights,
        )
        stats = {name: value.detach().float() for name, value in terms.items()}
        weighted = terms["loss"] * draws.weights
        if isinstance(self.sampler, LossAwareSampler):
            # The batch's unbiased estimate of the uniform-t loss (``loss`` itself averages
            # the steps as drawn, biased towards the costly ones): what Improved DDPM's
            # Fig. 6 plots, and what makes its noise comparable with a uniform run's.
            stats["loss_weighted"] = weighted.detach().float()
        return weighted, stats


class ClassifierObjective(Objective):
    """Cross-entropy of a noisy classifier on x_t at uniform t (ADM section 4.1).

    process: the diffusion process that makes x_t.
    sampler: draws the timesteps (uniform).
    """

    def losses(self, model, x, y, draws):
        x_t = self.process.q_sample(x, draws.t, draws.noise)
        logits = model(x_t, self.process.model_timesteps(draws.t)).float()
        loss = F.cross_entropy(logits, y, reduction="none")
        correct = (logits.argmax(dim=1) == y).float()
        return loss * draws.weights, {"loss": loss.detach(), "accuracy": correct}


def objective_for(spec: RunSpec, process: GaussianDiffusion) -> Objective:
    """The objective of a run: its task, its timestep sampler (``auto``: loss-aware for
    the ``kl`` loss of a diffusion model, else uniform), its label dropout."""
    choice = spec.train.timestep_sampler
    if choice == "auto":
        kl = spec.diffusion.loss == "kl" and spec.task == "diffusion"
        choice = "loss-aware" if kl else "uniform"
    sampler = make_timestep_sampler(choice, process.num_timesteps)
    if spec.task == "classifier":
        return ClassifierObjective(process, sampler)
    return DiffusionObjective(
        process,
        sampler,
        p_uncond=spec.p_uncond,
        null_class=spec.null_class,
        conditional=spec.model.num_classes is not None,
        low_res_size=low_res_size(spec.model) if spec.model.kind == "superres" else None,
        min_snr_gamma=spec.train.min_snr_gamma,
    )


def low_res_size(config) -> int:
    """Side of an upsampler's low-resolution input: its ``low_res_size``, else a quarter
    of the output (ADM's 64 -> 256)."""
    return config.low_res_size or config.image_size // 4


def downsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """Area downsampling of images [N, C, S, S] to [N, C, size, size] (ADM's low-res input)."""
    return F.interpolate(x, size=(size, size), mode="area")
