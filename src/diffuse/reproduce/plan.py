"""The vocabulary of the reproduction suite: what a claim declares, as plain data.

A :class:`Claim` names the models it needs (:class:`ModelPlan`: a preset, its data, the
settings it changes and a step budget), the measurements it makes on them (sample quality
of a :class:`Sampling` as a :class:`Quality` point, bits/dim as a :class:`Likelihood`,
a training statistic as a :class:`Curve`, a :class:`Progressive` figure), the reference
images FID is measured against, the plots to draw and the check that decides whether the
paper's trend holds. Nothing here runs anything: :mod:`diffuse.reproduce.runner` does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from diffuse.errors import ConfigError
from diffuse.train import DataSpec, RunSpec, spec_from_preset

TASKS = ("diffusion", "classifier")


def check_scale(scale: float) -> float:
    """A budget scale: a positive, finite number."""
    if not (isinstance(scale, int | float) and 0 < scale < math.inf):
        raise ConfigError(f"the budget scale must be a positive number, got {scale}")
    return float(scale)


@dataclass(frozen=True)
class ModelPlan:
    """A model to train.

    name:        its name in the suite (several claims may share a model).
    preset:      the preset it starts from (network, diffusion, training recipe).
    data:        the data set it trains on.
    steps:       optimizer steps at budget scale 1.
    settings:    changes to the preset, as ``diffuse train --set`` takes them.
    task:        "diffusion", or "classifier" for a noisy classifier.
    description: what it is, in a few words.
    """

    name: str
    preset: str
    data: str
    steps: int
    settings: Mapping[str, Any] = field(default_factory=dict)
    task: str = "diffusion"
    description: str = ""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"model {self.name}: unknown task {self.task!r}")
        if self.steps < 1:
            raise ConfigError(f"model {self.name}: needs at least one step, got {self.steps}")

    def steps_at(self, scale: float) -> int:
        """The steps trained at budget scale ``scale`` (at least one)."""
        return max(1, round(self.steps * scale))

    def folder(self, scale: float) -> str:
        """Its run folder's name: the name and the steps (another budget, another run)."""
        return f"{self.name}-{self.steps_at(scale)}steps"

    def spec(self, scale: float) -> RunSpec:
        """What :func:`diffuse.train.train` trains: the preset with the settings, the scaled
        steps, float32 (the same numbers on every machine: ``auto`` would pick bf16 where
        it is faster), about eight checkpoints over the run (how far an interrupted run
        falls back) and a sample grid only at the end."""
        steps = self.steps_at(scale)
        overrides = {
            "train.precision": "fp32",
            "train.sample_every": 0,
            **self.settings,
            "train.steps": steps,
            "train.checkpoint_every": max(1, math.ceil(steps / 8)),
        }
        return spec_from_preset(
            self.preset, DataSpec(self.data), task=self.task, overrides=overrides
        )


@dataclass(frozen=True)
class Sampling:
    """A set of samples of a model, drawn class-balanced (sample i of class i mod 10 when
    the model or its classifier knows classes), sample i from seed ``seed + i``.

    model:             the model (a :class:`ModelPlan` name).
    sampler, steps, eta: as ``diffuse sample`` takes them.
    variance:          a fixed variance ("fixed_small", "fixed_large") to sample a model
                       trained with L_simple (whose loss does not involve the variance)
                       with; None: the model's own.
    cfg:               classifier-free guidance weight w; None or 0: none (w = 0 is
                       conditional sampling, computed without the unconditional pass).
    classifier:        a noisy classifier (a model name) for classifier guidance.
    classifier_scale:  its scale s.
    skip:              fraction of the reverse process skipped: sampling starts from pure
                       noise that far down the chain (Improved DDPM Fig. 4).
    upsampler:         an upsampler (a model name) that makes the final images.
    upsampler_sampler, upsampler_steps: how it samples.
    n:                 number of samples.
    seed:              seed of sample 0.
    """

    model: str
    sampler: str = "ddim"
    steps: str = "50"
    eta: float = 0.0
    variance: str | None = None
    cfg: float | None = None
    classifier: str | None = None
    classifier_scale: float = 1.0
    skip: float = 0.0
    upsampler: str | None = None
    upsampler_sampler: str = "ddim"
    upsampler_steps: str = "50"
    n: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.cfg == 0:
            object.__setattr__(self, "cfg", None)
        if not 0.0 <= self.skip < 1.0:
            raise ConfigError(f"skip must be a fraction in [0, 1), got {self.skip}")

    @property
    def models(self) -> tuple[str, ...]:
        """Every model these samples need."""
        return tuple(m for m in (self.model, self.classifier, self.upsampler) if m is not None)


@dataclass(frozen=True)
class Reference:
    """Real images that sample quality is measured against (their Inception statistics).

    data:        a data set name.
    split:       its split.
    n:           its first ``n`` images (None: all).
    image_size:  fitted to this size as training fits them (None: native size).
    """

    data: str
    split: str = "train"
    n: int | None = None
    image_size: int | None = None

    def describe(self) -> str:
        count = "all" if self.n is None else f"the first {self.n:,}"
        size = f", fitted to {self.image_size}x{self.image_size}" if self.image_size else ""
        return f"{count} {self.split} images of {self.data}{size}"


@dataclass(frozen=True)
class Quality:
    """Sample quality (FID, precision/recall, Inception Score where the weights have
    logits) of one sample set: a point of the claim's table and plots.

    series:   the line of the plot (and group of the table) it belongs to.
    x:        its position on the plot's x axis (steps, a guidance scale, ...).
    sampling: the samples.
    """

    series: str
    x: float
    sampling: Sampling


