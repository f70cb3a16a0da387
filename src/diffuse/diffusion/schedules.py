"""Noise schedules and timestep respacing.

All schedule arrays are float64 numpy arrays indexed by integer timesteps ``0 .. T-1``;
index 0 is the papers' t = 1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import numpy as np

from diffuse.errors import ConfigError

SCHEDULES = ("linear", "cosine")  # the names beta_schedule knows
COSINE_OFFSET = 0.008  # s in Improved DDPM eq. 17
COSINE_MAX_BETA = 0.999  # Improved DDPM section 3.2: betas clipped to avoid singularities at t = T


def beta_schedule(name: str | Iterable[float], num_timesteps: int | None = None) -> np.ndarray:
    """Betas of a named schedule, or a user's array of betas validated.

    ``linear``: DDPM section 4, betas rising linearly from 1e-4 to 0.02 at T = 1000; for
    other T the endpoints are scaled by 1000 / T so that the total noise stays comparable
    (as in Improved DDPM's code).
    ``cosine``: Improved DDPM eq. 17, alpha_bar(t) = f(t) / f(0) with
    f(t) = cos(((t / T + s) / (1 + s)) * pi / 2)^2, s = 0.008, and
    beta_t = 1 - alpha_bar(t) / alpha_bar(t - 1) clipped at 0.999.

    Any other value is taken as an array of betas; it must be one-dimensional with every
    beta strictly between 0 and 1.
    """
    if isinstance(name, str):
        if num_timesteps is None or int(num_timesteps) != num_timesteps or num_timesteps < 1:
            raise ConfigError(
                f"number of timesteps must be a positive integer, got {num_timesteps!r}"
            )
        num_timesteps = int(num_timesteps)
        if name == "linear":
            if num_timesteps <= 20:
                raise ConfigError(
                    f"the linear schedule needs more than 20 steps (its last beta, "
                    f"0.02 * 1000 / T, would be >= 1 at T = {num_timesteps}); use 'cosine'"
                )
            return np.linspace(*linear_beta_range(num_timesteps), num_timesteps, dtype=np.float64)
        if name == "cosine":
            return _cosine_betas(num_timesteps)
        raise ConfigError(
            f"unknown beta schedule {name!r}; use 'linear', 'cosine' or an array of betas"
        )
    return validate_betas(name, num_timesteps)


def linear_beta_range(num_timesteps: int) -> tuple[float, float]:
    """First and last beta of the linear schedule over ``num_timesteps`` steps: DDPM's 1e-4
    and 0.02 at T = 1000, both scaled by 1000 / T (Improved DDPM's code)."""
    scale = 1000.0 / num_timesteps
    return scale * 1e-4, scale * 0.02


def validate_betas(betas: Iterable[float], num_timesteps: int | None = None) -> np.ndarray:
    """Return ``betas`` as float64 after checking 0 < beta < 1 everywhere."""
    try:
        array = np.asarray(betas, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"betas must be numbers: {error}") from None
    if array.ndim != 1 or array.size == 0:
        raise ConfigError(f"betas must be a non-empty 1-D array, got shape {array.shape}")
    if num_timesteps is not None and array.size != num_timesteps:
        raise ConfigError(f"got {array.size} betas for {num_timesteps} timesteps")
    bad = ~np.isfinite(array) | (array <= 0) | (array >= 1)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise ConfigError(
            f"every beta must lie strictly between 0 and 1; beta[{index}] = {array[index]!r}"
        )
    return array


def _cosine_betas(num_timesteps: int) -> np.ndarray:
    def f(t: np.ndarray) -> np.ndarray:
        return np.cos((t / num_timesteps + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2

    steps = np.arange(num_timesteps + 1, dtype=np.float64)
    alpha_bar = f(steps) / f(np.zeros(1))
    betas = 1.0 - alpha_bar[1:] / alpha_bar[:-1]
    return np.minimum(betas, COSINE_MAX_BETA)


def space_timesteps(num_timesteps: int, spec: str | int | Iterable[int]) -> list[int]:
    """The timesteps kept when sampling with fewer steps (Improved DDPM section 4).

    ``spec`` is one of:

    - ``"ddimN"``: a constant stride ``k`` with ``range(0, T, k)`` exactly N steps long
      (the DDIM paper's uniform skipping); an error if no stride gives N.
    - ``"quadN"``: N steps at t_i = round((T - 1) (i / (N - 1))^2), made strictly
      increasing: the quadratic selection of DDIM appendix D.2, dense near the data.
    - ``"N"`` or ``"N1,N2,..."``: the chain is cut into as many equal sections as counts
      are given (earlier sections take one extra step when T does not divide) and each
      section keeps its count of steps, evenly strided from its first to its last step
      exactly as the released Improved DDPM / ADM code strides them (see
      :func:`_strided`), so that a released checkpoint sampled with N steps visits the
      same timesteps here as there.
    - ``"evenN"``: the same as ``"N"``, spelled out (a sampler may read a bare ``"N"`` as
      its own default spacing, see :attr:`diffuse.sample.SamplerSettings.respacing`).
    - an integer N (same as ``"N"``) or an explicit collection of timestep indices.

    Returns the sorted kept indices.
    """
    if isinstance(spec, bool):
        raise ConfigError(f"invalid timestep spacing {spec!r}")
    if isinstance(spec, int):
        spec = str(spec)
    if not isinstance(spec, str):
        steps = sorted({int(s) for s in spec})
        if not steps or steps[0] < 0 or steps[-1] >= num_timesteps:
            raise ConfigError(f"timesteps must be indices in [0, {num_timesteps - 1}], got {steps}")
        return steps
    spec = spec.strip()
    match = re.fullmatch(r"ddim(\d+)", spec)
    if match:
        return _ddim_spacing(num_timesteps, int(match.group(1)))
    match = re.fullmatch(r"even(\d+)", spec)
    if match:
        return _section_spacing(num_timesteps, [int(match.group(1))])
    match = re.fullmatch(r"quad(\d+)", spec)
    if match:
        return _quadratic_spacing(num_timesteps, int(match.group(1)))
    if not re.fullmatch(r"\d+(\s*,\s*\d+)*", spec):
        raise ConfigError(
            f"invalid timestep spacing {spec!r}: use 'evenN', 'ddimN', 'quadN', a count like "
            "'250' or counts per section like '10,15,20'"
        )
    return _section_spacing(num_timesteps, [int(c) for c in spec.split(",")])


def _ddim_spacing(num_timesteps: int, count: int) -> list[int]:
    for stride in range(1, num_timesteps + 1):
        if len(range(0, num_timesteps, stride)) == count:
            return list(range(0, num_timesteps, stride))
    raise ConfigError(f"no constant stride gives exactly {count} of {num_timesteps} steps")


def _quadratic_spacing(num_timesteps: int, count: int) -> list[int]:
    if not 2 <= count <= num_timesteps:
        raise ConfigError(f"quadratic spacing needs 2 to {num_timesteps} steps, got {count}")
    steps: list[int] = []
    for value in np.round((num_timesteps - 1) * np.linspace(0.0, 1.0, count) ** 2):
        steps.append(max(int(value), steps[-1] + 1) if steps else int(value))
    # Pushing early duplicates up can overrun the end; pull the tail back below T.
    for i in range(count - 1, -1, -1):
        steps[i] = min(steps[i], num_timesteps - count + i)
    return steps


def _section_spacing(num_timesteps: int, counts: list[int]) -> list[int]:
    if len(counts) > num_timesteps:
        raise ConfigError(f"{len(counts)} sections do not fit in {num_timesteps} steps")
    base, extra = divmod(num_timesteps, len(counts))
    kept: list[int] = []
    start = 0
    for section, count in enumerate(counts):
        size = base + (1 if section < extra else 0)
        if count < 1 or count > size:
            raise ConfigError(
                f"section {section} has {size} steps; cannot keep {count} of them "
                f"(spacing {','.join(map(str, counts))} over {num_timesteps} steps)"
            )
        kept.extend(start + offset for offset in _strided(size, count))
        start += size
    return sorted(set(kept))


def _strided(size: int, count: int) -> list[int]:
    """``count`` offsets spread evenly over a section of ``size`` steps, first and last
    included, as improved-diffusion's and guided-diffusion's ``space_timesteps`` take them.

    The fractional stride (size - 1) / (count - 1) is added up in floating point and each
    running sum is rounded with Python's ``round`` (half to even). Rounding ``i * stride``
    instead differs in the last bit of the sum and so keeps another step for 278 of the
    counts 2..1000 at T = 1000 (``"21"`` keeps 500 instead of the reference's 499).
    """
    stride = 1.0 if count == 1 else (size - 1) / (count - 1)
    offsets, position = [], 0.0
    for _ in range(count):
        offsets.append(round(position))
        position += stride
    return offsets
