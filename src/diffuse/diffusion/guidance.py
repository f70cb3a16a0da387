"""Guidance: steering samples toward a class.

Classifier-free guidance (Ho & Salimans 2021, eq. 6) combines the conditional and
unconditional predictions of one network trained with label dropout:

    eps~(x, c) = (1 + w) eps(x, c) - w eps(x, null)

``w`` is the guidance weight of the paper: w = 0 is plain conditional sampling. Other
libraries (GLIDE, diffusers, Stable Diffusion) write the same thing with a "guidance
scale" s = 1 + w, eps~ = eps(x, null) + s (eps(x, c) - eps(x, null)); this library's
interface takes w, and ``guidance_scale_to_weight`` converts.

The combination is applied to the network's raw output. For every parameterization
(eps, x0, v, mean) the output is an affine function of eps at fixed x_t and t whose
coefficients do not depend on the class, so combining outputs is exactly combining
eps. With a learned variance only the first half of the channels is combined; the
variance comes from the conditional branch (as in GLIDE).
"""

from __future__ import annotations

import torch


def guidance_scale_to_weight(scale: float) -> float:
    """Convert a diffusers-style guidance scale s = 1 + w to the paper's weight w."""
    return scale - 1.0


class ClassifierFreeGuidance:
    """Wrap a class-conditional network so that it returns the guided output.

    model:       the network, called as ``model(x, t, y=labels, **kwargs)``.
    weight:      w of Ho & Salimans eq. 6; 0 gives the conditional model unchanged.
    null_class:  the label index the network was trained to treat as "no class".
    channels:    the image channels; output channels beyond these (a learned variance)
                 are taken from the conditional branch.

    The conditional and unconditional branches run as one batched forward pass of
    twice the batch.
    """

    def __init__(self, model, weight: float, null_class: int, channels: int) -> None:
        self.model = model
        self.weight = float(weight)
        self.null_class = int(null_class)
        self.channels = int(channels)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
        if self.weight == 0.0:
            return self.model(x, t, y=y, **kwargs)
        doubled = {k: torch.cat([v, v]) if torch.is_tensor(v) else v for k, v in kwargs.items()}
        null = torch.full_like(y, self.null_class)
        out = self.model(torch.cat([x, x]), torch.cat([t, t]), y=torch.cat([y, null]), **doubled)
        cond, uncond = out.chunk(2)
        c = self.channels
        guided = cond[:, :c] + self.weight * (cond[:, :c] - uncond[:, :c])
        return torch.cat([guided, cond[:, c:]], dim=1) if out.shape[1] > c else guided
