"""Data-parallel training over several processes (``torchrun``): who this process is, and the collectives.

A distributed run splits every global batch of :class:`~HyperSORTLib.training.trainer.EpochBatchSampler`
(the same batches, in the same order, as a single-process run) into one contiguous share per
process. The generator's gradients are summed across processes by
``DistributedDataParallel``; each process's loss is its samples' share of the global batch mean,
so the sum is the gradient of the global batch. The latent rows of the global batch, their
gradients and their loss terms are summed the same way (each row lives on one process, so the
sum is exact); every process then applies the same per-row Adam update to the same rows, and
all processes hold the same latent table and optimiser state after every step.

The process group is read from the variables ``torchrun`` sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). It has a Gloo backend for CPU tensors (used
for barriers and small objects) and, where CUDA is available, NCCL for GPU tensors. Without
those variables a run is one process and nothing here is used.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist

from HyperSORTLib.device import resolve_device


@dataclass(frozen=True)
class DistributedContext:
    """The place of this process in a data-parallel run.

    Args:
        rank: this process's index among all processes (0 writes the run directory).
        world_size: the number of processes that train together.
        local_rank: this process's index on its machine (its GPU under ``torchrun``).

    Example:
        >>> DistributedContext().is_distributed, DistributedContext(1, 2, 1).is_main
        (False, False)
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ValueError(f"world_size must be >= 1, found {self.world_size}.")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must lie in [0, {self.world_size}), found {self.rank}.")
        if self.local_rank < 0:
            raise ValueError(f"local_rank must be >= 0, found {self.local_rank}.")

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> "DistributedContext":
        """The context ``torchrun`` describes in the environment; one process when it says nothing."""
        env = os.environ if environ is None else environ
        values = {}
        for key, name in (("rank", "RANK"), ("world_size", "WORLD_SIZE"), ("local_rank", "LOCAL_RANK")):
            text = env.get(name)
            if text is None:
                continue
            try:
                values[key] = int(text)
            except ValueError:
                raise ValueError(f"Environment variable {name}={text!r} (set by torchrun) is not an integer.") from None
        return cls(**values)

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and reports progress (rank 0)."""
        return self.rank == 0

    def device(self, name: str = "auto") -> torch.device:
        """The device this process trains on, from a configured ``train.device``.

        One process: :func:`~HyperSORTLib.device.resolve_device`. Several: ``auto`` and ``cuda``
        mean the GPU of this process's ``LOCAL_RANK`` (``auto`` falls back to the CPU without
        CUDA); a single named GPU (``cuda:N``) is refused, since every process would share it.
        """
        if not self.is_distributed:
            return resolve_device(name)
        if name.startswith("cuda:"):
            raise ValueError(f"train.device '{name}' names one GPU, but {self.world_size} processes train together; "
                             f"use 'cuda' or 'auto' (each process takes the GPU of its LOCAL_RANK).")
        if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
            return torch.device("cpu")
        device = resolve_device("cuda")
        count = torch.cuda.device_count()
        if self.local_rank >= count:
            raise ValueError(f"LOCAL_RANK {self.local_rank} has no GPU of its own: this machine has {count}; "
                             f"start at most {count} processes per node (torchrun --nproc-per-node).")
        return torch.device(device.type, self.local_rank)


def init_process_group(context: DistributedContext) -> None:
    """Join the process group of ``context`` (environment rendezvous); nothing for one process.

    Idempotent. The group reduces CPU tensors with Gloo and, where CUDA is available, GPU tensors
    with NCCL (each process first binds the GPU of its local rank).
    """
    if not context.is_distributed or dist.is_initialized():
        return
    if not dist.is_available():
        raise RuntimeError("This PyTorch build has no torch.distributed; train in one process.")
    backend = "gloo"
    if torch.cuda.is_available() and dist.is_nccl_available():
        if context.local_rank < torch.cuda.device_count():
            torch.cuda.set_device(context.local_rank)
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend=backend, init_method="env://", rank=context.rank,
                            world_size=context.world_size)


def close_process_group(context: DistributedContext) -> None:
    """Leave the process group of ``context`` (nothing for one process, or when it was never joined).

    A process that exits with the group still open can abort while its Gloo threads are torn down
    ("terminate called without an active exception"), failing a run that had finished.
    """
    if context.is_distributed and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_bounds(batch_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous share of a global batch of ``batch_size``.

    The first ``batch_size % world_size`` ranks take one sample more; a rank beyond the batch
    gets an empty share (``start == stop``).

    Example:
        >>> [shard_bounds(5, r, 2) for r in range(2)], shard_bounds(1, 1, 2)
        ([(0, 3), (3, 5)], (1, 1))
    """
    base, extra = divmod(batch_size, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def sum_allreduce_hook(state, bucket):  # unannotated: DDP checks the annotations against its own types
    """DDP communication hook: sum a gradient bucket (``dist.GradBucket``) over processes, where
    DDP's default averages; returns the future of the summed buffer.

    Each process's loss is already its share of the global batch mean, so the sum is the
    global gradient. ``state``: the process group (``None``: the default one).
    """
    group = state if state is not None else dist.group.WORLD
    work = dist.all_reduce(bucket.buffer(), group=group, async_op=True)
    return work.get_future().then(lambda future: future.value()[0])


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes, in place; returns it."""
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(context: DistributedContext) -> None:
    """Wait until every process gets here (nothing for one process)."""
    if context.is_distributed:
        dist.barrier()


def broadcast_from_main(context: DistributedContext, value: Any) -> Any:
    """Rank 0's ``value`` (any picklable object) on every process."""
    if not context.is_distributed:
        return value
    box = [value if context.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def quiet_unless_main(context: DistributedContext) -> Iterator[None]:
    """Discard what this block writes to ``sys.stdout`` and ``sys.stderr`` on every rank but 0.

    Exceptions still propagate (and are reported by the caller), so a failing rank says why.
    """
    if context.is_main:
        yield
        return
    with open(os.devnull, "w", encoding="utf-8") as null, contextlib.redirect_stdout(null), \
            contextlib.redirect_stderr(null):
        yield
