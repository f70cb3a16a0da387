"""One stage of generation: a diffusion network, its process, its sampler and guidance.

A :class:`Stage` checks every request it is given when it is made (a classifier where a
diffusion model belongs, classifier-free guidance on a network without the null class, a
classifier of another resolution, an unknown precision), so that bad input fails before
any sampling starts.

Precision: the network runs in float32, bf16 or fp16 autocast (:mod:`diffuse.autocast`;
the sampler's arithmetic and the guidance combination stay float32). ``"auto"``, the
default, is bf16 only where one network evaluation at the run's batch is measured faster
in bf16 on this device, decided once per machine and cached (:mod:`diffuse.autoprecision`,
workload kind ``"sample"``): fp32 on a CPU without bf16 instructions, bf16 on a CUDA
device that supports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property

import torch
from torch import nn

from diffuse import autoprecision
from diffuse.autocast import PRECISIONS, AutocastModel
from diffuse.diffusion import DiffusionConfig, GaussianDiffusion, randn, space_timesteps
from diffuse.diffusion.guidance import ClassifierFreeGuidance, ClassifierGuidance, guidance_interval
from diffuse.errors import ConfigError
from diffuse.sample.sampler import SamplerSettings

SAMPLING_PRECISIONS = ("auto", *PRECISIONS)


def _kind(network: nn.Module) -> str | None:
    config = getattr(network, "config", None)
    return getattr(config, "kind", None)


@dataclass(frozen=True, eq=False)
class Stage:
    """A diffusion network and how to sample from it.

    model:             the denoising network ``model(x, t, y=None[, low_res])``: a U-Net, or
                       the upsampler U-Net of ADM (which also takes ``low_res``).
    diffusion:         the diffusion settings the network was trained with.
    sampler:           which sampler, over which steps (:class:`SamplerSettings`).
    cfg:               classifier-free guidance weight w (Ho & Salimans eq. 6; w = 0 is
                       conditional sampling, diffusers' scale is 1 + w); None: no guidance.
    cfg_interval:      (sigma_low, sigma_high): apply classifier-free guidance only at noise
                       levels sigma = sqrt((1 - abar) / abar) in this interval (Kynkaanniemi
                       et al. 2024); None: at every step.
    classifier:        a noisy classifier for classifier guidance (ADM), or None.
    classifier_scale:  s of classifier guidance.
    precision:         "auto" (see the module docstring), "fp32", "bf16" or "fp16" (CUDA
                       only): the autocast precision of the diffusion network.
    """

    model: nn.Module
    diffusion: DiffusionConfig
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    cfg: float | None = None
    cfg_interval: tuple[float, float] | None = None
    classifier: nn.Module | None = None
    classifier_scale: float = 1.0
    precision: str = "auto"

    def __post_init__(self) -> None:
        if _kind(self.model) == "classifier":
            raise ConfigError(
                "the network given as the diffusion model is a noisy classifier; give a "
                "diffusion model (and the classifier as the classifier)"
            )
        if _kind(self.model) not in ("unet", "superres"):
            raise ConfigError(
                f"{type(self.model).__name__} is not a diffusion network of this library "
                "(a U-Net or upsampler with .config)"
            )
        self.diffusion.check_output_channels(self.model.in_channels, self.model.out_channels)
        space_timesteps(self.diffusion.timesteps, self.sampler.respacing)  # bad steps fail here
        self._check_cfg()
        self._check_classifier()
        self._check_precision()

    def _check_precision(self) -> None:
        if self.precision not in SAMPLING_PRECISIONS:
            raise ConfigError(
                f"unknown precision {self.precision!r}; choose one of "
                f"{', '.join(SAMPLING_PRECISIONS)}"
            )
        if self.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError(
                f"fp16 autocast is for CUDA devices, this model is on {self.device.type}; use "
                "bf16 or fp32 (or auto)"
            )

    def _check_cfg(self) -> None:
        if self.cfg is None:
            if self.cfg_interval is not None:
                raise ConfigError("a guidance interval needs classifier-free guidance: set cfg")
            return
        if not math.isfinite(self.cfg):
            raise ConfigError(f"the classifier-free guidance weight must be finite, got {self.cfg}")
        if self.model.num_classes is None:
            raise ConfigError(
                "classifier-free guidance needs a class-conditional model; this one is "
                "unconditional (use a classifier for guidance instead)"
            )
        if self.model.null_class is None:
            raise ConfigError(
                "classifier-free guidance needs a model trained with the null class (label "
                "dropout, null_class=True); this one has none: sample it without cfg"
            )
        if self.cfg_interval is not None:
            guidance_interval(self.full_process, *self.cfg_interval)

    def _check_classifier(self) -> None:
        if self.classifier is None:
            return
        kind = _kind(self.classifier)
        if kind != "classifier":
            raise ConfigError(
                f"the classifier given is a {kind or type(self.classifier).__name__} network, "
                "not a noisy classifier"
            )
        mine = (self.model.in_channels, self.model.image_size)
        theirs = (self.classifier.in_channels, self.classifier.image_size)
        if mine != theirs:
            raise ConfigError(
                f"the classifier takes {theirs[0]}-channel {theirs[1]}x{theirs[1]} images but "
                f"the model makes {mine[0]}-channel {mine[1]}x{mine[1]} ones; use a "
                "classifier trained at the model's resolution"
            )
        model_classes = self.model.num_classes
        if model_classes is not None and model_classes != self.classifier.num_classes:
            raise ConfigError(
                f"the classifier has {self.classifier.num_classes} classes and the model "
                f"{model_classes}; they must be the same classes"
            )
        if not math.isfinite(self.classifier_scale):
            raise ConfigError(f"the classifier scale must be finite, got {self.classifier_scale}")

    @cached_property
    def full_process(self) -> GaussianDiffusion:
        """The training process of the network."""
        return self.diffusion.build()

    @cached_property
    def process(self) -> GaussianDiffusion:
        """The process the sampler walks: the training one respaced to its steps."""
        return self.sampler.process(self.full_process)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the images this stage makes."""
        return (self.model.in_channels, self.model.image_size, self.model.image_size)

    @property
    def label_classes(self) -> int | None:
        """How many classes a sample can be steered to: the model's, else the classifier's;
        None when neither knows classes."""
        if self.model.num_classes is not None:
            return self.model.num_classes
        return None if self.classifier is None else self.classifier.num_classes

    @property
    def is_upsampler(self) -> bool:
        """Whether the network is an upsampler (needs a low-resolution image)."""
        return _kind(self.model) == "superres"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def decide_precision(self, batch: int) -> autoprecision.Decision:
        """The precision this stage samples ``batch`` images in: its own, or for "auto" what
        :func:`diffuse.autoprecision.decide` finds for one step of the network (which with
        classifier-free guidance evaluates twice the batch), measured on this device once
        and cached. For "auto" the network's weights are moved, in place, to the memory
        format that decision timed fastest."""
        if self.precision != "auto":
            return autoprecision.Decision(self.precision, "requested", memory_format=None)
        rows = 2 * batch if self.cfg not in (None, 0.0) else batch
        decision = autoprecision.decide(
            self.device,
            network=self.model.config.to_dict(),
            batch=rows,
            make_workload=lambda: self._network_step(rows),
            kind="sample",
        )
        decision.apply(self.model)
        return decision

    def with_precision_for(self, batch: int) -> Stage:
        """This stage with "auto" replaced by what it decides for batches of ``batch``
        images (itself when its precision is explicit), so that every batch of a run
        samples in the same precision."""
        if self.precision != "auto":
            return self
        return replace(self, precision=self.decide_precision(batch).precision)

    def _network_step(self, rows: int) -> autoprecision.Workload:
        """``step(precision, memory_format)``: one evaluation of the network on ``rows``
        noisy images at mid-chain in that precision, with its weights in that memory
        format, on fixed inputs of its own (what "auto" times)."""
        generator = torch.Generator().manual_seed(0)
        x = torch.randn((rows, *self.image_shape), generator=generator).to(self.device)
        t = torch.full((rows,), self.diffusion.timesteps // 2, device=self.device)
        labels = torch.zeros(rows, dtype=torch.long) if self.model.num_classes else None
        low_res = None
        if self.is_upsampler:
            size = self.model.low_res_size or self.model.image_size
            low_res = torch.zeros(rows, self.model.in_channels, size, size)
        kwargs = self.model_kwargs(labels, low_res)
        copy_in = autoprecision.copies_by_format(self.model)

        def step(precision: str, memory_format: torch.memory_format) -> None:
            with torch.inference_mode():
                network = AutocastModel.named(copy_in(memory_format), precision, self.device)
                network(x, t, **kwargs)

        return step

    def guided_model(self, batch: int):
        """The network as the sampler calls it on batches of ``batch`` images: in the
        precision this stage decides for them (autocast, float32 out), wrapped for
        classifier-free guidance when requested (its combination stays float32)."""
        precision = self.decide_precision(batch).precision
        network = AutocastModel.named(self.model, precision, self.device)
        if self.cfg is None:
            return network
        interval = None
        if self.cfg_interval is not None:
            interval = guidance_interval(self.full_process, *self.cfg_interval)
        return ClassifierFreeGuidance(
            network, self.cfg, self.model.null_class, self.model.in_channels, interval
        )

    def start_noise(self, generators) -> torch.Tensor:
        """x_T for one sample per generator, drawn on the CPU generators, on the device."""
        return randn((len(generators), *self.image_shape), generators, device=self.device)

    def sample(
        self,
        generators,
        labels: torch.Tensor | None = None,
        *,
        low_res: torch.Tensor | None = None,
        x_T: torch.Tensor | None = None,
        start_step: int | None = None,
        progress: bool = False,
        callback=None,
    ) -> torch.Tensor:
        """Images in [-1, 1], [N, C, H, W]: sample i from ``generators[i]`` (its x_T, then
        its sampler noise), steered to ``labels[i]``.

        generators: one ``torch.Generator`` per sample.
        labels:     [N] class labels; needed by a class-conditional network or a classifier.
        low_res:    [N, C, h, w] low-resolution images in [-1, 1] for an upsampler.
        x_T:        the starting noise, when not drawn from ``generators``; with
                    ``start_step``, the latent at that index of the stage's chain.
        start_step: the index of the chain to start from (default: the last, x_T).
        progress:   show the sampler's progress bar.
        callback:   called after every step (see :mod:`diffuse.diffusion.samplers`).
        """
        if x_T is None:
            x_T = self.start_noise(generators)
        return self.sampler.run(
            self.guided_model(len(x_T)),
            self.process,
            x_T,
            start_step=start_step,
            model_kwargs=self.model_kwargs(labels, low_res),
            generator=generators,
            guide=self.guide(labels),
            progress=progress,
            callback=callback,
        )

    def model_kwargs(self, labels: torch.Tensor | None, low_res: torch.Tensor | None) -> dict:
        """The conditioning the network takes: its labels and low-resolution images."""
        kwargs = {}
        if self.model.num_classes is not None:
            if labels is None:
                raise ConfigError("this model is class-conditional: give the labels")
            kwargs["y"] = labels.to(self.device)
        if self.is_upsampler:
            if low_res is None:
                raise ConfigError("an upsampler needs the low-resolution images")
            kwargs["low_res"] = low_res.to(self.device)
        return kwargs

    def guide(self, labels: torch.Tensor | None):
        """The classifier-guidance hook toward ``labels``, or None without a classifier."""
        if self.classifier is None:
            return None
        if labels is None:
            raise ConfigError("classifier guidance needs target labels")
        return ClassifierGuidance(
            self.classifier,
            labels.to(self.device),
            self.classifier_scale,
            clip_denoised=self.sampler.clip_denoised,
        )
