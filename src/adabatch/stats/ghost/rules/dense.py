"""Dense maps y_t = W a_t + b at T positions of each example (Linear over tokens; Conv2d over output
pixels, a_t being the unfolded patch): g_i = sum_t delta_it a_itᵀ (d_out x d_in), so
||g_i||² = <A_i A_iᵀ, D_i D_iᵀ> (the Gram form, T² (d_in + d_out) per example) or, where forming g_i
costs less (T d_in d_out, and it replaces the batch gradient's own computation), from g_i itself;
with T = 1 it is ||delta_i||² ||a_i||², and sum_i g_i⊙g_i = (delta⊙delta)ᵀ(a⊙a). Inner products
with a direction G: <g_i, G> = sum_t <delta_it, G a_it>, the layer applied to a_i with weight G,
dotted with delta_i (or <g_i, G> directly where g_i was formed). docs/ghost-engine.md has the costs.
"""
from __future__ import annotations

import math
import time
from abc import abstractmethod
from collections.abc import Callable

import torch
from torch import nn

from ....device import synchronize
from ..forms import Form, FormPolicy
from .base import LayerRule, LayerSums, chunks, combine, formed_sums, squared_norm


class DenseRule(LayerRule):
    def __init__(self, module: nn.Module, policy: FormPolicy) -> None:
        super().__init__(module, policy)
        self.trained = {"weight": module.weight.requires_grad,
                        "bias": module.bias is not None and module.bias.requires_grad}
        self.measure_forms = False  # ghost_measured's engine sets it: time the forms rather than count
        self.measured_form: str | None = None  # "gram" or "formed": measured, or restored from a checkpoint

    @abstractmethod
    def patches(self, a: torch.Tensor) -> torch.Tensor:
        """(c, T, d_in): the inputs a_t of the c examples in `a`."""

    @abstractmethod
    def output_rows(self, delta: torch.Tensor) -> torch.Tensor:
        """(n, T, d_out): delta_t of every example."""

    @abstractmethod
    def apply(self, a: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The layer's linear map with `weight` and no bias, shaped like its output."""

    @abstractmethod
    def weight_gradient(self, a: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """sum_i g_i of the weight, as autograd would compute it."""

    def form(self, a: torch.Tensor, delta: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """(c, d_out, d_in): the weight's per-example gradients of the c examples in (a, delta), in `out`
        where given (a rule may return new memory instead), each row's entries in the order of
        `formed_order`."""
        return torch.bmm(self.output_rows(delta).transpose(1, 2), self.patches(a), out=out)

    def formed_order(self, weight: torch.Tensor, a: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """(d_out, d_in): a tensor shaped like the weight, its entries in the order of `form`'s rows."""
        return weight.reshape(weight.shape[0], -1)

    def as_weight(self, formed: torch.Tensor, a: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """The inverse of `formed_order`: entries in the order of `form`'s rows, shaped like the weight."""
        return formed.view_as(self.module.weight)

    builds_patches = False  # whether `patches` builds new memory (unfolding) rather than a view

    def input_grams(self, a: torch.Tensor) -> torch.Tensor:
        """(c, T, T): A_i A_iᵀ, the inner products of the inputs a_t at every pair of positions, for the c
        examples in `a`."""
        inputs = self.patches(a)
        return inputs @ inputs.transpose(1, 2)

    def input_gram_elements(self, a: torch.Tensor, positions: int) -> int:
        """The elements per example that `input_grams` holds besides the Gram matrices."""
        return self.patch_elements(positions)

    def patch_elements(self, positions: int) -> int:
        """The elements of one example's patches that `patches` builds (none where it returns a view)."""
        return positions * self.module.weight[0].numel() if self.builds_patches else 0

    def forms_from_patches(self, a: torch.Tensor, delta: torch.Tensor) -> bool:
        """Whether `form` builds patches (else its memory is the per-example gradients alone)."""
        return self.builds_patches

    def formed_chunk(self, a: torch.Tensor, delta: torch.Tensor, positions: int, budget: int) -> int:
        """How many examples the formed form takes at a time: their per-example gradients, and patches
        where `form` builds them, within `budget` elements."""
        weight = self.module.weight
        form_elements = weight.numel() + (self.patch_elements(positions) if self.forms_from_patches(a, delta) else 0)
        return max(1, min(len(a), budget // form_elements))

    def per_example(self, a, delta):
        m = self.module
        found = {}
        if self.trained["bias"]:
            found[m.bias] = self.output_rows(delta).sum(1)
        if self.trained["weight"]:
            found[m.weight] = DenseRule.form(self, a, delta).view(len(a), *m.weight.shape)  # patches: weight order
        return [found[p] for p in self.params]

    def first_phase(self, a, delta, coordinates, keep, budget, workspace):
        m = self.module
        rows = self.output_rows(delta)
        found = {}
        if self.trained["bias"]:
            found[m.bias] = formed_sums([rows.sum(1)], coordinates, keep)
        if self.trained["weight"]:
            found[m.weight] = self._weight_first_phase(a, delta, rows, coordinates, keep, budget, workspace)
        return combine([found[p] for p in self.params])

    def weight_forms(self, n: int, positions: int, coordinates: bool, keep: bool, budget: int) -> list[Form]:
        """The forms that can find the weight's sums for n examples of T positions, the one the counts
        choose first."""
        d_out, d_in = self.module.weight.shape[0], self.module.weight[0].numel()
        if positions == 1:
            return [Form.OUTER]
        keep_formed = keep and n * d_out * d_in <= self.policy.keep_factor * budget
        formed = Form.FORMED_KEPT if keep_formed else Form.FORMED
        if coordinates:
            return [formed]
        forming_is_cheaper = positions**2 * (d_in + d_out) >= self.policy.form_ratio * d_in * d_out
        return [formed, Form.GRAM] if forming_is_cheaper else [Form.GRAM, formed]

    def weight_form(self, n: int, positions: int, coordinates: bool, keep: bool, budget: int) -> Form:
        """The form the rule takes: the measured one where it has measured them, else the counts' choice."""
        return self._chosen(self.weight_forms(n, positions, coordinates, keep, budget))

    # Public hooks for adabatch_bench.profiler: what the rule does with a layer, without the sums.

    def form_label(self, a: torch.Tensor, delta: torch.Tensor, coordinates: bool, keep: bool, budget: int) -> str:
        """The weight's form for (a, delta) as the profiler prints it."""
        rows = self.output_rows(delta)
        return self.weight_form(len(rows), rows.shape[1], coordinates, keep, budget).value

    def form_in_chunks(self, a: torch.Tensor, delta: torch.Tensor, budget: int) -> None:
        """Form the weight's per-example gradients chunk by chunk as the formed forms do (patches
        included), with no sums: the batched matmuls that forming cannot do without."""
        n, positions = len(a), self.output_rows(delta).shape[1]
        size = self.formed_chunk(a, delta, positions, budget)
        out = torch.empty(size, self.module.weight.shape[0], self.module.weight[0].numel(),
                          dtype=self.module.weight.dtype, device=self.module.weight.device)
        for chunk in chunks(n, size):
            self.form(a[chunk], delta[chunk], out[:len(range(n)[chunk])])

    def _chosen(self, forms: list[Form]) -> Form:
        measured = [f for f in forms if self.measured_form is not None and f.measured_as == self.measured_form]
        return (measured or forms)[0]

    def _measure_forms(self, forms: list[Form], sums_in: Callable[[Form], LayerSums], keep: bool) -> LayerSums:
        """Time each form `measured_rounds` times, taking turns (with its inner products when kept: the
        batch gradient stands in for ḡ), remember the fastest as "gram" or "formed", return its sums."""
        seconds, found = dict.fromkeys(forms, math.inf), {}
        device = self.module.weight.device
        for _ in range(self.policy.measured_rounds):
            for form in forms:
                synchronize(device)
                start = time.perf_counter()
                found[form] = sums_in(form)
                if keep:
                    found[form].inner_products(found[form].grad)
                synchronize(device)
                seconds[form] = min(seconds[form], time.perf_counter() - start)
        fastest = min(forms, key=seconds.__getitem__)
        self.measured_form = fastest.measured_as
        return found[fastest]

    def _weight_first_phase(self, a, delta, rows, coordinates, keep, budget, workspace) -> LayerSums:
        n, positions, _ = rows.shape
        forms = self.weight_forms(n, positions, coordinates, keep, budget)
        sums_in = lambda form: self._weight_sums(form, a, delta, rows, coordinates, keep, budget, workspace)  # noqa: E731
        if self.measure_forms and self.measured_form is None and len(forms) > 1:
            return self._measure_forms(forms, sums_in, keep)
        return sums_in(self._chosen(forms))

    def _weight_sums(self, form, a, delta, rows, coordinates, keep, budget, workspace) -> LayerSums:
        weight = self.module.weight
        n, positions, d_out = rows.shape
        d_in = weight[0].numel()
        apply_and_dot = (lambda directions: [self._apply_and_dot(a, delta, directions[0])]) if keep else None

        if form is Form.OUTER:  # ||g_i||² = ||delta_i||² ||a_i||², sum_i g_i⊙g_i = (delta⊙delta)ᵀ(a⊙a)
            inputs, outputs = self.patches(a)[:, 0], rows[:, 0]
            grad = (outputs.T @ inputs).view_as(weight)
            sq_norm = (inputs.square().sum(1) * outputs.square().sum(1)).sum()
            coord_sq = [(outputs.square().T @ inputs.square()).view_as(weight)] if coordinates else None
            return LayerSums([grad], [sq_norm], coord_sq, apply_and_dot)

        keep_formed = form is Form.FORMED_KEPT
        if form is Form.GRAM:  # a chunk of examples at a time
            sq_norm = torch.zeros((), dtype=rows.dtype, device=rows.device)
            # Not the pass's transient share: a chunk's patches and Gram matrices stay within this layer's
            # own input and output gradient, which the pass holds anyway (and at least min_chunk_elements).
            budget = max(a.numel() + delta.numel(), self.policy.min_chunk_elements)
            for chunk in chunks(n, budget // (self.input_gram_elements(a, positions) + 2 * positions**2)):
                outputs = rows[chunk]
                sq_norm += (self.input_grams(a[chunk]) * (outputs @ outputs.transpose(1, 2))).sum()
            return LayerSums([self.weight_gradient(a, delta)], [sq_norm], None, apply_and_dot)

        grad = torch.zeros(1, d_out * d_in, dtype=weight.dtype, device=weight.device)
        sq_norm = torch.zeros((), dtype=rows.dtype, device=rows.device)
        coord_sq = torch.zeros_like(grad) if coordinates else None
        formed = []
        size = self.formed_chunk(a, delta, positions, budget)
        # The chunks' gradients go to the workspace: kept, each chunk to its own examples' rows; else every
        # chunk to the same rows. Their sums over examples are matrix products with a row of ones,
        # accumulated in place (docs/ghost-engine.md).
        buffer = workspace.take((n if keep_formed else size, d_out, d_in), weight)
        ones = torch.ones(1, size, dtype=weight.dtype, device=weight.device)
        for chunk in chunks(n, size):
            count = len(range(n)[chunk])
            grads = self.form(a[chunk], delta[chunk], buffer[chunk] if keep_formed else buffer[:count])
            grad.addmm_(ones[:, :count], grads.view(count, -1))
            if keep_formed:
                formed.append(grads)
            if coordinates:
                squares = grads.square() if keep_formed else grads.square_()
                coord_sq.addmm_(ones[:, :count], squares.view(count, -1))
            else:
                sq_norm += squared_norm(grads)
        grad, coord_sq = self.as_weight(grad, a, delta), None if coord_sq is None else self.as_weight(coord_sq, a, delta)
        inner_products = apply_and_dot
        if keep_formed:
            def inner_products(directions):
                direction = self.formed_order(directions[0], a, delta).flatten()
                return [torch.cat([g.flatten(1) @ direction for g in formed])]
        if coordinates:
            sq_norm = coord_sq.sum()
        return LayerSums([grad], [sq_norm], [coord_sq] if coordinates else None, inner_products)

    def inner_products(self, a, delta, directions):
        m = self.module
        direction = dict(zip(self.params, directions))
        found = {}
        if self.trained["bias"]:
            found[m.bias] = self.output_rows(delta).sum(1) @ direction[m.bias]
        if self.trained["weight"]:
            found[m.weight] = self._apply_and_dot(a, delta, direction[m.weight])
        return [found[p] for p in self.params]

    def _apply_and_dot(self, a: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return self.apply(a, weight).mul_(delta).flatten(1).sum(1)  # apply's output is new memory
