"""The settings of a diffusion process, as stored in a checkpoint's configuration.

Plain data: :meth:`GaussianDiffusion.from_config` builds the process from it, and the
allowed values are the process's own (:data:`diffuse.diffusion.gaussian.CHOICES`), so this
module imports the process and never the other way round.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from diffuse.diffusion.gaussian import (
    LEARNED_VARIANCES,
    LOSSES,
    PREDICTIONS,
    VARIANCES,
    GaussianDiffusion,
    check_choices,
)
from diffuse.diffusion.schedules import SCHEDULES
from diffuse.errors import ConfigError, is_int_at_least

# The allowed values are re-exported for the command line's help.
__all__ = ["LOSSES", "PREDICTIONS", "SCHEDULES", "VARIANCES", "DiffusionConfig"]


@dataclass(frozen=True)
class DiffusionConfig:
    """Everything needed to rebuild a :class:`GaussianDiffusion`.

    schedule:    beta schedule name, ``linear`` (DDPM) or ``cosine`` (Improved DDPM).
    timesteps:   number of diffusion steps T of the training process.
    prediction:  what the network predicts: ``eps``, ``x0``, ``mean`` or ``v``.
    variance:    reverse-process variance: ``fixed_small`` (beta-tilde), ``fixed_large``
                 (beta), ``learned`` (log variance) or ``learned_range`` (Improved DDPM).
    loss:        training loss: ``mse`` (L_simple), ``kl`` (L_vlb) or ``hybrid``.
    """

    schedule: str = "linear"
    timesteps: int = 1000
    prediction: str = "eps"
    variance: str = "fixed_small"
    loss: str = "mse"

    def __post_init__(self) -> None:
        check_choices(
            schedule=self.schedule,
            prediction=self.prediction,
            variance=self.variance,
            loss=self.loss,
        )
        if not is_int_at_least(self.timesteps, 1):
            raise ConfigError(
                f"diffusion timesteps must be a positive integer, got {self.timesteps!r}"
            )

    @property
    def learns_variance(self) -> bool:
        """Whether the network outputs twice the image channels (mean and variance)."""
        return self.variance in LEARNED_VARIANCES

    def check_output_channels(self, in_channels: int, out_channels: int) -> None:
        """Raise :class:`ConfigError` unless a network with ``out_channels`` outputs fits
        these settings on ``in_channels``-channel images (twice them for a learned variance)."""
        wanted = in_channels * (2 if self.learns_variance else 1)
        if out_channels != wanted:
            raise ConfigError(
                f"variance {self.variance!r} needs a network with {wanted} output channels for "
                f"{in_channels}-channel images; the network has {out_channels} "
                f"(model.out_channels={wanted} builds one that fits)"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffusionConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(
                f"unknown diffusion settings {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**data)

    def build(self) -> GaussianDiffusion:
        """The process these settings describe: :meth:`GaussianDiffusion.from_config`."""
        return GaussianDiffusion.from_config(self)
