"""Next-token prediction over sequences: an example is a sequence, its loss the mean cross-entropy of
its tokens' predictions (nats per token), so g_i is the gradient of that mean and the batch's loss is the
sum over sequences. Evaluation reports nats per token over all tokens, and its exponential, perplexity."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from adabatch.tasks.base import Task, float_logits


class NextToken(Task):
    name = "next_token"
    metric = "perplexity"
    higher_is_better = False
    totals = ("token_loss_sum", "tokens", "sequences")

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """outputs (n, T, vocab) logits, targets (n, T) token ids: sum over sequences of the mean over T."""
        return self.token_losses(outputs, targets).sum() / targets.shape[-1]

    def per_example_losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.token_losses(outputs, targets).view(targets.shape).mean(dim=-1)

    @staticmethod
    def token_losses(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Each token's cross-entropy, flat (n * T,)."""
        return F.cross_entropy(float_logits(outputs).reshape(-1, outputs.shape[-1]), targets.reshape(-1), reduction="none")

    def evaluation_totals(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.stack([
            self.token_losses(outputs, targets).double().sum().cpu(),
            torch.tensor(float(targets.numel()), dtype=torch.float64),
            torch.tensor(float(len(targets)), dtype=torch.float64),
        ])

    def metrics(self, totals: torch.Tensor) -> dict[str, float]:
        token_loss_sum, tokens, _ = totals.tolist()
        nats = token_loss_sum / tokens
        return {"loss": nats, "perplexity": math.exp(nats)}
