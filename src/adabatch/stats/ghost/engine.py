"""The ghost engine: the tests' sums from each layer's input and output gradient, captured by hooks
during a forward and backward, without per-example gradients wherever an identity is cheaper (the
per-layer rules are in rules/, the forms and their policy in forms.py).

In a ghost pass autograd computes activation gradients only (no parameter requires grad; the output of
a layer that sees the model's input is made to, at no cost: see `Capture`): each layer's rule computes,
the moment its output gradient arrives, the batch gradient of its parameters, Σ‖g_i‖² and, when
needed, Σg_i⊙g_i. When this micro-batch is the whole batch of the only process (`keep`), the rule
also computes ⟨g_i^t, ḡ^t⟩ then, from its own ḡ^t. A split batch (micro-batches, or ranks) takes a
second pass for them once ḡ is known.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from ...losses import summed_cross_entropy
from ..base import StatisticsEngine
from .capture import Capture, LayerHook
from .forms import FormPolicy
from .rules import DenseRule, LayerRule, UnsupportedLayer, rule_for

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs, targets) -> the examples' losses, summed


class GhostEngine(StatisticsEngine):
    """`policy`: how the dense rules choose their forms and how much memory they hold. `measure_forms`:
    each dense layer that can take its Gram form or form its per-example gradients times both on its
    first pass and keeps the faster for the run (engine ghost_measured; the choices are its state, for
    exact resumption); otherwise the policy's counts choose. `loss(outputs, targets)`: the summed
    per-example loss. `layer_hook`: see `LayerCall` (the profiler times the rules through it)."""

    def __init__(self, model: nn.Module, policy: FormPolicy | None = None, measure_forms: bool = False,
                 loss: Loss = summed_cross_entropy) -> None:
        super().__init__(model)
        self.policy = policy or FormPolicy()
        self.loss = loss
        self.layer_hook: LayerHook | None = None
        self.rules: dict[nn.Module, LayerRule] = {}
        owners: dict[nn.Parameter, list[nn.Module]] = {}
        for name, module in model.named_modules():
            own = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if not own:
                continue
            try:
                self.rules[module] = rule_for(module, self.policy)
            except UnsupportedLayer as error:
                raise ValueError(f"batch_size.engine=ghost cannot handle module {name!r}: {error}; "
                                 f"use batch_size.engine=opacus or functorch") from None
            for p in own:
                owners.setdefault(p, []).append(module)
        # Modules with a parameter that another module shares: their per-example gradients are formed
        # and added per example across the sharing modules before any sum (Capture.finish).
        self.formed_together = {m for modules in owners.values() if len(modules) > 1 for m in modules}
        self.dense = {module: rule for module, rule in self.rules.items() if isinstance(rule, DenseRule)}
        for rule in self.dense.values():
            rule.measure_forms = measure_forms
        self.names = {module: name for name, module in model.named_modules()}
        self.index = {p: t for t, p in enumerate(self.params)}
        self._kept: torch.Tensor | None = None
        self._reached: set[nn.Module] = set()

    def state_dict(self):
        return {"forms": {self.names[m]: r.measured_form for m, r in self.dense.items() if r.measured_form is not None}}

    def load_state_dict(self, state):
        for module, rule in self.dense.items():
            rule.measured_form = state.get("forms", {}).get(self.names[module])

    def can_keep(self, world_size):
        return world_size == 1  # ḡ must be this micro-batch's own gradient while the backward runs

    def first_phase(self, x, y, sums, autocast, keep):
        with Capture(self, sums, len(x), keep=keep) as capture:
            loss = self._backward(x, y, autocast, capture)
        sums.count += len(y)
        self._reached = capture.reached
        self._kept = capture.products if keep else None
        return loss

    def kept_inner_products(self, sums, mean_grad):
        kept, self._kept = self._kept, None
        if kept is not None:
            sums.add_inner_product_terms(kept)

    def inner_products(self, x, y, sums, mean_grad, autocast):
        directions = {p: m.to(p.dtype) for p, m in zip(self.params, mean_grad)}
        with Capture(self, sums, len(x), directions=directions) as capture:
            self._backward(x, y, autocast, capture)
        missed = self._reached - capture.reached
        if missed:
            raise RuntimeError(f"batch_size.engine=ghost: {sorted(self.names[m] for m in missed)} saw no gradient in "
                               f"the second pass of a split batch; use batch_size.engine=opacus")
        if capture.products is not None:
            sums.add_inner_product_terms(capture.products)

    def _backward(self, x, y, autocast, capture: Capture) -> torch.Tensor:
        with autocast or contextlib.nullcontext():
            outputs = self.model(x.detach())
        loss = self.loss(outputs, y)
        torch.autograd.grad(loss, capture.anchor, allow_unused=True)  # the rules run in the hooks meanwhile
        capture.finish()
        return loss.detach()
