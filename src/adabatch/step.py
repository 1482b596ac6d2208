"""One batch's gradient: forward/backward over its micro-batches, leaving the batch-mean gradient in .grad."""
from __future__ import annotations

import contextlib

import torch
from torch.distributed.fsdp import FSDPModule
from torch.nn.parallel import DistributedDataParallel

from .data import Batch, Examples
from .distributed import SINGLE_PROCESS, World
from .losses import summed_cross_entropy


def accumulate_gradient(
    model: torch.nn.Module,
    data: Examples,
    batch: Batch,
    max_micro: int,
    autocast: contextlib.AbstractContextManager | None = None,
    world: World = SINGLE_PROCESS,
) -> torch.Tensor:
    """Backpropagate sum_i loss_i / b over this rank's micro-batches of the global batch (b examples);
    return this rank's share of the mean loss (the shares of all ranks sum to it).

    Each micro-batch contributes its summed loss divided by the *whole* batch size, so the
    accumulated .grad is exactly the gradient of the batch-mean loss, whatever the split. Under DDP
    (which averages over ranks) the loss is scaled by the world size, and gradients are
    synchronized once, in the last micro-batch's backward.
    """
    parts = batch.local_micro_batches(world.rank, world.size, max_micro)
    loss_sum: torch.Tensor | float = 0.0
    for k, part in enumerate(parts):
        x, y = data.examples(part)
        with _sync_gradients(model, k == len(parts) - 1):
            with autocast or contextlib.nullcontext():
                logits = model(x)
            loss = summed_cross_entropy(logits, y)
            (loss / len(batch) * world.size).backward()  # * 1 in one process: exactly loss / b
        loss_sum = loss_sum + loss.detach()
    return loss_sum / len(batch)


def _sync_gradients(model: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    ddp = getattr(model, "_orig_mod", model)  # torch.compile wraps the DDP module
    if isinstance(ddp, FSDPModule):  # FSDP2: reduce-scatter in the last micro-batch's backward only
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
) -> torch.Tensor:
    """float64 [summed cross-entropy, correct predictions, examples] over an iterable of (x, y)
    batches: additive, so ranks evaluating disjoint shares sum them."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64)
    for x, y in batches:
        with autocast or contextlib.nullcontext():
            logits = model(x)
        totals[0] += summed_cross_entropy(logits, y).double().cpu()
        totals[1] += (logits.argmax(dim=1) == y).sum().cpu()
        totals[2] += len(y)
    model.train(was_training)
    return totals
