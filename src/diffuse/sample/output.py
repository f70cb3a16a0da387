"""A folder of generated samples, written atomically while they are made.

Layout::

    OUT/samples.npz      arr_0: uint8 [N, H, W, C]; arr_1: int64 [N] labels (when there are
                         classes): the layout guided-diffusion's evaluator and
                         ``diffuse eval`` read
    OUT/grid.png         the first samples tiled (enlarged when small)
    OUT/images/NNNNNN.png every sample, numbered by its index i (seed = run seed + i)
    OUT/info.json        how the samples were made

:func:`write_samples` saves each batch's PNGs as the batch finishes, into the temporary
folder that becomes OUT at the end. Interrupted (Ctrl-C, or SIGTERM under
:func:`diffuse.sample.interrupt.sigterm_interrupts`), it keeps what was made: the
temporary folder becomes ``OUT.partial`` (``OUT.partial-2``, ... when that exists), with
images/ of the samples made and an info.json saying how many and how to make the rest;
OUT itself is never touched.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from diffuse.io import atomic_directory, atomic_path, atomic_write_json, current_umask
from diffuse.outputs import OutputLayout, check_output_path
from diffuse.rendering import make_grid, save_png, upscale
from diffuse.sample.interrupt import signal_name
from diffuse.sample.pipeline import Samples, join_samples

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


class SamplesInterrupted(Exception):
    """A run of :func:`write_samples` stopped by a signal; the samples made were kept.

    folder:     where they were kept (``OUT.partial``); ``None`` when none was made.
    made:       how many (samples 0 .. made - 1).
    requested:  how many were asked for.
    signal:     "SIGINT" or "SIGTERM".
    """

    def __init__(self, folder: Path | None, made: int, requested: int, signal: str) -> None:
        kept = f"kept in {folder}" if folder else "none kept"
        super().__init__(f"{signal}: {made} of {requested} samples {kept}")
        self.folder, self.made, self.requested, self.signal = folder, made, requested, signal


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
    write_samples(folder, [samples], len(samples.images), overwrite=overwrite, info=info)
    return Path(folder)


def write_samples(
    folder: str | Path,
    batches: Iterable[Samples],
    requested: int,
    *,
    overwrite: bool = False,
    info: dict[str, Any] | None = None,
    rest: Callable[[int], str] | None = None,
) -> Samples:
    """Write the samples of ``batches`` (consecutive, from sample 0; ``requested`` in all)
    as the folder described above, each batch's PNGs as soon as it comes, and return
    them. As :func:`save_samples`, the folder appears complete or not at all. On
    KeyboardInterrupt (and :class:`~diffuse.sample.interrupt.Terminated`) the samples made
    so far are kept beside it and :class:`SamplesInterrupted` is raised; ``rest(made)``
    says how to make the others, for that folder's info.json."""
    info = info or {}
    with atomic_directory(folder, LAYOUT, overwrite=overwrite) as tmp:
        done: list[Samples] = []
        made = 0
        try:
            (tmp / "images").mkdir()
            for batch in batches:
                for image in batch.images:
                    save_png(tmp / "images" / f"{made:06d}.png", image)
                    made += 1
                done.append(batch)
            samples = join_samples(done)
            arrays = {"arr_0": samples.images}
            if samples.labels is not None:
                arrays["arr_1"] = samples.labels.astype(np.int64)
            with atomic_path(tmp / "samples.npz") as npz, open(npz, "wb") as file:
                np.savez(file, **arrays)  # whole or absent, should a signal come meanwhile
            save_png(tmp / "grid.png", sample_grid(samples.images))
            atomic_write_json(tmp / INFO_FILE, {"num_samples": made, **info})
        except KeyboardInterrupt as interrupt:
            signal = signal_name(interrupt)
            if made == 0:  # nothing worth keeping: the temporary folder goes
                raise SamplesInterrupted(None, made, requested, signal) from None
            note = {
                "num_samples": made,
                "num_requested": requested,
                "interrupted_by": signal,
                "rest": None if rest is None else rest(made),
            }
            atomic_write_json(tmp / INFO_FILE, {**note, **info})
            kept = keep_partial(tmp, check_output_path(folder))
            raise SamplesInterrupted(kept, made, requested, signal) from None
    return samples


def keep_partial(tmp: Path, folder: Path) -> Path:
    """Move the temporary folder ``tmp`` of an interrupted ``folder`` to the first free
    name of ``folder.partial``, ``folder.partial-2``, ... (never onto anything there) and
    give it the umask's permissions, as a finished folder gets; return the new path."""
    kept, k = folder.with_name(f"{folder.name}.partial"), 1
    while os.path.lexists(kept):
        k += 1
        kept = folder.with_name(f"{folder.name}.partial-{k}")
    os.rename(tmp, kept)
    kept.chmod(0o777 & ~current_umask())
    return kept
