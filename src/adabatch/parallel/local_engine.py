"""`batch_size.engine=local`: a tested step's statistics from the gradients of the batch's parts.

The parts are each rank's share of the batch and, within it, each micro-batch: M = Σ_ranks
(micro-batches of the rank). A tested step is the plain accumulating step with `PartCapture`'s hooks
on (`gradient_with_part_statistics`): no second backward and no per-example gradient. Where
`max_micro` alone would give fewer than `parts` parts (one process, or few ranks and a small batch),
the tested step splits each rank's share into more micro-batches; plain steps keep `max_micro`.
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from ..data import Batch, Examples, plan_layout
from ..distributed import SINGLE_PROCESS, World
from ..losses import summed_cross_entropy
from ..step import Loss
from ..stats.statistics import BatchStatistics
from ..stats.sums import Needs
from .local_step import gradient_with_part_statistics
from .part_capture import PartCapture

LOCAL = "local"  # the engine's name in batch_size.engine
PARTS_SOURCE = "parts"  # a tested record's statistics_source; the per-example engines' is PER_EXAMPLE_SOURCE
PER_EXAMPLE_SOURCE = "per_example"
MIN_PARTS = 2  # V̂ has M − 1 degrees of freedom


def local_accumulation(batch_size: int, world_size: int, max_micro: int, parts: int) -> int:
    """Micro-batches per rank in a tested step: max_micro's, or more to give at least `parts` parts."""
    return max(plan_layout(batch_size, world_size, max_micro).accumulation, math.ceil(parts / world_size))


def part_count(batch_size: int, world_size: int, accumulation: int) -> int:
    """M: each rank's share split into `accumulation` micro-batches, leaving out empty ones."""
    base, extra = divmod(batch_size, world_size)
    return sum(min(accumulation, base + (1 if rank < extra else 0)) for rank in range(world_size))


class LocalStatistics:
    """The statistics of tested steps from the batch's parts, for the policy's `needs`.

    `loss`: the task's loss of a micro-batch (summed over its examples). `model`: the bare model, or the
    FSDP2-sharded one (its local unsharded gradients are captured
    before the reduce-scatter; the norm test and gns only). `parts`: the least number of parts M.
    """

    name = LOCAL
    source = PARTS_SOURCE

    def __init__(self, model: nn.Module, needs: Needs, parts: int = MIN_PARTS, loss: Loss = summed_cross_entropy) -> None:
        if not (isinstance(parts, int) and parts >= MIN_PARTS):
            raise ValueError(f"batch_size.parts={parts} must be an integer >= {MIN_PARTS}: the test from local gradients "
                             "compares at least two parts of the batch")
        self.capture = PartCapture(model, needs)
        self.parts = parts
        self.loss = loss  # the task's: summed over the examples of a part
        self.last_parts = 0  # M of the last tested step, over all ranks

    def micro_batches(self, batch: Batch, max_micro: int, world: World = SINGLE_PROCESS) -> list[Batch]:
        accumulation = local_accumulation(len(batch), world.size, max_micro, self.parts)
        return batch.shard(world.rank, world.size).split_into(accumulation)

    def tested_step(
        self,
        step_model: nn.Module,
        data: Examples,
        batch: Batch,
        max_micro: int,
        ip_mode: str = "global",
        autocast: contextlib.AbstractContextManager | None = None,
        world: World = SINGLE_PROCESS,
    ) -> tuple[torch.Tensor, BatchStatistics]:
        """Leave the batch-mean gradient in .grad (synchronized by `step_model`: DDP or FSDP2); return
        (the global batch's mean loss and statistics from all ranks' parts, identical on every rank)."""
        model = getattr(step_model, "_orig_mod", step_model)  # eager: the hooks see each backward's gradients

        def summed_loss(module: nn.Module, part: Batch) -> torch.Tensor:
            x, y = data.examples(part)
            with autocast or contextlib.nullcontext():
                logits = module(x)
            return self.loss(logits, y)

        parts = self.micro_batches(batch, max_micro, world)
        try:
            loss, statistics = gradient_with_part_statistics(model, self.capture, parts, summed_loss, len(batch), world,
                                                             ip_mode)
            self.last_parts = self.capture.sums.parts  # all-reduced: every rank's parts
        finally:
            self.capture.detach()
        if self.last_parts < MIN_PARTS:
            raise ValueError(f"a tested step of {len(batch)} examples gave {self.last_parts} part(s); "
                             f"the test from local gradients needs {MIN_PARTS}")
        return loss, statistics

    def record(self) -> dict[str, object]:
        return {"statistics_source": PARTS_SOURCE, "parts": self.last_parts}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def reset(self) -> None:
        self.capture.detach()
