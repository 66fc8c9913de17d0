"""Data-parallel training on several processes (``torchrun``) with PyTorch's DistributedDataParallel.

``torchrun --nproc-per-node N -m sbts train TASK ...`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address in their environment; ``distributed_from_environment`` joins
them in one process group (gloo on the CPU, nccl on CUDA, one GPU per process: the one of its local rank).

What is shared and what is not: ``batch_size`` stays the *global* batch. Every process draws the same
permutation from the same seeded generator and cuts it into the same global batches as one process
would; each takes a contiguous share of every batch (``shard``) and weights its mean loss by
``world * n_share / n_batch``, so that DDP's average of the gradients is the gradient of the global
batch's mean loss, as on one process (to float summation order). Rank 0 is the only writer: checkpoints,
logs, the run's files and whatever is printed on stdout; it also evaluates the validation set and
shares the metrics, so that every process takes the same best-epoch and early-stopping decisions.
Batch norm is not synchronised (``MaskedBatchNorm`` takes a padding mask, which ``SyncBatchNorm``
cannot): each process normalises its own share.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NamedTuple

import torch
from torch import distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sbts.errors import ConfigError

WRITER_RANK = 0  # the process that writes the run directory and prints
BACKENDS = {"cpu": "gloo", "cuda": "nccl"}  # process-group backend by device type
# DDP without its per-step buffer broadcast: the frozen weights and masks are identical everywhere, and only the
# writer evaluates (batch-norm running statistics are its own). Newer PyTorch renamed the flag.
NO_BUFFER_BROADCAST = ({"forward_sync_buffers": False}
                       if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                       else {"broadcast_buffers": False})
BATCH_NORM_WARNING = ("norm batch under torchrun: each process normalises its own share of a batch (batch norm is "
                      "not synchronised), so the run differs from one on a single process")


class Shard(NamedTuple):
    """A process's share of a global batch: the examples, the weight of their mean loss, how many they are."""

    batch: Any
    weight: float
    examples: int  # 0 for the stand-in example of an empty share


def share_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous share [start, stop) of ``n`` items that ``rank`` takes; the first ``n % world_size``
    ranks take one item more."""
    size, extra = divmod(n, world_size)
    start = rank * size + min(rank, extra)
    return start, start + size + (rank < extra)


def slice_examples(batch: Any, start: int, stop: int) -> Any:
    """Examples ``start:stop`` of a batch whose tensors hold one row per example (a tuple or a named tuple)."""
    parts = [tensor[start:stop] for tensor in batch]
    return type(batch)(*parts) if hasattr(batch, "_fields") else tuple(parts)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands among the training processes; one process alone is ``SINGLE_PROCESS``."""

    rank: int = WRITER_RANK
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None  # the device of the process group's collectives

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        return self.rank == WRITER_RANK

    def process_device(self, device: torch.device) -> torch.device:
        """The device this process trains on: under torchrun each process takes the GPU of its local rank."""
        if not self.is_distributed or device.type != "cuda":
            return device
        if device.index is not None:
            raise ConfigError(f"device {device} names one GPU, but under torchrun each process takes the GPU of "
                              "its local rank: use --device cuda (or CUDA_VISIBLE_DEVICES to choose the GPUs)")
        if self.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"local rank {self.local_rank} has no GPU: this machine has "
                              f"{torch.cuda.device_count()}; start at most that many processes per node")
        return torch.device("cuda", self.local_rank)

    # --- collectives (nothing to do on one process) -----------------------------------------------------------
    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier(**({"device_ids": [self.device.index]} if self.device.type == "cuda" else {}))

    def sum(self, values: list[float]) -> list[float]:
        """The sums of ``values`` over the processes."""
        if not self.is_distributed:
            return values
        summed = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(summed)
        return summed.tolist()

    def from_writer(self, value: Any) -> Any:
        """The writer's ``value`` on every process (any picklable value; the others pass a placeholder)."""
        if not self.is_distributed:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=WRITER_RANK, device=self.device)
        return holder[0]

    # --- training -----------------------------------------------------------------------------------------
    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` under DDP, which all-reduces the gradients of its trainable tensors in backward."""
        if not self.is_distributed:
            return module
        return DistributedDataParallel(module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                       **NO_BUFFER_BROADCAST)

    def shard(self, batch: Any, slice_batch: Callable[[Any, int, int], Any] = slice_examples) -> Shard:
        """This process's share of a global batch (``slice_batch(batch, start, stop)`` cuts examples out of it;
        ``len(batch[0])`` is its number of examples)."""
        n = len(batch[0])
        if not self.is_distributed:
            return Shard(batch, 1.0, n)
        start, stop = share_bounds(n, self.rank, self.world_size)
        if start == stop:  # fewer examples than processes: still take part in DDP's all-reduce, contributing 0
            return Shard(slice_batch(batch, 0, 1), 0.0, 0)
        return Shard(slice_batch(batch, start, stop), self.world_size * (stop - start) / n, stop - start)


SINGLE_PROCESS = DistributedContext()


def _environment_int(name: str, default: int | None = None) -> int:
    text = os.environ.get(name)
    if text is None and default is not None:
        return default
    try:
        return int(text)
    except (TypeError, ValueError):
        raise ConfigError(f"environment variable {name}={text!r}: expected an integer (torchrun sets it)") from None


@contextmanager
def distributed_from_environment(device: torch.device) -> Iterator[DistributedContext]:
    """The process group that torchrun's environment describes (``SINGLE_PROCESS`` without one), for training
    on ``device``; torn down on leaving."""
    world_size = _environment_int("WORLD_SIZE", default=1)
    if world_size <= 1:
        yield SINGLE_PROCESS
        return
    if not dist.is_available():
        raise ConfigError(f"WORLD_SIZE={world_size}, but this PyTorch build has no torch.distributed")
    context = DistributedContext(_environment_int("RANK"), world_size, _environment_int("LOCAL_RANK", default=0))
    context = dataclasses.replace(context, device=context.process_device(device))
    if context.device.type == "cuda":
        torch.cuda.set_device(context.device)
    dist.init_process_group(BACKENDS[context.device.type], rank=context.rank, world_size=world_size)
    try:
        yield context
    finally:
        dist.destroy_process_group()

