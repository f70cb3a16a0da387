"""Every random draw of training as a pure function of (seed, step): exact resume for free.

The data order, the timesteps, the noise, the label dropout, the flips and the dropout
masks of step s come from generators seeded with (seed, s, stream), never from the global
random state. A run that restarts at step s therefore draws exactly what an uninterrupted
run draws at step s, on one process or many, and a checkpoint's "random state" is its
step number.

Draws that concern the whole batch (which images, their t, noise, flips and label drops)
are made for the global batch on every process, which keeps its own rows: a run on R
processes sees, example by example, what one process with the same global batch sees.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

# Streams: independent sequences derived from the same seed.
DATA_ORDER, BATCH, DROPOUT, PREVIEW, NOISE, EVALUATION, FID_SAMPLES = range(7)


def derive_seed(*words: int) -> int:
    """A 63-bit seed mixing ``words`` (NumPy's SeedSequence: nearby inputs give unrelated seeds)."""
    state = np.random.SeedSequence([int(w) for w in words]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def generator(*words: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh generator on ``device`` seeded with :func:`derive_seed` of ``words``."""
    return torch.Generator(device=device).manual_seed(derive_seed(*words))


class BatchOrder:
    """Which examples each step trains on: a fresh permutation of the set every epoch.

    size:       number of examples in the data set.
    batch_size: examples per step over all processes.
    seed:       the run's seed.

    Step s takes positions [s B, (s + 1) B) of the concatenated epochs, so the order is
    a function of the step alone; :meth:`shard` gives a process its contiguous rows.
    """

    def __init__(self, size: int, batch_size: int, seed: int) -> None:
        self.size = int(size)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self._epoch = -1
        self._permutation = torch.empty(0, dtype=torch.long)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of the examples in ``epoch``."""
        if epoch != self._epoch:
            g = generator(self.seed, DATA_ORDER, epoch)
            self._permutation = torch.randperm(self.size, generator=g)
            self._epoch = epoch
        return self._permutation

    def indices(self, step: int) -> torch.Tensor:
        """Example indices [batch_size] of ``step`` (the global batch)."""
        start = step * self.batch_size
        parts, position = [], start
        while position < start + self.batch_size:
            epoch, offset = divmod(position, self.size)
            take = min(self.size - offset, start + self.batch_size - position)
            parts.append(self.permutation(epoch)[offset : offset + take])
            position += take
        return torch.cat(parts)

    def epoch(self, step: int) -> float:
        """Epochs completed at the start of ``step`` (fractional)."""
        return step * self.batch_size / self.size


def shard(batch_size: int, rank: int, world_size: int) -> slice:
    """Rows of the global batch that process ``rank`` of ``world_size`` trains on."""
    per_process = batch_size // world_size
    return slice(rank * per_process, (rank + 1) * per_process)


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block with the global RNG (used by dropout) seeded with ``seed``, and
    restore the caller's global RNG state afterwards."""
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda" if cuda else "cpu"):
        torch.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.manual_seed(seed)
        yield
