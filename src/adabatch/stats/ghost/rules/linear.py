from __future__ import annotations

from torch import nn
from torch.nn import functional as F

from .dense import DenseRule
from .registry import register_rule


@register_rule(nn.Linear)
class LinearRule(DenseRule):
    """A Linear layer over any leading dimensions: the positions are the tokens of each example."""

    def patches(self, a):
        return a.reshape(a.shape[0], -1, a.shape[-1])

    def output_rows(self, delta):
        return delta.reshape(delta.shape[0], -1, delta.shape[-1])

    def apply(self, a, weight):
        return F.linear(a, weight)

    def weight_gradient(self, a, delta):
        return delta.reshape(-1, delta.shape[-1]).T @ a.reshape(-1, a.shape[-1])
