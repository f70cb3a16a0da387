"""What each experiment is expected to cost, in minutes of wall time on a 2-core CPU.

The estimates multiply the work a claim declares (training images, network evaluations
while sampling, images through the Inception network, timesteps of the likelihood bound)
by unit costs measured on this machine. :data:`UNITS` were measured on 2026-12-01 on a
2-core AMD EPYC (torch 2.13.0, float32) with ``python benchmarks/reproduce_costs.py``: CPU
milliseconds per image on one thread, for a training step at batch 64 and for one network
evaluation in inference mode; the machine was shared, so the wall time on two cores is
taken as the one-thread CPU time over :data:`TWO_CORE_SPEEDUP` (the measured 2-thread
training rate of ``digits``, 419 images/s, is its one-thread CPU time over 1.9). The
Inception network runs 10.2 images/s on two threads (``benchmarks/bench_inception.py``).
The result of each claim records what it really took, beside this estimate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from diffuse.diffusion import space_timesteps
from diffuse.errors import ConfigError
from diffuse.reproduce.plan import Claim, Likelihood, ModelPlan, Progressive, Sampling
from diffuse.sample import SamplerSettings
from diffuse.train import recipe

TWO_CORE_SPEEDUP = 1.8
INCEPTION_MS = 1000 / 10.2  # per image, two threads, preprocessing included
GUIDANCE_FACTOR = 3.0  # a classifier's gradient: its forward and backward pass


@dataclass(frozen=True)
class Unit:
    """One-thread CPU milliseconds per image: a training step, a network evaluation."""

    train_ms: float
    forward_ms: float


UNITS: dict[tuple[str, str], Unit] = {
    ("tiny", "diffusion"): Unit(1.33, 0.461),
    ("digits", "diffusion"): Unit(3.97, 1.09),
    ("fashion-14", "diffusion"): Unit(13.0, 3.11),
    ("fashion-14", "classifier"): Unit(4.32, 1.18),
    ("fashion-upsampler-14-28", "diffusion"): Unit(35.0, 9.52),
    ("fashion", "diffusion"): Unit(56.2, 15.7),
    ("fashion-article-res-conv", "diffusion"): Unit(44.3, 10.6),
    ("fashion-article-res", "diffusion"): Unit(25.0, 7.15),
    ("fashion-article-res-res", "diffusion"): Unit(36.3, 8.68),
    ("fashion-article-res-res-atn", "diffusion"): Unit(35.1, 10.8),
    ("fashion-article-res-large", "diffusion"): Unit(52.4, 15.1),
}


# A noisy classifier is its preset's encoder half: measured 0.44 (training) and 0.46
# (forward) of the diffusion network's cost for fashion-14.
CLASSIFIER_FRACTION = 0.45


def unit(plan: ModelPlan) -> Unit:
    """The unit costs of a model's preset and task (variants of a preset cost alike; an
    unmeasured classifier costs :data:`CLASSIFIER_FRACTION` of its preset's network)."""
    if (plan.preset, plan.task) in UNITS:
        return UNITS[(plan.preset, plan.task)]
    if plan.task == "classifier" and (plan.preset, "diffusion") in UNITS:
        network = UNITS[(plan.preset, "diffusion")]
        return Unit(
            network.train_ms * CLASSIFIER_FRACTION, network.forward_ms * CLASSIFIER_FRACTION
        )
    raise ConfigError(
        f"no measured cost for the {plan.task} of preset {plan.preset!r} (model {plan.name}); "
        f"measure it with python benchmarks/reproduce_costs.py --presets {plan.preset} and "
        "add it to diffuse.reproduce.costs.UNITS"
    )


def _ms(cpu_ms: float) -> float:
    return cpu_ms / TWO_CORE_SPEEDUP


def training_minutes(plan: ModelPlan, scale: float) -> float:
    batch = int(plan.settings.get("train.batch_size", recipe(plan.preset, plan.task).batch_size))
    return plan.steps_at(scale) * batch * _ms(unit(plan).train_ms) / 60_000


def evaluations(sampler: str, steps: str, skip: float = 0.0) -> int:
    """Network evaluations per sample of a sampler over its steps (T = 1000)."""
    walked = len(space_timesteps(1000, SamplerSettings(sampler, steps).respacing))
    return round(walked * (1.0 - skip))


def sampling_minutes(sampling: Sampling, models: Mapping[str, ModelPlan]) -> float:
    base = unit(models[sampling.model]).forward_ms * (2 if sampling.cfg is not None else 1)
    if sampling.classifier is not None:
        base += GUIDANCE_FACTOR * unit(models[sampling.classifier]).forward_ms
    ms = evaluations(sampling.sampler, sampling.steps, sampling.skip) * base
    if sampling.upsampler is not None:
        up = unit(models[sampling.upsampler]).forward_ms
        ms += evaluations(sampling.upsampler_sampler, sampling.upsampler_steps) * up
    return sampling.n * _ms(ms) / 60_000


def inception_minutes(images: int) -> float:
    return images * INCEPTION_MS / 60_000


def likelihood_minutes(item: Likelihood, models: Mapping[str, ModelPlan]) -> float:
    return item.n * 1000 * _ms(unit(models[item.model]).forward_ms) / 60_000


def figure_minutes(item: Progressive, models: Mapping[str, ModelPlan]) -> float:
    return (
        item.n
        * evaluations(item.sampler, item.steps)
        * _ms(unit(models[item.model]).forward_ms)
        / 60_000
    )


@dataclass
class Estimate:
    """Minutes of wall time by kind of work."""

    training: float = 0.0
    sampling: float = 0.0
    evaluation: float = 0.0
    likelihood: float = 0.0

    @property
    def total(self) -> float:
        return self.training + self.sampling + self.evaluation + self.likelihood


def estimate(
    claims: Iterable[Claim], models: Mapping[str, ModelPlan], scale: float = 1.0
) -> Estimate:
    """The cost of running ``claims`` from nothing: each model, sample set, score and
    reference counted once, however many of the claims share it. The reference statistics
    (computed once per machine and cached) are included."""
    done: set = set()
    cost = Estimate()

    def first(key) -> bool:
        if key in done:
            return False
        done.add(key)
        return True

    for claim in claims:
        for name in claim.models:
            if first(("model", name)):
                cost.training += training_minutes(models[name], scale)
        for reference in (claim.reference, claim.floor):
            if reference is not None and first(("reference", reference)):
                cost.evaluation += inception_minutes(reference.n or 2000)
        for point in claim.quality:
            if first(("samples", point.sampling)):
                cost.sampling += sampling_minutes(point.sampling, models)
            if first(("score", point.sampling, claim.reference)):
                cost.evaluation += inception_minutes(point.sampling.n)
        for item in claim.likelihood:
            if first(("nll", item)):
                cost.likelihood += likelihood_minutes(item, models)
        for item in claim.figures:
            if first(("figure", item)):
                cost.sampling += figure_minutes(item, models)
    return cost
