"""Reading images ahead in worker processes, so that decoding is off the critical path.

:func:`read_ahead` yields ``read(indices)`` for a sequence of index lists, in order. With
``workers`` > 0 the reads run in that many processes of a ``torch.utils.data.DataLoader``,
each a few lists ahead of the consumer; with 0 they run in this process when asked for.
Either way the results are the same values in the same order: the reads are pure
functions of the indices, so how many processes decode them changes nothing but the time.

Worker processes ignore SIGINT and SIGTERM: a Ctrl-C (sent to the whole process group)
reaches the main process, which stops cleanly and shuts the workers down, instead of
killing a worker in the middle of a batch.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from torch.utils.data import DataLoader, Dataset

T = TypeVar("T")

MAX_DEFAULT_WORKERS = 4


def default_workers() -> int:
    """min(4, usable CPUs - 1): the main process keeps a core for the network."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity mask
        cpus = os.cpu_count() or 1
    return max(0, min(MAX_DEFAULT_WORKERS, cpus - 1))


def read_ahead(
    read: Callable[[list[int]], T],
    batches: Iterable[list[int]],
    workers: int,
    *,
    pin_memory: bool = False,
) -> Iterator[T]:
    """``read(batch)`` for each of ``batches``, in order, computed by ``workers`` processes
    ahead of the consumer (0: in this process, on demand). ``read`` must be picklable
    (a method of a picklable object) when ``workers`` > 0; ``pin_memory`` puts the tensors
    of each result in page-locked memory (faster copies to a CUDA device).

    Close the iterator (``contextlib.closing``) when stopping early: that shuts the
    worker processes down.
    """
    if workers == 0:
        yield from map(read, batches)
        return
    loader = DataLoader(
        _Reads(read),
        sampler=batches,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        worker_init_fn=_ignore_stop_signals,
    )
    iterator = iter(loader)
    try:
        yield from iterator
    finally:
        del iterator  # joins the worker processes


class _Reads(Dataset):
    """A "data set" whose item for a list of indices is ``read(indices)``."""

    def __init__(self, read: Callable[[list[int]], T]) -> None:
        self.read = read

    def __getitem__(self, indices: list[int]) -> T:
        return self.read(indices)


def _ignore_stop_signals(worker_id: int) -> None:
    """In a worker process: leave SIGINT and SIGTERM to the main process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
