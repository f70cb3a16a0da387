"""A folder of generated samples, written atomically.

Layout::

    OUT/samples.npz      arr_0: uint8 [N, H, W, C]; arr_1: int64 [N] labels (when there are
                         classes): the layout guided-diffusion's evaluator and
                         ``diffuse eval`` read
    OUT/grid.png         the first samples tiled (enlarged when small)
    OUT/images/NNNNNN.png every sample, numbered by its index i (seed = run seed + i)
    OUT/info.json        how the samples were made
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from diffuse.images import make_grid, save_png, upscale
from diffuse.io import atomic_directory, atomic_write_json
from diffuse.outputs import OutputLayout
from diffuse.sample.pipeline import Samples

GRID_LIMIT = 64
GRID_MIN_PIXELS = 64
INFO_FILE = "info.json"
LAYOUT = OutputLayout(
    "sample folder", INFO_FILE, ("samples.npz", "grid.png", "images", "images/*.png", INFO_FILE)
)
"""The folder above: what ``overwrite`` may replace."""


def sample_grid(images: np.ndarray, limit: int = GRID_LIMIT) -> np.ndarray:
    """The first ``limit`` images in a square-ish grid, enlarged to at least 64 pixels."""
    shown = images[:limit]
    factor = max(1, math.ceil(GRID_MIN_PIXELS / shown.shape[1]))
    return make_grid(upscale(shown, factor), columns=math.ceil(math.sqrt(len(shown))))


def save_samples(
    folder: str | Path,
    samples: Samples,
    *,
    overwrite: bool = False,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write ``samples`` as the folder described above; the folder appears complete or not at
    all, and an existing one is replaced only with ``overwrite`` and only when it is an
    earlier sample folder and nothing else (:data:`LAYOUT`)."""
    with atomic_directory(folder, LAYOUT, overwrite=overwrite) as tmp:
        arrays = {"arr_0": samples.images}
        if samples.labels is not None:
            arrays["arr_1"] = samples.labels.astype(np.int64)
        np.savez(tmp / "samples.npz", **arrays)
        save_png(tmp / "grid.png", sample_grid(samples.images))
        (tmp / "images").mkdir()
        for i, image in enumerate(samples.images):
            save_png(tmp / "images" / f"{i:06d}.png", image)
        atomic_write_json(tmp / INFO_FILE, {"num_samples": len(samples.images), **(info or {})})
    return Path(folder)
