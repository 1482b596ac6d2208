"""A tested step: the batch gradient and the batch's test statistics, through a statistics engine.

Memory stays bounded by the micro-batch: each micro-batch is reduced to the additive sums. The
inner-product sums need the final batch gradient, so when the batch is split (into micro-batches, or
across ranks for the ghost engine) they take a second pass over each micro-batch; an unsplit batch
keeps what it needs from the first.

Across data-parallel ranks the additive sums are all-reduced before the batch gradient is formed,
and the inner-product sums after the second phase: the statistics are those of the global batch.
"""
from __future__ import annotations

import contextlib

import torch

from ..data import Batch, Examples
from ..distributed import SINGLE_PROCESS, World
from .base import StatisticsEngine
from .statistics import BatchStatistics, batch_statistics
from .sums import GradientSums, Needs


def gradient_with_statistics(
    engine: StatisticsEngine,
    data: Examples,
    batch: Batch,
    max_micro: int,
    needs: Needs,
    ip_mode: str = "global",
    autocast: contextlib.AbstractContextManager | None = None,
    world: World = SINGLE_PROCESS,
) -> tuple[torch.Tensor, BatchStatistics]:
    """Leave the batch-mean gradient in p.grad; return (this rank's share of the mean loss, statistics
    of the whole batch, identical on every rank)."""
    parts = batch.local_micro_batches(world.rank, world.size, max_micro)
    sums = GradientSums(engine.params, needs)
    keep = needs.inner_products and len(parts) == 1 and engine.can_keep(world.size)
    loss_sum: torch.Tensor | float = 0.0
    for part in parts:
        loss_sum = loss_sum + engine.first_phase(*data.examples(part), sums, autocast, keep)
    world.sum_(sums.first_phase())
    sums.count = len(batch)  # every rank's examples are in the sums now
    mean_grad = sums.take_mean_gradient()
    if needs.inner_products:
        if keep:
            engine.kept_inner_products(sums, mean_grad)
        else:
            for part in parts:
                engine.inner_products(*data.examples(part), sums, mean_grad, autocast)
        world.sum_(sums.second_phase())
    for p, g in zip(engine.params, mean_grad):
        p.grad = g.to(p.dtype)
    return loss_sum / len(batch), batch_statistics(sums, ip_mode, mean_grad)
