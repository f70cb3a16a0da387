"""Mixed precision: bf16 autocast on CPU and CUDA, fp16 autocast with a gradient scaler on CUDA.

The weights, the optimizer state and the loss stay in float32: only the network's forward
pass runs under autocast, and its output is cast back to float32 before the loss (the
variational bound's logs and exps are not computed in half precision). fp16 gradients
are scaled to avoid underflow; a step whose scaled gradients overflow is skipped by the
scaler, which then lowers the scale (the usual dynamic loss scaling).
"""

from __future__ import annotations

from typing import Any

import torch

from diffuse.autocast import PRECISIONS, AutocastModel
from diffuse.errors import ConfigError


class Precision:
    """The numeric format of training: autocast and, for fp16, the gradient scaler.

    name:   "fp32", "bf16" or "fp16".
    device: the training device (fp16 needs CUDA).
    """

    def __init__(self, name: str, device: torch.device) -> None:
        if name == "fp16" and device.type != "cuda":
            raise ConfigError(
                "fp16 training needs a CUDA device (its gradient scaler is CUDA-only); use "
                "--precision bf16 or fp32 on the CPU"
            )
        if name not in PRECISIONS:
            raise ConfigError(f"unknown precision {name!r}; use fp32, bf16 or fp16")
        self.name = name
        self.device = device
        self.scaler = torch.amp.GradScaler("cuda") if name == "fp16" else None

    def wrap(self, model) -> AutocastModel:
        """``model`` running its forward pass in this precision."""
        return AutocastModel.named(model, self.name, self.device)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring the gradients to their true scale (before clipping)."""
        if self.scaler:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """Take the optimizer step; False when the gradient scaler skipped it.

        The scaler skips a step whose gradients overflowed (inf or nan) and then halves
        its scale, and only then: the scale falling is how a skip shows. The caller must
        not count a skipped step as an update nor fold it into the EMA (guided-diffusion's
        ``MixedPrecisionTrainer.optimize`` returns the same flag for the same reason).
        """
        if not self.scaler:
            optimizer.step()
            return True
        scale = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        return self.scaler.get_scale() >= scale

    def state_dict(self) -> dict[str, Any]:
        """The scaler's state as plain JSON (empty without a scaler)."""
        if not self.scaler:
            return {}
        return {
            k: float(v) if isinstance(v, float) else v for k, v in self.scaler.state_dict().items()
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler and state:
            self.scaler.load_state_dict(state)
