"""One batch's gradient: forward/backward over its micro-batches, leaving the batch-mean gradient in .grad."""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable

import torch
from torch.nn.parallel import DistributedDataParallel

from .data import Batch, Examples
from .distributed import SINGLE_PROCESS, World
from .losses import summed_cross_entropy
from .tasks import TASKS, Task

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs, targets) -> the examples' losses, summed


def accumulate_gradient(
    model: torch.nn.Module,
    data: Examples,
    batch: Batch,
    max_micro: int,
    autocast: contextlib.AbstractContextManager | None = None,
    world: World = SINGLE_PROCESS,
    loss: Loss = summed_cross_entropy,
) -> torch.Tensor:
    """Backpropagate sum_i loss_i / b over this rank's micro-batches of the global batch (b examples);
    return this rank's share of the mean loss (the shares of all ranks sum to it).

    Each micro-batch contributes its summed loss divided by the *whole* batch size, so the
    accumulated .grad is exactly the gradient of the batch-mean loss, whatever the split. Under DDP
    (which averages over ranks) the loss is scaled by the world size, and gradients are
    synchronized once, in the last micro-batch's backward. `loss`: the task's (`Task.loss`), summed
    over the examples.
    """
    parts = batch.local_micro_batches(world.rank, world.size, max_micro)
    loss_sum: torch.Tensor | float = 0.0
    for k, part in enumerate(parts):
        x, y = data.examples(part)
        with synchronized(model, k == len(parts) - 1):
            with autocast or contextlib.nullcontext():
                logits = model(x)
            part_loss = loss(logits, y)
            (part_loss / len(batch) * world.size).backward()  # * 1 in one process: exactly loss / b
        loss_sum = loss_sum + part_loss.detach()
    return loss_sum / len(batch)


def synchronized(model: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Gradients cross ranks only in the last micro-batch's backward (DDP's no_sync, FSDP2's
    set_requires_gradient_sync); a model in one process, or compiled around them, as it is."""
    ddp = getattr(model, "_orig_mod", model)  # torch.compile wraps the DDP module
    fsdp = sys.modules.get("torch.distributed.fsdp")  # loaded by a run that shards (seconds of imports), else none is
    if fsdp is not None and isinstance(ddp, fsdp.FSDPModule):  # FSDP2: reduce-scatter in the last micro-batch's backward only
        ddp.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()
    if sync or not isinstance(ddp, DistributedDataParallel):
        return contextlib.nullcontext()
    return ddp.no_sync()


@torch.no_grad()
def evaluation_totals(
    model: torch.nn.Module,
    batches,
    autocast: contextlib.AbstractContextManager | None = None,
    task: Task = TASKS["classification"],
) -> torch.Tensor:
    """float64 `task.totals` (classification: [summed cross-entropy, correct predictions, examples]) over
    an iterable of (x, y) batches: additive, so ranks evaluating disjoint shares sum them; `task.metrics`
    turns them into the reported numbers."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(len(task.totals), dtype=torch.float64)
    for x, y in batches:
        with autocast or contextlib.nullcontext():
            outputs = model(x)
        totals += task.evaluation_totals(outputs, y)
    model.train(was_training)
    return totals
