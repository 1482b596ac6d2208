"""One batch's gradient: forward/backward over its micro-batches, leaving the batch-mean gradient in .grad."""
from __future__ import annotations

import contextlib

import torch

from .data import Batch, TrainingData
from .losses import summed_cross_entropy


def accumulate_gradient(
    model: torch.nn.Module,
    data: TrainingData,
    batch: Batch,
    max_micro: int,
    autocast: contextlib.AbstractContextManager | None = None,
) -> torch.Tensor:
    """Backpropagate sum_i loss_i / b over micro-batches of at most `max_micro`; return the mean loss.

    Each micro-batch contributes its summed loss divided by the *whole* batch size, so the
    accumulated .grad is exactly the gradient of the batch-mean loss, whatever the split.
    """
    total = len(batch)
    loss_sum: torch.Tensor | float = 0.0
    for part in batch.split(max_micro):
        x, y = data.examples(part)
        with autocast or contextlib.nullcontext():
            logits = model(x)
        loss = summed_cross_entropy(logits, y)
        (loss / total).backward()
        loss_sum = loss_sum + loss.detach()
    return loss_sum / total


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches,
    autocast: contextlib.AbstractContextManager | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over an iterable of (x, y) batches."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64)
    correct = torch.zeros((), dtype=torch.int64)
    count = 0
    for x, y in batches:
        with autocast or contextlib.nullcontext():
            logits = model(x)
        loss_sum += summed_cross_entropy(logits, y).double().cpu()
        correct += (logits.argmax(dim=1) == y).sum().cpu()
        count += len(y)
    model.train(was_training)
    return (loss_sum / count).item(), (correct.double() / count).item()
