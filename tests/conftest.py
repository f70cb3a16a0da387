"""Test-session settings.

Every test gets its own empty diffuse cache ($DIFFUSE_CACHE) in a temporary folder, so
that no test reads statistics another test cached, and none writes into the home folder.

Under pytest-xdist each worker uses one intra-op thread: the default run is two workers
on two cores, and OpenMP threads that wait on a busy core cost ~10 ms per operation. A run
without workers (the slow tests, one at a time) keeps torch's default, every core.
"""

import os

import pytest
import torch

if "PYTEST_XDIST_WORKER" in os.environ:
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path_factory):
    """$DIFFUSE_CACHE set to a fresh temporary folder for the test (see the module doc)."""
    monkeypatch.setenv("DIFFUSE_CACHE", str(tmp_path_factory.mktemp("diffuse-cache")))
