"""Test-session settings.

Each test process uses one intra-op thread: the suite runs as two pytest-xdist workers
on two cores, and OpenMP threads that wait on a busy core cost ~10 ms per operation.
"""

import torch

torch.set_num_threads(1)
