"""Test-session settings.

Under pytest-xdist each worker uses one intra-op thread: the default run is two workers
on two cores, and OpenMP threads that wait on a busy core cost ~10 ms per operation. A run
without workers (the slow tests, one at a time) keeps torch's default, every core.
"""

import os

import torch

if "PYTEST_XDIST_WORKER" in os.environ:
    torch.set_num_threads(1)
