"""The settings of a diffusion process, as stored in a checkpoint's configuration."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from diffuse.errors import ConfigError

PREDICTIONS = ("eps", "x0", "mean", "v")
VARIANCES = ("fixed_small", "fixed_large", "learned", "learned_range")
LOSSES = ("mse", "kl", "hybrid")
SCHEDULES = ("linear", "cosine")


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
        for name, allowed in (
            ("schedule", SCHEDULES),
            ("prediction", PREDICTIONS),
            ("variance", VARIANCES),
            ("loss", LOSSES),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"diffusion {name} {value!r} is not one of {allowed}")
        if not isinstance(self.timesteps, int) or self.timesteps < 1:
            raise ConfigError(
                f"diffusion timesteps must be a positive integer, got {self.timesteps!r}"
            )

    @property
    def learns_variance(self) -> bool:
        """Whether the network outputs twice the image channels (mean and variance)."""
        return self.variance in ("learned", "learned_range")

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

    def build(self):
        """The :class:`GaussianDiffusion` these settings describe."""
        from diffuse.diffusion.gaussian import GaussianDiffusion
        from diffuse.diffusion.schedules import beta_schedule

        return GaussianDiffusion(
            beta_schedule(self.schedule, self.timesteps),
            prediction=self.prediction,
            variance=self.variance,
            loss=self.loss,
        )
