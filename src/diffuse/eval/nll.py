"""Negative log-likelihood of a data set under a diffusion model, in bits/dim.

The full variational bound of DDPM eq. 5 (DDPM Table 1, Improved DDPM Table 2), one
network evaluation per timestep and image, and the rate-distortion curve of progressive
lossy coding (DDPM Table 4, Fig. 5) from the same terms.

- :func:`dataset_nll`: the figures of given images under a given model and process.
- :func:`measure_nll`: the same for a checkpoint and a data set's split, checked (what
  ``diffuse nll`` computes); :func:`save_nll` writes its files.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from diffuse.checkpoint import LoadedCheckpoint, load_checkpoint
from diffuse.data import load_dataset
from diffuse.devices import resolve_device
from diffuse.diffusion.gaussian import GaussianDiffusion
from diffuse.diffusion.likelihood import bits_per_dim, rate_distortion
from diffuse.errors import CheckpointError, ConfigError
from diffuse.io import atomic_write_json, atomic_write_text
from diffuse.outputs import OutputLayout
from diffuse.plots import plot_rate_distortion

LAYOUT = OutputLayout(
    "nll folder", "nll.json", ("nll.json", "rate_distortion.csv", "rate_distortion.png")
)
"""An nll output folder (``diffuse nll --out``): what ``--overwrite`` may replace."""


def dataset_nll(
    model: torch.nn.Module,
    process: GaussianDiffusion,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    batch_size: int = 64,
    clip_denoised: bool = True,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> dict:
    """Bits/dim of ``images`` ([N, C, H, W] in [-1, 1], on 256 levels) with its standard error.

    ``labels`` are passed to a class-conditional network as ``y``. ``clip_denoised``: the
    reverse steps use the predicted x0 clipped to [-1, 1], as the models sample, and the
    distortion is that of the clipped prediction (guided-diffusion's ``image_nll`` does
    the same by default); unclipped, the prediction x0 = (x_t - sqrt(1 - abar) eps) /
    sqrt(abar) divides the noise's error by sqrt(abar_{T-1}) ~ 1e-4 under the cosine
    schedule, and one step near T dominates the bound. Returns ``bpd`` (the
    mean bound), ``stderr`` (its standard error over images), ``n``, the mean ``prior`` and
    ``decoder`` terms, per-image ``per_image`` totals, and the ``rate_distortion`` rows.
    """
    device = next(model.parameters()).device
    totals, priors, vbs, x0_mses = [], [], [], []
    bar = tqdm(total=len(images), desc="NLL (images)", unit="img", disable=not progress)
    for start in range(0, len(images), batch_size):
        x0 = images[start : start + batch_size].to(device)
        kwargs = {} if labels is None else {"y": labels[start : start + batch_size].to(device)}
        terms = bits_per_dim(
            model,
            process,
            x0,
            model_kwargs=kwargs,
            clip_denoised=clip_denoised,
            generator=generator,
        )
        totals.append(terms["total"].double().cpu())
        priors.append(terms["prior"].double().cpu())
        vbs.append(terms["vb"].double().cpu())
        x0_mses.append(terms["x0_mse"].double().cpu())
        bar.update(len(x0))
    bar.close()
    total = torch.cat(totals)
    vb = torch.cat(vbs)
    n = len(total)
    return {
        "bpd": total.mean().item(),
        "stderr": total.std().item() / math.sqrt(n) if n > 1 else float("nan"),
        "n": n,
        "prior": torch.cat(priors).mean().item(),
        "decoder": vb[:, 0].mean().item(),
        "per_image": total.tolist(),
        "rate_distortion": rate_distortion(
            {"prior": torch.cat(priors), "vb": vb, "x0_mse": torch.cat(x0_mses)}
        ),
    }


@dataclass(frozen=True)
class NLLMeasurement:
    """What :func:`measure_nll` found.

    summary:         the contents of nll.json: the checkpoint's record, ``data``,
                     ``split``, ``conditional``, ``seed`` and the figures of
                     :func:`dataset_nll` (``bpd``, ``stderr``, ``n``, ``prior``,
                     ``decoder``, ``per_image``).
    rate_distortion: one row per reverse-process time (``reverse_time``, ``step``,
                     ``rate`` in bits/dim, ``distortion`` as RMSE on [0, 255]).
    """

    summary: dict[str, Any]
    rate_distortion: list[dict]


def measure_nll(
    checkpoint: str | Path | LoadedCheckpoint,
    data: str,
    *,
    split: str = "test",
    n: int = 256,
    batch_size: int = 64,
    seed: int = 0,
    unconditional: bool = False,
    clip_denoised: bool = True,
    data_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> NLLMeasurement:
    """Bits/dim and rate-distortion of the first ``n`` images of a data set's split.

    checkpoint:     a diffusion model's checkpoint folder (or a run folder), or one loaded.
    data:           a data set name or an image folder, loaded at the model's resolution.
    split:          ``train`` or ``test``.
    n:              the number of images (at most the split's size).
    batch_size:     images per network call.
    seed:           seed of the noise draws: the same seed gives the same figures.
    unconditional:  for a class-conditional model trained with a null class, the
                    likelihood without labels (default: conditional on each label).
    clip_denoised:  the bound of the model as it samples, the predicted x0 clipped to
                    [-1, 1] (see :func:`dataset_nll`); False: of the unclipped model.
    data_dir:       where the data set's files are.
    device:         where a checkpoint given as a path is loaded (None: the default).
    progress:       show progress bars.

    Raises :class:`ConfigError` or :class:`CheckpointError` (before any network call) for
    a request that cannot be served: a non-positive count, a network that is not a
    diffusion model, ``unconditional`` without a null class, images of another channel
    count.
    """
    if n < 1 or batch_size < 1:
        raise ConfigError("--n and --batch-size must be positive")
    if not isinstance(checkpoint, LoadedCheckpoint):
        checkpoint = load_checkpoint(checkpoint, device=resolve_device(device))
    model, config = checkpoint.model, checkpoint.model.config
    if config.kind != "unet" or checkpoint.diffusion is None:
        raise CheckpointError(
            f"{checkpoint.path} holds a {config.kind} network"
            + ("" if checkpoint.diffusion is None else " (an upsampler)")
            + "; nll needs a diffusion model with its diffusion settings"
        )
    if unconditional and not config.null_class:
        raise ConfigError(
            "--unconditional needs a model trained with a null class (classifier-free "
            "guidance); this one has none"
        )
    dataset = load_dataset(
        data,
        split=split,
        image_size=config.image_size,
        data_dir=data_dir,
        class_cond=config.num_classes is not None,
        progress=progress,
    )
    if dataset.channels != config.in_channels:
        raise ConfigError(
            f"{dataset.name} has {dataset.channels}-channel images; the model takes "
            f"{config.in_channels}"
        )
    n = min(n, len(dataset))
    images, labels = dataset.tensors()
    images, labels = images[:n], labels[:n]
    if config.num_classes is None:
        labels = None
    elif unconditional:
        labels = torch.full_like(labels, config.num_classes)
    result = dataset_nll(
        model,
        checkpoint.diffusion.build(),
        images,
        labels,
        batch_size=batch_size,
        clip_denoised=clip_denoised,
        generator=torch.Generator().manual_seed(seed),
        progress=progress,
    )
    rows = result.pop("rate_distortion")
    summary = {
        **checkpoint.record(),
        "data": dataset.name,
        "split": dataset.split,
        "conditional": labels is not None and not unconditional,
        "seed": seed,
        "clip_denoised": clip_denoised,
        **result,
    }
    return NLLMeasurement(summary, rows)


def save_nll(folder: str | Path, measurement: NLLMeasurement) -> list[str]:
    """Write nll.json, rate_distortion.csv and rate_distortion.png into ``folder``
    (each atomically); returns the names of the files written."""
    folder = Path(folder)
    atomic_write_json(folder / "nll.json", measurement.summary)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["reverse_time", "step", "rate", "distortion"])
    writer.writeheader()
    writer.writerows(measurement.rate_distortion)
    atomic_write_text(folder / "rate_distortion.csv", buffer.getvalue())
    plot_rate_distortion(folder / "rate_distortion.png", measurement.rate_distortion)
    return list(LAYOUT.entries)
