"""One label per example: summed cross-entropy, and accuracy (the runs' behaviour before tasks)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from adabatch.losses import summed_cross_entropy
from adabatch.tasks.base import Task, float_logits


class Classification(Task):
    name = "classification"
    metric = "acc"
    higher_is_better = True
    totals = ("loss_sum", "correct", "examples")

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """outputs (n, classes) logits, targets (n,) labels."""
        return summed_cross_entropy(outputs, targets)

    def per_example_losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(float_logits(outputs), targets, reduction="none")

    def evaluation_totals(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.stack([  # the numbers adabatch.step.evaluation_totals adds, in the same order of operations
            summed_cross_entropy(outputs, targets).double().cpu(),
            (outputs.argmax(dim=1) == targets).sum().cpu().double(),
            torch.tensor(float(len(targets)), dtype=torch.float64),
        ])

    def metrics(self, totals: torch.Tensor) -> dict[str, float]:
        loss_sum, correct, examples = totals.tolist()
        return {"loss": loss_sum / examples, "acc": correct / examples}
