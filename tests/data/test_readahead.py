"""Reading ahead in worker processes: the same reads in the same order, workers that stop
when the reader does, and a default that leaves a core to training."""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
import pytest
import torch

from diffuse.data import FolderSource
from diffuse.data.readahead import default_workers, read_ahead
from helpers.data_files import save_image


@pytest.fixture
def source(tmp_path) -> FolderSource:
    rng = np.random.default_rng(0)
    paths = [tmp_path / f"{i:02d}.png" for i in range(12)]
    for path in paths:
        save_image(path, rng.integers(0, 256, (10, 14, 3), dtype=np.uint8))
    return FolderSource(paths, image_size=8, grey=False)


def test_reads_arrive_in_order_whatever_the_number_of_workers(source):
    batches = [[3, 1], [0], [11, 2, 5], [7, 7]]
    alone = list(read_ahead(source.read, batches, workers=0))
    ahead = list(read_ahead(source.read, batches, workers=2))
    assert len(alone) == len(ahead) == 4
    for a, b in zip(alone, ahead, strict=True):
        assert a.dtype == torch.uint8 and torch.equal(a, b)
    assert torch.equal(alone[2], source.read([11, 2, 5]))


def test_closing_early_stops_the_workers(source):
    reads = read_ahead(source.read, ([i % 12] for i in range(10**6)), workers=2)
    next(reads)
    assert len(multiprocessing.active_children()) == 2
    reads.close()
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize(("cpus", "workers"), [(1, 0), (2, 1), (4, 3), (64, 4)])
def test_the_default_leaves_a_core_to_training(monkeypatch, cpus, workers):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    assert default_workers() == workers
