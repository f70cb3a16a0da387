"""The figures of the papers, made from a trained model.

- :func:`progressive`: the predicted x0 along the reverse process (DDPM Fig. 6).
- :func:`completions`: stochastic completions of one intermediate latent x_t at several t
  (DDPM Fig. 7): the larger t, the less of the image the latent fixes.
- :func:`interpolation`: two images mixed through their latents x_t at several t and
  decoded by ancestral sampling (DDPM Figs. 8 and 9).
- :func:`latent_interpolation`: deterministic DDIM decoding of slerped x_T (DDIM Fig. 6).

Each returns a :class:`Figure` (tiles with row and column labels) whose
:meth:`Figure.render` is a labelled PNG-ready grid. Timesteps are written as the papers
count them, t = 1 .. T (the original index + 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from diffuse.data.resizing import fit_image
from diffuse.diffusion import seeded_generators
from diffuse.diffusion.samplers import interpolate, latent_interpolate
from diffuse.errors import ConfigError, DataError, MissingFileError
from diffuse.rendering import Figure, to_uint8
from diffuse.sample.pipeline import sample_labels
from diffuse.sample.stage import Stage


def paper_t(stage: Stage, index: int) -> int:
    """The papers' t (1 .. T) of process index ``index`` of the stage's chain."""
    return int(stage.process.timestep_map[index]) + 1


def nearest_index(stage: Stage, t: int) -> int:
    """The index of the stage's chain whose papers' t is closest to ``t``."""
    T = stage.full_process.num_timesteps
    if not 1 <= t <= T:
        raise ConfigError(f"t = {t} is outside the chain's 1 .. {T}")
    return int(np.abs(stage.process.timestep_map + 1 - t).argmin())


def _row_names(labels: torch.Tensor | None, count: int) -> list[str]:
    if labels is None:
        return [f"#{i}" for i in range(count)]
    return [f"class {int(c)}" for c in labels]


def progressive(
    stage: Stage,
    n: int,
    *,
    seed: int = 0,
    classes: Sequence[int] | None = None,
    columns: int = 10,
    progress: bool = False,
) -> Figure:
    """DDPM Fig. 6: for ``n`` samples (seeds ``seed ..``), the predicted x0 at ``columns``
    evenly spaced steps of the reverse process; the last column is the sample itself."""
    if n < 1 or columns < 2:
        raise ConfigError("a progressive figure needs n >= 1 and columns >= 2")
    generators = seeded_generators(range(seed, seed + n))
    labels = sample_labels(stage, generators, 0, classes)
    last = stage.process.num_timesteps - 1
    shown = sorted({round(i) for i in np.linspace(last, 0, columns)}, reverse=True)
    captured: dict[int, torch.Tensor] = {}

    def capture(info: dict) -> None:
        if info["step"] in shown:
            captured[info["step"]] = info["pred_x0"]

    stage.sample(generators, labels, progress=progress, callback=capture)
    tiles = np.stack([to_uint8(captured[step]) for step in shown], axis=1)
    return Figure(tiles, _row_names(labels, n), [f"t={paper_t(stage, s)}" for s in shown])


def completions(
    stage: Stage,
    at: Sequence[int],
    *,
    k: int = 4,
    seed: int = 0,
    classes: Sequence[int] | None = None,
    progress: bool = False,
) -> Figure:
    """DDPM Fig. 7: one reverse trajectory (seed ``seed``) is stopped at each t of ``at``
    (the papers' t, snapped to the stage's chain) and its latent x_t completed ``k`` times
    with fresh noise (seeds ``seed + 1 ..``). Row r shows x_t, then its completions."""
    if not stage.sampler.stochastic:
        raise ConfigError(
            f"completions need a stochastic sampler (ddpm, or ddim with eta > 0); "
            f"{stage.sampler.name} with eta {stage.sampler.eta} is deterministic"
        )
    if k < 1 or not at:
        raise ConfigError("completions need k >= 1 and at least one t")
    indices = [nearest_index(stage, t) for t in at]
    generators = seeded_generators([seed])
    labels = sample_labels(stage, generators, 0, classes)
    x_T = stage.start_noise(generators)
    latents = {stage.process.num_timesteps - 1: x_T}

    def capture(info: dict) -> None:
        if info["step"] - 1 in indices:
            latents[info["step"] - 1] = info["x"]

    stage.sample(generators, labels, x_T=x_T, progress=progress, callback=capture)
    rows = []
    for index in indices:
        fresh = seeded_generators(range(seed + 1, seed + 1 + k))
        done = stage.sample(
            fresh,
            None if labels is None else labels.expand(k),
            x_T=latents[index].expand(k, -1, -1, -1),
            start_step=index,
            progress=progress,
        )
        rows.append(to_uint8(torch.cat([latents[index], done])))
    return Figure(
        np.stack(rows),
        [f"t={paper_t(stage, i)}" for i in indices],
        ["x_t"] + [f"sample {j + 1}" for j in range(k)],
    )


def read_image(path: str | Path, stage: Stage) -> torch.Tensor:
    """An image file as [C, H, W] in [-1, 1] at the stage's size and channels."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no image at {path}")
    channels, size, _ = stage.image_shape
    try:
        with Image.open(path) as image:
            array = fit_image(image, size, grey=channels == 1)
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"{path} is not a readable image ({error})") from None
    return torch.tensor(array).permute(2, 0, 1).float() / 127.5 - 1.0


