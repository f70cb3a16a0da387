"""Generation from a base stage and, optionally, an upsampler (ADM's two-stage pipeline).

Sample i of a run draws everything from its own generator seeded with ``seed + i`` (EDM's
one generator per seed): its class when classes are drawn at random, its x_T, the
sampler's noise, then the upsampler's. So sample i is the same whatever the batch size,
and ``--seed 0 --n 100`` extends ``--seed 0 --n 50``.

Upsampling (Dhariwal & Nichol 2021, appendix A; Nichol & Dhariwal 2021, section 6): the
base stage's samples, rounded to 8 bits as if saved and read back, are the ``low_res``
condition of the upsampler stage; each stage keeps its own sampler and step count.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from diffuse.diffusion import seeded_generators
from diffuse.errors import ConfigError, is_int_at_least
from diffuse.rendering import to_uint8
from diffuse.sample.stage import Stage


@dataclass(frozen=True)
class Samples:
    """Generated images.

    images: uint8 [N, H, W, C].
    labels: int64 [N], the class of each sample, or None when unconditional.
    """

    images: np.ndarray
    labels: np.ndarray | None


def check_request(
    base: Stage,
    n: int,
    *,
    classes: Sequence[int] | None = None,
    batch_size: int = 64,
    upsampler: Stage | None = None,
    start_step: int | None = None,
) -> None:
    """Raise :class:`ConfigError` for a request that cannot be served, before any work."""
    if not is_int_at_least(n, 1):
        raise ConfigError(f"the number of samples must be a positive integer, got {n!r}")
    if not is_int_at_least(batch_size, 1):
        raise ConfigError(f"the batch size must be a positive integer, got {batch_size!r}")
    if base.is_upsampler:
        raise ConfigError(
            "the base model is an upsampler: sample a base model and give the upsampler as "
            "the upsampler stage"
        )
    last = base.process.num_timesteps - 1
    if start_step is not None and not (is_int_at_least(start_step, 0) and start_step <= last):
        raise ConfigError(
            f"the start step must be an index of the {last + 1} steps the sampler walks "
            f"(0 .. {last}), got {start_step!r}"
        )
    known = base.label_classes
    if classes is not None:
        if len(classes) == 0:
            raise ConfigError("the list of classes is empty")
        if known is None:
            raise ConfigError(
                "the model is unconditional and no classifier is given: it cannot be steered "
                "to classes (drop the classes, or add a classifier)"
            )
        bad = [c for c in classes if not 0 <= c < known]
        if bad:
            raise ConfigError(f"classes {bad} are out of range: this model knows 0 .. {known - 1}")
    if upsampler is not None:
        _check_upsampler(base, upsampler, classes)


def _check_upsampler(base: Stage, upsampler: Stage, classes: Sequence[int] | None) -> None:
    if not upsampler.is_upsampler:
        raise ConfigError("the upsampler given is not an upsampler network (superres)")
    size = upsampler.model.low_res_size
    if size is not None and size != base.model.image_size:
        raise ConfigError(
            f"the upsampler takes {size}x{size} images but the base model makes "
            f"{base.model.image_size}x{base.model.image_size} ones"
        )
    if upsampler.model.in_channels != base.model.in_channels:
        raise ConfigError(
            f"the upsampler takes {upsampler.model.in_channels}-channel images but the base "
            f"model makes {base.model.in_channels}-channel ones"
        )
    needed = upsampler.label_classes
    if needed is None:
        return
    if base.label_classes is None:
        raise ConfigError(
            "the upsampler is class-conditional but the base model has no classes to pass on"
        )
    largest = max(classes) if classes is not None else base.label_classes - 1
    if largest >= needed:
        raise ConfigError(
            f"the upsampler knows {needed} classes, the base model's samples can be of class "
            f"{largest}"
        )


def sample_labels(
    stage: Stage, generators, first_index: int, classes: Sequence[int] | None
) -> torch.Tensor | None:
    """The labels of samples ``first_index ..`` (one per generator): ``classes`` in turn
    when given, else a class drawn uniformly from each sample's generator; None when the
    stage knows no classes."""
    known = stage.label_classes
    if known is None:
        return None
    if classes is not None:
        indices = range(first_index, first_index + len(generators))
        return torch.tensor([classes[i % len(classes)] for i in indices], dtype=torch.long)
    return torch.cat([torch.randint(known, (1,), generator=g) for g in generators])


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] rounded to the 256 levels of an 8-bit file, still in [-1, 1]."""
    return ((images + 1.0) * 127.5).round().clamp(0, 255) / 127.5 - 1.0


def generate_batches(
    base: Stage,
    n: int,
    *,
    seed: int = 0,
    classes: Sequence[int] | None = None,
    batch_size: int = 64,
    upsampler: Stage | None = None,
    start_step: int | None = None,
    progress: bool = False,
) -> Iterator[Samples]:
    """The ``n`` samples of :func:`generate`, yielded batch by batch as each finishes (so a
    caller can save them at once, and keep them when the run is interrupted).

    The request is checked before the first batch; the batches are samples ``0 ..`` in
    order, ``batch_size`` each but the last. A stage of precision "auto" decides once,
    for full batches, so that every batch runs in the same precision.
    """
    check_request(
        base, n, classes=classes, batch_size=batch_size, upsampler=upsampler, start_step=start_step
    )
    base = base.with_precision_for(min(n, batch_size))
    if upsampler is not None:
        upsampler = upsampler.with_precision_for(min(n, batch_size))
    with tqdm(total=n, desc="samples", unit="img", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            generators = seeded_generators(range(seed + start, seed + min(start + batch_size, n)))
            labels = sample_labels(base, generators, start, classes)
            x = base.sample(generators, labels, start_step=start_step, progress=progress)
            if upsampler is not None:
                x = upsampler.sample(generators, labels, low_res=quantize(x), progress=progress)
            bar.update(len(generators))
            yield Samples(to_uint8(x), None if labels is None else labels.numpy())


def join_samples(batches: Sequence[Samples]) -> Samples:
    """Consecutive batches of samples as one :class:`Samples`."""
    labels = [batch.labels for batch in batches if batch.labels is not None]
    return Samples(
        np.concatenate([batch.images for batch in batches]),
        np.concatenate(labels) if labels else None,
    )


def generate(
    base: Stage,
    n: int,
    *,
    seed: int = 0,
    classes: Sequence[int] | None = None,
    batch_size: int = 64,
    upsampler: Stage | None = None,
    start_step: int | None = None,
    progress: bool = False,
) -> Samples:
    """``n`` samples of ``base`` (upsampled by ``upsampler`` when given).

    base:        the stage that makes images from noise.
    n:           how many samples.
    seed:        sample i uses the generator seeded with ``seed + i``.
    classes:     labels, assigned in turn (sample i gets ``classes[i % len(classes)]``);
                 None draws a random class per sample when the model or classifier knows
                 classes.
    batch_size:  samples per network batch (bounds memory; does not change any sample).
    upsampler:   the second stage, conditioned on the base samples.
    start_step:  the index of the base stage's chain at which sampling starts, from pure
                 noise (default: the last, x_T); a lower index skips the first steps of the
                 reverse process, as Improved DDPM's Fig. 4 skips a prefix of it.
    progress:    show progress bars.
    """
    batches = generate_batches(
        base,
        n,
        seed=seed,
        classes=classes,
        batch_size=batch_size,
        upsampler=upsampler,
        start_step=start_step,
        progress=progress,
    )
    return join_samples(list(batches))
