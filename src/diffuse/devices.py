"""The torch device a user names, checked before any work: one rule for every command.

``torch.device("gpu")`` raises a bare RuntimeError, and ``torch.device("cuda")`` on a
CPU-only build succeeds only to fail later with an AssertionError deep inside the first
``.to(device)``. :func:`resolve_device` turns both, and an index past the last GPU, into
a :class:`~diffuse.errors.ConfigError` that names the devices this machine has.
"""

from __future__ import annotations

import torch

from diffuse.errors import ConfigError

ACCELERATORS = ("cuda", "mps", "xpu")
"""Device types besides the CPU that diffuse runs on, each checked for availability."""


def _count(kind: str) -> int:
    """How many devices of the accelerator type ``kind`` this torch can use."""
    if kind == "mps":
        return int(torch.backends.mps.is_available())
    backend = getattr(torch, kind, None)
    if backend is None or not backend.is_available():
        return 0
    return backend.device_count()


def available_devices() -> list[str]:
    """The device names this machine offers: "cpu", then e.g. "cuda:0", "cuda:1"."""
    names = ["cpu"]
    for kind in ACCELERATORS:
        count = _count(kind)
        names += [kind] if kind == "mps" and count else [f"{kind}:{i}" for i in range(count)]
    return names


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(name: str | torch.device | None) -> torch.device:
    """The device ``name`` names ("cpu", "cuda", "cuda:1", "mps", ...), or the default
    (:func:`default_device`) for None; :class:`ConfigError` for a name torch does not
    know, a device type this machine lacks, or an index past its last device."""
    if name is None:
        return default_device()
    have = ", ".join(available_devices())
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"unknown device {str(name)!r}: give cpu, cuda, cuda:N or mps (this machine has: "
            f"{have})"
        ) from None
    if device.type == "cpu":
        return device
    if device.type not in ACCELERATORS:
        raise ConfigError(
            f"diffuse does not run on {device.type!r} devices; this machine has: {have}"
        )
    count = _count(device.type)
    if count == 0:
        raise ConfigError(
            f"device {str(name)!r} is not available: this torch sees no {device.type} device "
            f"(a build without it, or no such hardware); this machine has: {have}"
        )
    if device.index is not None and device.index >= count:
        raise ConfigError(
            f"device {str(name)!r} is not available: there is no {device.type} device "
            f"{device.index}; this machine has: {have}"
        )
    return device
