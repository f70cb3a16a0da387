"""Standard normal noise that is reproducible per sample.

A generator may be a single :class:`torch.Generator` (one stream for the whole batch) or
a sequence of them, one per sample, so that sample i of a run is the same whatever the
batch it is drawn in (as in EDM's generation: one random generator per seed).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Generator = torch.Generator | Sequence[torch.Generator] | None


def randn(
    shape: Sequence[int],
    generator: Generator = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw N(0, I) noise of ``shape``; row i from ``generator[i]`` when a sequence is given.

    Noise is drawn on the generator's device and moved to ``device``, so a CPU generator
    gives the same numbers whichever device the model runs on.
    """
    shape = tuple(shape)
    if generator is None or isinstance(generator, torch.Generator):
        draw_device = generator.device if generator is not None else device
        noise = torch.randn(shape, generator=generator, device=draw_device, dtype=dtype)
    else:
        generators = list(generator)
        if len(generators) != shape[0]:
            raise ValueError(f"got {len(generators)} generators for a batch of {shape[0]}")
        noise = torch.stack(
            [torch.randn(shape[1:], generator=g, device=g.device, dtype=dtype) for g in generators]
        )
    return noise if device is None else noise.to(device)


def randn_like(x: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """N(0, I) noise shaped like ``x``, on its device and dtype."""
    return randn(x.shape, generator, device=x.device, dtype=x.dtype)


def seeded_generators(
    seeds: Sequence[int], device: str | torch.device = "cpu"
) -> list[torch.Generator]:
    """One generator per seed, e.g. ``seeded_generators(range(start, start + n))``."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
