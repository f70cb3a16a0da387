"""FID while training: every ``train.eval_every`` steps, how good the EMA model's samples are.

The DDPM/DDIM/CFG article that issue 14 follows could not do this ("unlike GANs, you are
not generating images during training, so you can't continuously collect FID scores");
here a measurement is one call between two steps:

1. the EMA weights (of the largest rate, as the sample grids use) draw a fixed set of
   ``train.eval_samples`` images: sample i from the generator seeded with
   (seed, FID_SAMPLES) + i and of class i mod K for a K-class model, so every
   measurement of a run sees the same seeds and the same class balance, and differences
   between measurements are the model's;
2. their Inception features give FID (Heusel et al. 2017) and improved precision and
   recall (Kynkaanniemi et al. 2019, k = 3) against reference statistics of the run's own
   training images, as the network saw them (``train.eval_reference`` of them, evenly
   spread over the set, so a folder sorted by class is covered whole); the statistics are
   computed once and cached (:mod:`diffuse.eval.cache`), keyed by a hash of the pixels.

Nothing of it touches training's random streams: every draw comes from its own seeded
generators (:mod:`diffuse.train.randomness` keys training's draws by step, never by a
global state), and the network measured is a copy in eval mode. So a run with
measurements trains exactly the weights of a run without, and an interrupted and
resumed run measures exactly what an uninterrupted one does.

Only process 0 measures; the trainer makes the others wait at a barrier, so under
``torchrun`` a measurement must end within the process group's timeout (torch's
defaults: 10 minutes with NCCL, 30 with gloo): size ``train.eval_samples`` to fit.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from diffuse.data import ImageDataset
from diffuse.diffusion import space_timesteps
from diffuse.errors import ConfigError
from diffuse.eval.cache import array_fingerprint
from diffuse.eval.evaluate import SmallSampleWarning, evaluate, small_sample_message
from diffuse.eval.features import InceptionExtractor
from diffuse.eval.reference import ReferenceSource, ReferenceStatistics, source_reference
from diffuse.sample import SamplerSettings, Stage, generate
from diffuse.train import randomness
from diffuse.train.spec import RunSpec
from diffuse.train.train_config import TrainConfig

METRICS = ("fid", "pr")


def evaluation_due(config: TrainConfig, step: int, stopping: bool) -> bool:
    """Whether the step just finished (``step`` done) is measured: every ``eval_every``
    steps and at the last, but not when a signal stops the run (it should stop soon)."""
    if config.eval_every == 0 or stopping:
        return False
    return step % config.eval_every == 0 or step == config.steps


def check_fid_settings(spec: RunSpec) -> None:
    """Raise :class:`ConfigError` when ``spec`` asks for measurements it cannot have:
    a network that draws no images from noise alone, guidance without a null class, or
    more sampling steps than the chain has. Reads only the spec."""
    config = spec.train
    if spec.task == "classifier":
        raise ConfigError(
            "train.eval_every measures FID of a diffusion model's samples, and a noisy "
            "classifier draws none; drop train.eval_every (its held-out accuracy is "
            "measured at the end)"
        )
    if spec.model.kind == "superres":
        raise ConfigError(
            "train.eval_every measures samples drawn from noise alone, and an upsampler needs "
            "low-resolution inputs; drop train.eval_every, or measure the two-stage pipeline "
            "with `diffuse sample --upsampler` and `diffuse eval`"
        )
    if config.eval_cfg > 0 and spec.null_class is None:
        raise ConfigError(
            f"train.eval_cfg {config.eval_cfg:g} needs a model with a null class (classifier-"
            "free guidance); set train.eval_cfg=0, or train one with model.null_class=true"
        )
    settings = SamplerSettings(config.eval_sampler, config.eval_steps)
    try:
        space_timesteps(spec.diffusion.timesteps, settings.respacing)
    except ConfigError as error:
        raise ConfigError(
            f"train.eval_steps {config.eval_steps}: {error}; choose at most "
            f"{spec.diffusion.timesteps}"
        ) from None


def training_reference(
    dataset: ImageDataset,
    count: int,
    extractor: InceptionExtractor,
    *,
    progress: bool = False,
    report: Callable[[str], None] | None = None,
) -> ReferenceStatistics:
    """FID and precision/recall statistics of ``count`` images of ``dataset`` (all when it
    holds fewer), evenly spread over it, as the network sees them; from the cache, or
    computed and cached (``report`` is told which)."""
    n = min(count, len(dataset))
    # spacing (len - 1) / (n - 1) >= 1, so the rounded positions are distinct
    indices = np.linspace(0, len(dataset) - 1, n).round().astype(np.int64)
    images = dataset.uint8(indices)
    info = {
        "dataset": dataset.name,
        "split": dataset.split,
        "image_size": dataset.image_size,
        "selection": "evenly spread training images",
    }
    label = f"{dataset.name}-{dataset.split}-n{n}-{dataset.image_size}px-spread"
    source = ReferenceSource(info, label, lambda: images, lambda: array_fingerprint(images))
    return source_reference(
        source, n, metrics=METRICS, extractor=extractor, progress=progress, report=report
    )


class FidTracker:
    """Measures the samples of a training run's model (see the module docstring).

    spec:       the run (its ``train.eval_*`` settings, process and network).
    dataset:    the training images; the reference statistics are of them.
    device:     where the Inception network runs (the model's device).
    batch_size: samples drawn at once: the trainer's per-process batch, whose training
                step (with gradients) already fits in memory.
    progress:   show a bar while reference features are first computed.
    report:     told in one line where the reference statistics came from.
    """

    def __init__(
        self,
        spec: RunSpec,
        dataset: ImageDataset,
        device: torch.device,
        *,
        batch_size: int,
        progress: bool = False,
        report: Callable[[str], None] | None = None,
    ) -> None:
        check_fid_settings(spec)
        config = spec.train
        self.diffusion = spec.diffusion
        self.samples = config.eval_samples
        self.settings = SamplerSettings(config.eval_sampler, config.eval_steps)
        self.cfg = config.eval_cfg if config.eval_cfg > 0 else None
        classes = getattr(spec.model, "num_classes", None)
        self.classes = None if classes is None else list(range(classes))
        self.seed = randomness.derive_seed(config.seed, randomness.FID_SAMPLES)
        self.batch_size = batch_size
        self.extractor = InceptionExtractor(device=device)
        self.reference = training_reference(
            dataset, config.eval_reference, self.extractor, progress=progress, report=report
        )
        dimensions = self.reference.pool.mu.shape[0]
        caution = small_sample_message(self.samples, self.reference.n, dimensions)
        if caution is not None:  # once per run, not at every measurement
            warnings.warn(caution, SmallSampleWarning, stacklevel=2)

    @torch.no_grad()
    def measure(self, model: nn.Module, step: int) -> dict[str, float]:
        """The metrics record of ``model`` (in eval mode) at ``step``: ``step``, ``fid``,
        ``sample_precision``, ``sample_recall`` (named apart from a classifier's precision
        in the same metrics file), ``eval_samples`` and ``eval_seconds``."""
        started = time.perf_counter()
        stage = Stage(model, self.diffusion, self.settings, cfg=self.cfg)
        drawn = generate(
            stage, self.samples, seed=self.seed, classes=self.classes, batch_size=self.batch_size
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SmallSampleWarning)  # said once, at the start
            results = evaluate(
                drawn.images,
                self.reference,
                metrics=METRICS,
                extractor=self.extractor,
                progress=False,
            )
        return {
            "step": step,
            "fid": results["fid"],
            "sample_precision": results["precision"],
            "sample_recall": results["recall"],
            "eval_samples": self.samples,
            "eval_seconds": time.perf_counter() - started,
        }
