from __future__ import annotations

from torch import nn
from torch.nn import functional as F

from .base import FormedRule
from .registry import register_rule


@register_rule(nn.LayerNorm)
class LayerNormRule(FormedRule):
    def per_example(self, a, delta):
        m = self.module
        shape = m.normalized_shape
        normalized = F.layer_norm(a, shape, eps=m.eps)
        per_example = lambda t: t.reshape(a.shape[0], -1, *shape).sum(1)  # noqa: E731  (over tokens)
        grads = {m.weight: per_example(normalized.mul_(delta))}
        if m.bias is not None:
            grads[m.bias] = per_example(delta)
        return [grads[p] for p in self.params]