@dataclass(frozen=True)
class Likelihood:
    """Bits/dim (the full variational bound, DDPM eq. 5) of test images under a model, and
    its rate-distortion curve (DDPM Table 4).

    series:    its name in the table.
    model:     the model.
    variance:  a fixed variance to evaluate an L_simple model with (None: its own).
    n:         the first ``n`` test images.
    """

    series: str
    model: str
    variance: str | None = None
    n: int = 100


@dataclass(frozen=True)
class Curve:
    """A statistic that training logged at every step (``metrics.jsonl``), e.g. the loss.

    series:    its name in the plot.
    model:     the model.
    statistic: the logged key; the first of them that the log holds.
    """

    series: str
    model: str
    statistic: tuple[str, ...] = ("loss",)


@dataclass(frozen=True)
class Progressive:
    """DDPM Fig. 6: the predicted x0 along the reverse process, one row per sample.

    model, sampler, steps: the model and how it is sampled.
    n:        rows.
    columns:  steps shown.
    """

    model: str
    sampler: str = "ddpm"
    steps: str = "1000"
    n: int = 10
    columns: int = 10


@dataclass(frozen=True)
class Plot:
    """A PNG of the claim's folder: one line per series of its Quality points (or its
    Curves) against x.

    file:    the file name.
    metric:  the y value: a quality metric ("fid", "precision", "recall", "is") or "curve".
    xlabel:  the x axis label.
    logx:    a logarithmic x axis.
    logy:    a logarithmic y axis.
    fraction: curves against the fraction of each model's training (models trained for
             different steps), not the step.
    """

    file: str
    metric: str
    xlabel: str
    logx: bool = False
    logy: bool = False
    fraction: bool = False


@dataclass(frozen=True)
class Measured:
    """A measured number and its noise: the standard deviation of its estimate (a FID's
    over bootstrap resamples of its samples), 0 where unknown. Differences, ratios and
    minima carry the noise along, to first order, as of independent estimates (each FID
    is of its own samples)."""

    value: float
    sd: float = 0.0

    @staticmethod
    def of(number: float | Measured) -> Measured:
        return number if isinstance(number, Measured) else Measured(float(number))

    def __sub__(self, other: float | Measured) -> Measured:
        other = Measured.of(other)
        return Measured(self.value - other.value, math.hypot(self.sd, other.sd))

    def __truediv__(self, other: float | Measured) -> Measured:
        other = Measured.of(other)
        sd = math.hypot(self.sd / other.value, self.value * other.sd / other.value**2)
        return Measured(self.value / other.value, sd)

    def __lt__(self, other: float | Measured) -> bool:
        return self.value < Measured.of(other).value


NOISE_SDS = 2.0
"""A difference within this many standard deviations of its noise (95 %) is not told apart
from none: the part that rests on it is marked as within the noise."""


@dataclass(frozen=True)
class Part:
    """One condition of a claim's check: what it says, whether it holds, and whether the
    difference it rests on is within the noise of the measurements (then it is no evidence
    either way at this scale)."""

    text: str
    holds: bool
    within_noise: bool = False


@dataclass(frozen=True)
class Verdict:
    """The outcome of a claim's check: its parts, and whether all of them hold."""

    parts: tuple[Part, ...]

    @property
    def holds(self) -> bool:
        return all(part.holds for part in self.parts)

    def summary(self) -> str:
        """ "holds" or "does not hold (k of n parts fail)", and how many of the parts rest
        on a difference within the noise."""
        failed = sum(not part.holds for part in self.parts)
        n = len(self.parts)
        summary = "holds" if not failed else f"does not hold ({failed} of {n} parts fail)"
        noise = noise_count(part.within_noise for part in self.parts)
        return f"{summary}; {noise}" if noise else summary


def noise_count(within_noise: Iterable[bool]) -> str:
    """ "k of the n parts within the noise" for parts' ``within_noise`` flags; "" for none."""
    flags = list(within_noise)
    return f"{sum(flags)} of the {len(flags)} parts within the noise" if any(flags) else ""


@dataclass(frozen=True)
class Claim:
    """One finding of a paper, as an experiment at this scale.

    name:       its name on the command line (``diffuse reproduce NAME``).
    number:     the claim's number in issue 13.
    title:      the finding, in one line.
    source:     the paper and where in it (table, figure).
    paper:      the paper's numbers, as they were published (Markdown).
    trend:      what should hold here, in words; :attr:`check` decides it.
    reference:  the real images FID is measured against (None: no FID).
    floor:      real images measured against ``reference`` as if they were samples: the
                best FID that the count and the metric allow.
    quality, likelihood, curves, figures: the measurements.
    plots:      the PNGs drawn from them.
    check:      the results -> :class:`Verdict` (see :class:`diffuse.reproduce.runner.Results`).
    """

    name: str
    number: int
    title: str
    source: str
    paper: str
    trend: str
    check: Callable[[Any], Verdict]
    reference: Reference | None = None
    floor: Reference | None = None
    quality: Sequence[Quality] = ()
    likelihood: Sequence[Likelihood] = ()
    curves: Sequence[Curve] = ()
    figures: Sequence[Progressive] = ()
    plots: Sequence[Plot] = ()

    def __post_init__(self) -> None:
        if self.quality and (self.reference is None or self.floor is None):
            raise ConfigError(f"claim {self.name}: quality points need a reference and a floor")

    @property
    def models(self) -> tuple[str, ...]:
        """Every model the claim needs, each once, in the order it first needs them."""
        names = [m for point in self.quality for m in point.sampling.models]
        names += [item.model for item in (*self.likelihood, *self.curves, *self.figures)]
        return tuple(dict.fromkeys(names))