def interpolation(
    stage: Stage,
    image_a: torch.Tensor,
    image_b: torch.Tensor,
    at: Sequence[int],
    *,
    lambdas: int = 9,
    seed: int = 0,
    label: int | None = None,
    progress: bool = False,
) -> Figure:
    """DDPM Figs. 8 and 9: ``image_a`` and ``image_b`` [C, H, W] are encoded to x_t with
    shared noise at each t of ``at`` (one row each), mixed at ``lambdas`` evenly spaced
    weights from 0 to 1 and decoded by ancestral sampling with shared noise (seed
    ``seed``). The first and last columns are the sources. ``label`` is the class to
    decode with, for a class-conditional model."""
    if lambdas < 2 or not at:
        raise ConfigError("an interpolation needs at least 2 lambdas and one t")
    mixes = torch.linspace(0.0, 1.0, lambdas)
    labels = _repeat_label(stage, label, lambdas)
    device = stage.device
    rows = []
    for t in at:
        index = nearest_index(stage, t)
        decoded = interpolate(
            stage.guided_model(lambdas),
            stage.process,
            image_a.to(device),
            image_b.to(device),
            index,
            mixes,
            model_kwargs=stage.model_kwargs(labels, None),
            clip_denoised=stage.sampler.clip_denoised,
            generator=seeded_generators([seed])[0],
            guide=stage.guide(labels),
            progress=progress,
        )
        rows.append(to_uint8(torch.cat([image_a[None], decoded.cpu(), image_b[None]])))
    return Figure(
        np.stack(rows),
        [f"t={paper_t(stage, nearest_index(stage, t))}" for t in at],
        ["source"] + [f"{m:.2f}" for m in mixes.tolist()] + ["source"],
    )


def latent_interpolation(
    stage: Stage,
    pairs: int = 2,
    *,
    lambdas: int = 9,
    seed: int = 0,
    label: int | None = None,
    progress: bool = False,
) -> Figure:
    """DDIM Fig. 6: for each of ``pairs`` rows, the latents x_T of seeds ``seed + 2r`` and
    ``seed + 2r + 1`` are slerped at ``lambdas`` weights and decoded deterministically by
    DDIM (eta = 0) over the stage's steps."""
    if lambdas < 2 or pairs < 1:
        raise ConfigError("a latent interpolation needs at least 2 lambdas and 1 pair")
    mixes = torch.linspace(0.0, 1.0, lambdas)
    labels = _repeat_label(stage, label, lambdas)
    rows = []
    for r in range(pairs):
        x_T = stage.start_noise(seeded_generators([seed + 2 * r, seed + 2 * r + 1]))
        decoded = latent_interpolate(
            stage.guided_model(lambdas),
            stage.process,
            x_T[0],
            x_T[1],
            mixes,
            model_kwargs=stage.model_kwargs(labels, None),
            clip_denoised=stage.sampler.clip_denoised,
            guide=stage.guide(labels),
            progress=progress,
        )
        rows.append(to_uint8(decoded))
    return Figure(
        np.stack(rows),
        [f"seeds {seed + 2 * r},{seed + 2 * r + 1}" for r in range(pairs)],
        [f"{m:.2f}" for m in mixes.tolist()],
    )


def _repeat_label(stage: Stage, label: int | None, count: int) -> torch.Tensor | None:
    known = stage.label_classes
    if known is None:
        if label is not None:
            raise ConfigError("the model is unconditional: it takes no class")
        return None
    if label is None:
        raise ConfigError(f"the model is class-conditional: give a class in 0 .. {known - 1}")
    if not 0 <= label < known:
        raise ConfigError(f"class {label} is out of range: this model knows 0 .. {known - 1}")
    return torch.full((count,), label, dtype=torch.long)
