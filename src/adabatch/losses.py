"""The training loss: cross-entropy summed over examples."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def summed_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum over examples; bf16 autocast logits are lifted to float32 first, float64 stays float64."""
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    return F.cross_entropy(logits, y, reduction="sum")
