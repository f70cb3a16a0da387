"""Negative log-likelihood of a data set under a diffusion model, in bits/dim.

The full variational bound of DDPM eq. 5 (DDPM Table 1, Improved DDPM Table 2), one
network evaluation per timestep and image, and the rate-distortion curve of progressive
lossy coding (DDPM Table 4, Fig. 5) from the same terms.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from diffuse.diffusion.gaussian import GaussianDiffusion
from diffuse.diffusion.likelihood import bits_per_dim, rate_distortion


def dataset_nll(
    model: torch.nn.Module,
    process: GaussianDiffusion,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> dict:
    """Bits/dim of ``images`` ([N, C, H, W] in [-1, 1], on 256 levels) with its standard error.

    ``labels`` are passed to a class-conditional network as ``y``. Returns ``bpd`` (the
    mean bound), ``stderr`` (its standard error over images), ``n``, the mean ``prior`` and
    ``decoder`` terms, per-image ``per_image`` totals, and the ``rate_distortion`` rows.
    """
    device = next(model.parameters()).device
    totals, priors, vbs, x0_mses = [], [], [], []
    bar = tqdm(total=len(images), desc="NLL (images)", unit="img", disable=not progress)
    for start in range(0, len(images), batch_size):
        x0 = images[start : start + batch_size].to(device)
        kwargs = {} if labels is None else {"y": labels[start : start + batch_size].to(device)}
        terms = bits_per_dim(model, process, x0, model_kwargs=kwargs, generator=generator)
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
