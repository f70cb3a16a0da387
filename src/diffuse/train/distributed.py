"""Data-parallel training with torch.distributed, as started by ``torchrun``.

``torchrun --nproc_per_node N --no-python diffuse train ...`` starts N processes with
RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous in their environment; :func:`setup` joins
the group (NCCL on CUDA, gloo on the CPU) and picks the process's device. Process 0
alone writes files; every process reads the data set and the checkpoint it resumes
from. No MPI is needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from diffuse.devices import resolve_device


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in the run.

    rank:       index of this process (0 writes the files).
    world_size: number of processes.
    device:     the device this process trains on.
    owned:      whether :func:`setup` created the group (and :func:`teardown` ends it).
    """

    rank: int
    world_size: int
    device: torch.device
    owned: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the processes (in place; a no-op on one process)."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def is_first_process() -> bool:
    """Whether this process is process 0 of its run (the only one, without torchrun); true
    before :func:`setup` too, from the environment torchrun sets."""
    return int(os.environ.get("RANK", "0")) == 0


def setup(device: str | torch.device | None = None) -> ProcessGroup:
    """Join the process group described by the environment, or run as a single process.

    device: "cpu", "cuda", "cuda:1", ... (None: CUDA when available). In a distributed run
            on CUDA each process takes the GPU of its LOCAL_RANK.
    """
    device = resolve_device(device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1 and not dist.is_initialized():
        return ProcessGroup(0, 1, device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return ProcessGroup(dist.get_rank(), dist.get_world_size(), device, owned)


def teardown(group: ProcessGroup) -> None:
    """Leave the process group if :func:`setup` joined it."""
    if group.owned and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
