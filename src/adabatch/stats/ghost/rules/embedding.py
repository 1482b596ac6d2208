"""nn.Embedding: row x_t of the table gets delta_t, so an example's gradient adds the output gradients
of its tokens per distinct token: ||g_i||² = sum_{t,t'} [x_it = x_it'] <delta_it, delta_it'> (the Gram
form, T² d per example), or from g_i formed by a scatter-add (V d per example: small vocabularies)."""
from __future__ import annotations

import torch
from torch import nn

from ..forms import FormPolicy
from .base import FormedRule, LayerSums, UnsupportedLayer, formed_sums
from .registry import register_rule


@register_rule(nn.Embedding)
class EmbeddingRule(FormedRule):
    def __init__(self, module: nn.Embedding, policy: FormPolicy) -> None:
        super().__init__(module, policy)
        if module.max_norm is not None or module.scale_grad_by_freq or module.sparse:
            raise UnsupportedLayer(f"Embedding with max_norm={module.max_norm}, scale_grad_by_freq="
                                   f"{module.scale_grad_by_freq}, sparse={module.sparse} (supported: none of them)")

    def _rows(self, a: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, T) token indices and (n, T, d) their output gradients, a padding token's set to zero."""
        tokens, rows = a.reshape(a.shape[0], -1), delta.reshape(delta.shape[0], -1, delta.shape[-1])
        if self.module.padding_idx is not None:
            rows = rows.masked_fill((tokens == self.module.padding_idx).unsqueeze(-1), 0)
        return tokens, rows

    def per_example(self, a, delta):
        tokens, rows = self._rows(a, delta)
        n, vocabulary, d = len(tokens), self.module.num_embeddings, rows.shape[-1]
        grads = rows.new_zeros(n, vocabulary, d)
        grads.scatter_add_(1, tokens.unsqueeze(-1).expand_as(rows), rows)
        return [grads]

    def forms_per_example(self, positions: int, coordinates: bool) -> bool:
        """Whether the rule forms g_i: for the coordinates, or where the Gram form takes at least
        `form_ratio` multiply-adds per element of g_i (as for dense layers)."""
        return coordinates or positions**2 >= self.policy.form_ratio * self.module.num_embeddings

    def first_phase(self, a, delta, coordinates, keep, budget, workspace):
        tokens, rows = self._rows(a, delta)
        if self.forms_per_example(tokens.shape[1], coordinates):
            return formed_sums(self.per_example(a, delta), coordinates, keep)
        same = tokens.unsqueeze(2) == tokens.unsqueeze(1)
        sq_norm = (torch.bmm(rows, rows.transpose(1, 2)) * same).sum()
        grad = rows.new_zeros(self.module.weight.shape).index_add_(0, tokens.flatten(), rows.reshape(-1, rows.shape[-1]))
        inner_products = (lambda directions: self.inner_products(a, delta, directions)) if keep else None
        return LayerSums([grad], [sq_norm], None, inner_products)

    def inner_products(self, a, delta, directions):
        tokens, rows = self._rows(a, delta)  # <g_i, G> = sum_t <delta_it, G[x_it]>
        return [(rows * directions[0][tokens]).flatten(1).sum(1)]

