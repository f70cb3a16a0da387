"""Sample grids written while training: what the model draws at this step.

A class-conditional model gets one row per class (at most ``MAX_ROWS`` classes, evenly
spread), each row labelled with the class name and sampled with classifier-free
guidance when the model has a null class (weight ``cfg_weight``, Ho & Salimans 2021 eq. 6).
An unconditional model gets a square grid. An upsampler gets three rows: the
low-resolution inputs (enlarged), its samples, and the originals. Every sample draws its
noise from its own seed, so a grid is the same whatever the batch size, and the grids
of one run use the same seeds step after step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffuse.diffusion.diffusion_config import DiffusionConfig
from diffuse.diffusion.noise import seeded_generators
from diffuse.rendering import add_row_labels, make_grid, to_uint8, upscale
from diffuse.sample.sampler import SamplerSettings
from diffuse.sample.stage import Stage
from diffuse.train.objectives import downsample, low_res_size
from diffuse.train.randomness import PREVIEW, derive_seed

MAX_ROWS = 10
MIN_PIXELS = 32  # small images are enlarged to at least this size in the grid


@torch.no_grad()
def sample_images(
    model: nn.Module,
    diffusion: DiffusionConfig,
    count: int,
    *,
    labels: torch.Tensor | None = None,
    low_res: torch.Tensor | None = None,
    sampler: str = "ddim",
    steps: int = 50,
    cfg_weight: float = 0.0,
    seed: int = 0,
    batch_size: int = 256,
) -> torch.Tensor:
    """Draw ``count`` images [count, C, S, S] in [-1, 1] from ``model`` (in eval mode), in
    float32, through the sampling path of ``diffuse sample`` (:class:`Stage`).

    model:      a U-Net or upsampler (its ``config`` gives the image shape).
    diffusion:  the process it was trained with.
    labels:     class of each sample [count] for a class-conditional model.
    low_res:    low-resolution inputs [count, C, s, s] for an upsampler.
    sampler:    a sampler of :data:`~diffuse.sample.sampler.SAMPLERS` ("ddim": eta = 0).
    steps:      number of denoising steps, spaced as ``diffuse sample --steps`` spaces them.
    cfg_weight: classifier-free guidance weight w (used when the model has a null class).
    seed:       sample i draws its noise from a generator seeded by (seed, i).
    batch_size: most samples generated at once (does not change the result).
    """
    guided = cfg_weight > 0 and getattr(model, "null_class", None) is not None
    stage = Stage(
        model,
        diffusion,
        SamplerSettings(sampler, steps),
        cfg=cfg_weight if guided else None,
        precision="fp32",
    )
    out = []
    for start in range(0, count, batch_size):
        rows = slice(start, min(count, start + batch_size))
        generators = seeded_generators(
            [derive_seed(seed, PREVIEW, i) for i in range(rows.start, rows.stop)]
        )
        batch_labels = None if labels is None else labels[rows]
        batch_low_res = None if low_res is None else low_res[rows]
        out.append(stage.sample(generators, batch_labels, low_res=batch_low_res).cpu())
    return torch.cat(out)


def grid_caption(config, cfg_weight: float, guided: bool) -> str:
    """What the rows of :func:`preview_grid`'s grid are, in words ("" for a plain grid);
    ``guided``: the model has a null class, so its samples use ``cfg_weight``."""
    if config.kind == "superres":
        caption = "rows: low-resolution input, sample, original"
    elif getattr(config, "num_classes", None) is not None:
        caption = "one row per class"
    else:
        return ""
    if guided and cfg_weight > 0:
        caption += f", classifier-free guidance w={cfg_weight:g}"
    return caption


def preview_grid(
    model: nn.Module,
    diffusion: DiffusionConfig,
    *,
    class_names: Sequence[str] = (),
    references: tuple[torch.Tensor, torch.Tensor] | None = None,
    columns: int = 10,
    sampler: str = "ddim",
    steps: int = 50,
    cfg_weight: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """A labelled uint8 grid [H, W, C] of samples (see the module docstring).

    class_names: names of the classes of a class-conditional model.
    references:  (images [n, C, S, S] in [-1, 1], labels [n]) of which an upsampler
                 enlarges the low-resolution versions of the first ``columns``.
    columns:     samples per row.
    Other arguments as for :func:`sample_images`.
    """
    config = model.config
    settings = dict(sampler=sampler, steps=steps, cfg_weight=cfg_weight, seed=seed)
    num_classes = getattr(config, "num_classes", None)
    row_labels: list[str] = []
    if config.kind == "superres":
        originals, original_labels = references[0][:columns], references[1][:columns]
        small = downsample(originals, low_res_size(config))
        labels = original_labels if num_classes is not None else None
        samples = sample_images(
            model, diffusion, len(small), labels=labels, low_res=small, **settings
        )
        enlarged = F.interpolate(small, size=originals.shape[-2:], mode="nearest")
        images = torch.cat([enlarged, samples, originals])
        row_labels = ["input", "sample", "original"]
    elif num_classes is not None:
        classes = np.unique(np.linspace(0, num_classes - 1, min(num_classes, MAX_ROWS)).round())
        labels = torch.as_tensor(classes, dtype=torch.long).repeat_interleave(columns)
        images = sample_images(model, diffusion, len(labels), labels=labels, **settings)
        row_labels = [str(class_names[int(k)]) if class_names else str(int(k)) for k in classes]
    else:
        images = sample_images(model, diffusion, columns * columns, **settings)
    factor = max(1, -(-MIN_PIXELS // config.image_size))
    tiles = upscale(to_uint8(images), factor)
    grid = make_grid(tiles, columns)
    if row_labels:
        grid = add_row_labels(grid, row_labels, row_height=tiles.shape[1])
    return grid
