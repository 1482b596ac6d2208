"""A tested step: the batch gradient through per-example gradients, and the batch's test statistics.

Memory stays bounded by the micro-batch: each micro-batch's per-example gradients are reduced to the
additive sums and dropped. The inner-product sums need the final batch gradient, so when the batch is
split into several micro-batches they take a second pass that recomputes each micro-batch's
per-example gradients (about one more tested forward/backward over the batch); an unsplit batch
reuses the gradients it already has.

Across data-parallel ranks the additive sums are all-reduced before the batch gradient is formed,
and the inner-product sums after the second phase: the statistics are those of the global batch.
"""
from __future__ import annotations

import contextlib

import torch

from ..data import Batch, TrainingData
from ..distributed import SINGLE_PROCESS, World
from .engines import PerExampleEngine
from .statistics import BatchStatistics, batch_statistics
from .sums import GradientSums, Needs


def gradient_with_statistics(
    engine: PerExampleEngine,
    data: TrainingData,
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
    loss_sum: torch.Tensor | float = 0.0
    kept = None
    for part in parts:
        x, y = data.examples(part)
        loss, per_example = engine.per_example_gradients(x, y, autocast)
        sums.add_examples(per_example)
        loss_sum = loss_sum + loss
        kept = per_example if len(parts) == 1 else None
    world.sum_(sums.first_phase())
    sums.count = len(batch)  # every rank's examples are in the sums now
    mean_grad = sums.mean_gradient()
    if needs.inner_products:
        for part in parts:
            per_example = kept if kept is not None else engine.per_example_gradients(*data.examples(part), autocast)[1]
            sums.add_inner_products(per_example, mean_grad)
        world.sum_(sums.second_phase())
    for p, g in zip(engine.params, mean_grad):
        p.grad = g.to(p.dtype)
    return loss_sum / len(batch), batch_statistics(sums, ip_mode)
