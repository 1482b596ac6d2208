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
from ..stats.sums import squared_norms
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
    is its number of examples) of a global batch of `batch_size` examples; return (the global batch's mean
    loss and its statistics from all ranks' parts, both identical on every rank). The loss travels in
    the statistics' collective: a tested step synchronizes the ranks as often as a plain one."""
    sums = capture.new_sums()
    capture.attach(sums)
    loss_scale = world.size / batch_size  # DDP and FSDP2 average over ranks: * 1 in one process
    loss_sum: torch.Tensor | float = 0.0
    for k, micro_batch in enumerate(micro_batches):
        with synchronized(model, k == len(micro_batches) - 1), capture.part(len(micro_batch), loss_scale):
            loss = summed_loss(model, micro_batch)
            (loss * loss_scale).backward()
        loss_sum = loss_sum + loss.detach()
    loss_sum = torch.as_tensor(loss_sum, dtype=torch.float64, device=sums.sq_norm.device).reshape(1)  # summed with the sums
    if capture.sharded:
        tensor_sq = squared_norms([None if p.grad is None else local_shard(p.grad) for p in capture.params],
                                  sums.sq_norm.device)  # this rank's shards: their sum is ||gbar^t||^2
        world.sum_([*sums.first_phase(), tensor_sq, loss_sum])
        statistics = part_statistics(sums, tensor_sq=tensor_sq, ip_mode=ip_mode)
    else:
        mean_grad = [torch.zeros_like(p) if p.grad is None else p.grad for p in capture.params]
        statistics = reduce_part_statistics(sums, mean_grad, world, ip_mode, capture.kept, riders=[loss_sum])
    return loss_sum[0] / batch_size, statistics


def local_shard(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of an FSDP2 gradient (a DTensor), the tensor itself otherwise."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor
