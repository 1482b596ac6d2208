"""A tested step: the batch gradient and the batch's test statistics, through a statistics engine.

Memory stays bounded by the micro-batch: each micro-batch is reduced to the additive sums. The
inner-product sums need the final batch gradient, so when the batch is split (into micro-batches, or
across ranks for the ghost engine) they take a second pass over each micro-batch; an unsplit batch
keeps what it needs from the first. The second pass replays each micro-batch's random generators, so
that dropout draws the first pass's masks: the statistics are those of the gradients of the step.

Across data-parallel ranks the additive sums are all-reduced before the batch gradient is formed,
and the inner-product sums after the second phase: the statistics are those of the global batch.
"""
from __future__ import annotations

import contextlib

import torch

from ..data import Batch, Examples
from ..distributed import SINGLE_PROCESS, World
from ..random_state import rng_state, set_rng_state
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
    replay = needs.inner_products and not keep
    first_pass_rng = []  # each micro-batch's generators as its first pass began: its second pass draws the same masks
    loss_sum: torch.Tensor | float = 0.0
    for part in parts:
        if replay:
            first_pass_rng.append(rng_state())
        loss_sum = loss_sum + engine.first_phase(*data.examples(part), sums, autocast, keep)
    world.sum_(sums.first_phase())
    sums.count = len(batch)  # every rank's examples are in the sums now
    mean_grad = sums.take_mean_gradient()
    if needs.inner_products:
        if keep:
            engine.kept_inner_products(sums, mean_grad)
        else:
            after_first_pass = rng_state()
            for part, state in zip(parts, first_pass_rng):
                set_rng_state(state)
                engine.inner_products(*data.examples(part), sums, mean_grad, autocast)
            set_rng_state(after_first_pass)  # the stream goes on as if there had been one pass
        world.sum_(sums.second_phase())
    for p, g in zip(engine.params, mean_grad):
        p.grad = g.to(p.dtype)
    return loss_sum / len(batch), batch_statistics(sums, ip_mode, mean_grad)
