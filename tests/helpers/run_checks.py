"""What the training tests compare between runs: files by content, weights tensor by
tensor."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import load_file

from diffuse.train.lock import LOCK_FILE


def digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the SHA-256 of its bytes, but the lock file (it
    holds the id of the last process that trained there)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != LOCK_FILE
    }


def weights(checkpoint: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint / name))


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Whether two state dicts hold the same names and, bit for bit, the same values."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
