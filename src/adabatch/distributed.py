"""Data-parallel processes (torchrun / DDP): which one this is, and the few collectives training needs.

Under torchrun (WORLD_SIZE > 1) every rank draws the whole global batch of indices from the same
seeded stream and works on its own contiguous share. What crosses the network are sums (gradients,
the tests' additive sums, losses, evaluation totals) and the next batch size, never a per-example
gradient or activation.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import torch
import torch.distributed as dist

from .launch_time import set_launch_time


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum_(self, tensors: list[torch.Tensor]) -> None:
        """Replace each tensor (all of one dtype and device) by its sum over ranks, in one collective."""
        if self.size == 1 or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()

    def agree(self, value: int) -> int:
        """Rank 0's `value`, on every rank: ranks never disagree on, e.g., the next batch size."""
        if self.size == 1:
            return value
        box = torch.tensor([value], dtype=torch.int64)  # a CPU tensor: gloo carries it, also next to NCCL
        dist.broadcast(box, src=0)
        return int(box.item())

    def any(self, flag: bool) -> bool:
        """Whether `flag` is set on any rank (e.g. a stop signal that reached one rank first)."""
        if self.size == 1:
            return flag
        box = torch.tensor([int(flag)], dtype=torch.int64)
        dist.all_reduce(box, op=dist.ReduceOp.MAX)
        return bool(box.item())

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's `value` (any picklable object), in rank order, on rank 0; None elsewhere."""
        if self.size == 1:
            return [value]
        gathered = [None] * self.size if self.is_main else None
        dist.gather_object(value, gathered, dst=0)
        return gathered

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (e.g. downloads a dataset), then the other ranks."""
        if not self.is_main:
            dist.barrier()
        yield
        if self.is_main and self.size > 1:
            dist.barrier()


SINGLE_PROCESS = World()


def current_world() -> World:
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE_PROCESS
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def join_process_group() -> World:
    """Join torchrun's process group when launched by it (WORLD_SIZE > 1): NCCL for CUDA tensors
    and gloo for CPU tensors. A plain `python` launch stays a single process."""
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
            dist.init_process_group("cpu:gloo,cuda:nccl")
        else:
            dist.init_process_group("gloo")
    _agree_on_launch_time()
    return current_world()


def leave_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def run_as_rank(work: Callable[[], object]) -> NoReturn:
    """`work()` in one process of a torchrun launch; then leave the process group and end the process
    at once with work's exit code (0, a SystemExit's code, or 1 after printing an exception's
    traceback). Gloo's threads now and then abort the interpreter's teardown after the work has ended
    normally ("terminate called without an active exception", no Python frame left: about 1 launch in
    20 on two busy cores), and torchrun then reports the rank as failed; nothing is left to tear down."""
    code = 1
    try:
        work()
        code = 0
    except SystemExit as stop:  # Hydra turns a task's exception into a printed traceback and exit 1
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    leave_process_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _agree_on_launch_time() -> None:
    """Rank 0's clock, on every rank, so that all ranks name the same run directory."""
    stamp = [datetime.datetime.now()]
    if dist.is_available() and dist.is_initialized():
        dist.broadcast_object_list(stamp, src=0)
    set_launch_time(stamp[0])
