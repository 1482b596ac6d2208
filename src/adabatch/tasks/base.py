"""What a run's examples are for: the loss a step backpropagates and what an evaluation measures."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch


def float_logits(logits: torch.Tensor) -> torch.Tensor:
    """bf16 autocast logits lifted to float32 for the loss; float32 and float64 stay as they are."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


class Task(ABC):
    """A task's loss over a batch is the sum of its examples' losses, so the gradient of the batch's loss
    is the sum of the per-example gradients g_i that the statistics engines compute.

    Evaluation is additive: `evaluation_totals` of disjoint batches (or ranks) add up, and `metrics`
    turns the sum into the reported numbers: "loss" and the task's `metric`."""

    name: ClassVar[str]
    metric: ClassVar[str]  # the headline evaluation metric, a key of `metrics`
    higher_is_better: ClassVar[bool]
    totals: ClassVar[tuple[str, ...]]  # what `evaluation_totals` holds, in order

    @abstractmethod
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The batch's loss: its examples' losses summed (a scalar)."""

    @abstractmethod
    def per_example_losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Each example's loss, shape (n,): they sum to `loss`."""

    @abstractmethod
    def evaluation_totals(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """float64 (len(totals),) on the CPU, additive over batches and ranks."""

    @abstractmethod
    def metrics(self, totals: torch.Tensor) -> dict[str, float]:
        """The reported numbers from summed totals: "loss" and `metric` at least."""

    def best(self, values: list[float]) -> float | None:
        """The best of a run's values of `metric`."""
        if not values:
            return None
        return max(values) if self.higher_is_better else min(values)
