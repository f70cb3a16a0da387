"""Exponential moving averages of the weights (DDPM appendix B: decay 0.9999).

After every optimizer update each average moves as ema <- d ema + (1 - d) theta with
d = rate, or, with warm-up, d = min(rate, (1 + n) / (10 + n)) where n counts the updates
*before* this one: the first update uses d = 1/10, the second 2/11, the third 3/12. This
is the warm-up of TensorFlow's ExponentialMovingAverage with ``num_updates`` = n (TF code
that passes a global step already incremented by the optimizer starts at 2/11 instead,
one update later). Early averages forget their random start quickly, so a run of a few
thousand steps already has useful EMA weights. The papers' recipes use no warm-up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn


class EMA:
    """Moving averages of a model's floating-point state, one per decay rate.

    model:  the network whose ``state_dict`` is averaged (integer buffers are copied).
    rates:  the decay rates, e.g. (0.9999,).
    warmup: use the warm-up decay min(rate, (1 + n) / (10 + n)), n = earlier updates.
    """

    def __init__(self, model: nn.Module, rates: Iterable[float], warmup: bool = True) -> None:
        self.model = model
        self.rates = tuple(float(r) for r in rates)
        self.warmup = warmup
        self.averages: dict[float, dict[str, torch.Tensor]] = {
            rate: {k: v.detach().clone().float() for k, v in model.state_dict().items()}
            for rate in self.rates
        }

    def decay(self, rate: float, updates: int) -> float:
        """The decay used by the update that follows ``updates`` earlier ones."""
        return min(rate, (1.0 + updates) / (10.0 + updates)) if self.warmup else rate

    @torch.no_grad()
    def update(self, updates: int) -> None:
        """Fold the model's current weights in; ``updates`` counts the earlier updates."""
        current = self.model.state_dict()
        for rate, average in self.averages.items():
            d = self.decay(rate, updates)
            floats = [k for k in average if current[k].is_floating_point()]
            torch._foreach_lerp_(
                [average[k] for k in floats], [current[k].float() for k in floats], 1.0 - d
            )
            for key in average.keys() - set(floats):
                average[key].copy_(current[key])

    def state(self, rate: float) -> dict[str, torch.Tensor]:
        """The averaged weights of ``rate``, in the model's dtypes (for a checkpoint)."""
        current = self.model.state_dict()
        return {k: v.to(current[k].dtype) for k, v in self.averages[rate].items()}

    def load(self, states: Mapping[float, Mapping[str, torch.Tensor]]) -> None:
        """Restore the averages from ``{rate: state_dict}`` (every rate of this EMA)."""
        missing = set(self.rates) - set(states)
        if missing:
            raise KeyError(f"no saved averages for the EMA rates {sorted(missing)}")
        for rate in self.rates:
            for key, value in self.averages[rate].items():
                value.copy_(states[rate][key])
