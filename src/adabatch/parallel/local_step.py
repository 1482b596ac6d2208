"""A plain accumulating step that also gives the tests' statistics from its parts (paper-notes §5).

The step is `accumulate_gradient`'s (the batch-mean gradient left in .grad, synchronized once in the
last micro-batch's backward under DDP or FSDP2), with each micro-batch's backward inside a
`PartCapture.part`: the statistics cost the hooks' squares and a few scalars in the all-reduce, not a
pass of per-example gradients. Task-agnostic: `summed_loss(micro_batch)` gives the micro-batch's
summed per-example loss (classification, next-token, ...).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..distributed import SINGLE_PROCESS, World
from ..stats.local import part_statistics, reduce_part_statistics
from ..stats.statistics import BatchStatistics
from ..step import synchronized
from .part_capture import PartCapture


def gradient_with_part_statistics(
    model: nn.Module,
    capture: PartCapture,
    micro_batches: Sequence[Any],
    summed_loss: Callable[[nn.Module, Any], torch.Tensor],
    batch_size: int,
    world: World = SINGLE_PROCESS,
    ip_mode: str = "global",
) -> tuple[torch.Tensor, BatchStatistics]:
    """Backpropagate Σ_i loss_i / b over this rank's `micro_batches` (each one part; len() of a micro-batch
    is its number of examples) of a global batch of `batch_size` examples; return (this rank's share of
    the mean loss, the global batch's statistics from all ranks' parts, identical on every rank)."""
    sums = capture.new_sums()
    capture.attach(sums)
    loss_scale = world.size / batch_size  # DDP and FSDP2 average over ranks: * 1 in one process
    loss_sum: torch.Tensor | float = 0.0
    for k, micro_batch in enumerate(micro_batches):
        with synchronized(model, k == len(micro_batches) - 1), capture.part(len(micro_batch), loss_scale):
            loss = summed_loss(model, micro_batch)
            (loss * loss_scale).backward()
        loss_sum = loss_sum + loss.detach()
    if capture.sharded:
        world.sum_(sums.first_phase())
        tensor_sq = torch.stack([local_shard(p.grad).double().pow(2).sum() if p.grad is not None
                                 else torch.zeros((), dtype=torch.float64, device=p.device) for p in capture.params])
        world.sum_([tensor_sq])
        return loss_sum / batch_size, part_statistics(sums, tensor_sq=tensor_sq, ip_mode=ip_mode)
    mean_grad = [torch.zeros_like(p) if p.grad is None else p.grad for p in capture.params]
    return loss_sum / batch_size, reduce_part_statistics(sums, mean_grad, world, ip_mode, capture.kept)


def local_shard(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of an FSDP2 gradient (a DTensor), the tensor itself otherwise."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor
