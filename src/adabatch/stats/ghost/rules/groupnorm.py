from __future__ import annotations

import torch
from torch import nn

from .base import FormedRule
from .registry import register_rule


@register_rule(nn.GroupNorm)
class GroupNormRule(FormedRule):
    def per_example(self, a, delta):
        # PyTorch's own GroupNorm backward, on the batch seen as one example whose channels are every
        # example's channels (n x num_groups groups): its weight and bias gradients per channel are
        # the per-example gradients. It reads a and delta once (docs/ghost-engine.md).
        m = self.module
        n, channels, positions = a.shape[0], a.shape[1], a[0, 0].numel()
        a, delta = a.reshape(1, n * channels, positions).contiguous(), delta.reshape(1, n * channels, positions).contiguous()
        groups = n * m.num_groups
        _, mean, rstd = torch.native_group_norm(a, None, None, 1, n * channels, positions, groups, m.eps)
        _, weight, bias = torch.ops.aten.native_group_norm_backward(
            delta, a, mean, rstd, None, 1, n * channels, positions, groups, [False, True, True])
        grads = {m.weight: weight.view(n, channels), m.bias: bias.view(n, channels)}
        return [grads[p] for p in self.params]
