"""Data parallelism across the processes of one launch (`accelerate launch`, torchrun): this process's rank
and the few collectives the preference loop and the lm-eval model need. A process started alone starts no
process group and runs no collective, so the single-process path is what it was without this module."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

# where launchers put the number of processes: torchrun / accelerate launch, then MPI (accelerate's multi-CPU)
_WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_alone = False


def launched_world_size() -> int:
    """How many processes this one was launched with: an initialised process group's size, else what a
    launcher put in the environment; 1 for a process started alone."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    for name in _WORLD_SIZE_VARIABLES:
        if os.environ.get(name):
            return int(os.environ[name])
    return 1


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Within the block this process acts as if it had been launched alone (rank 0 of 1): for work that one
    rank does for all while the others wait, e.g. training the vector that a distributed evaluation loads."""
    global _alone
    previous, _alone = _alone, True
    try:
        yield
    finally:
        _alone = previous


@dataclass(frozen=True)
class DataParallel:
    """This process's place among the `world_size` processes that share the work (rank 0 of 1: alone)."""

    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of n items; parts differ in size by at most one and may be empty."""
        return slice(n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size)

    def all_reduce_sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over the ranks, in place (every rank gets the same values); returns it."""
        if self.active:
            buffer = tensor.to(_collective_device())
            dist.all_reduce(buffer)
            if buffer is not tensor:
                tensor.copy_(buffer)
        return tensor

    def on_main(self, fn: Callable[[], T]) -> T:
        """`fn()` run on rank 0 only (the one that touches files); every rank gets its result, or raises its
        exception, so no rank waits forever on one that failed."""
        if not self.active:
            return fn()
        payload: list[Any] = [None]
        if self.is_main:
            try:
                payload[0] = (fn(), None)
            except Exception as error:  # noqa: BLE001 - not swallowed: re-raised on every rank below
                payload[0] = (None, error)
        dist.broadcast_object_list(payload, src=0)
        result, error = payload[0]
        if error is not None:
            raise error
        return result

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def data_parallel() -> DataParallel:
    """This process's place in its launch. When a launcher started several processes and nothing has set up
    torch.distributed yet, it is set up here through accelerate's PartialState (which reads every launcher
    accelerate supports) with the gloo backend: the preference loop runs on the CPU. Inside `alone()`, and
    for a process started alone, rank 0 of 1."""
    if _alone or launched_world_size() <= 1:
        return DataParallel()
    if not dist.is_initialized():
        from accelerate import PartialState

        PartialState(cpu=True)
    return DataParallel(dist.get_rank(), dist.get_world_size())


def _collective_device() -> torch.device:
    """NCCL (a group an Accelerator set up on GPUs) reduces CUDA tensors only; every other backend CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
