"""The ghost engine: the tests' sums from each layer's input and output gradient, captured by hooks
during a forward and backward, without per-example gradients wherever an identity is cheaper (the
per-layer rules are in layers.py).

In a ghost pass autograd computes activation gradients only (no parameter requires grad; the output of
a layer that sees the model's input is made to, at no cost: see `Capture`): each layer's rule computes,
the moment its output gradient arrives, the batch gradient of its parameters, Σ‖g_i‖² and, when
needed, Σg_i⊙g_i. When this micro-batch is the whole batch of the only process (`keep`), the rule
also computes ⟨g_i^t, ḡ^t⟩ then, from its own ḡ^t. A split batch (micro-batches, or ranks) takes a
second pass for them once ḡ is known.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..losses import summed_cross_entropy
from .base import StatisticsEngine
from .layers import DenseRule, LayerRule, UnsupportedLayer, Workspace, rule_for, transient_budget
from .sums import GradientSums, add


class GhostEngine(StatisticsEngine):
    """`measure_forms`: each dense layer that can take its Gram form or form its per-example gradients
    times both on its first pass and keeps the faster for the run (engine ghost_measured; the choices
    are its state, for exact resumption); otherwise the counts of layers.py choose."""

    def __init__(self, model: nn.Module, measure_forms: bool = False) -> None:
        super().__init__(model)
        self.rules: dict[nn.Module, LayerRule] = {}
        owners: dict[nn.Parameter, str] = {}
        for name, module in model.named_modules():
            own = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if not own:
                continue
            try:
                self.rules[module] = rule_for(module)
            except UnsupportedLayer as error:
                raise ValueError(f"batch_size.engine=ghost cannot handle module {name!r}: {error}; "
                                 f"use batch_size.engine=opacus or functorch") from None
            for p in own:
                if p in owners:
                    raise ValueError(f"batch_size.engine=ghost: a parameter is shared by modules {owners[p]!r} and "
                                     f"{name!r}; use batch_size.engine=opacus or functorch")
                owners[p] = name
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
        with Capture(self, sums, keep=keep) as capture:
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
        with Capture(self, sums, directions=directions) as capture:
            self._backward(x, y, autocast, capture)
        missed = self._reached - capture.reached
        if missed:
            raise RuntimeError(f"batch_size.engine=ghost: {sorted(self.names[m] for m in missed)} saw no gradient in "
                               f"the second pass of a split batch; use batch_size.engine=opacus")
        if capture.products is not None:
            sums.add_inner_product_terms(capture.products)

    def _backward(self, x, y, autocast, capture: Capture) -> torch.Tensor:
        with autocast or contextlib.nullcontext():
            logits = self.model(x.detach())
        loss = summed_cross_entropy(logits, y)
        torch.autograd.grad(loss, capture.anchor, allow_unused=True)  # the rules run in the hooks meanwhile
        return loss.detach()


class Capture:
    """The hooks of one pass: a forward hook on each layer keeps its input and hooks its output's
    gradient; that hook hands both to the layer's rule. The parameters stop requiring grad meanwhile.
    The output of a layer whose input needs no gradient (it sees the model's input) then needs none
    either: it passes through `Anchored`, which ties it to `anchor`, a scalar that requires grad and
    receives none. The backward runs towards that anchor. Making one of the layer's own parameters
    require grad instead costs autograd's gradient for it (the CNN's first convolution, bias only: 3 ms,
    7% of its step on the 2-core Xeon); making the model's input require grad, a gradient for the input
    through the first layer."""

    def __init__(self, engine: GhostEngine, sums: GradientSums, keep: bool = False,
                 directions: dict[nn.Parameter, torch.Tensor] | None = None) -> None:
        self.engine = engine
        self.sums = sums
        self.keep = keep
        self.directions = directions  # set in the second phase: ḡ per parameter
        self.inputs: dict[nn.Module, tuple[torch.Tensor, int]] = {}
        self.input_elements = 0  # of every layer's input in this pass: what a plain step's memory mostly holds
        self.workspace = Workspace()
        self.reached: set[nn.Module] = set()
        self.products: torch.Tensor | None = None  # (n, T) float64: <g_i^t, ḡ^t>
        self.anchor = torch.zeros((), device=engine.params[0].device, requires_grad=True)
        self.handles: list = []

    def __enter__(self) -> Capture:
        for module in self.engine.rules:
            self.handles.append(module.register_forward_hook(self.on_forward))
        for p in self.engine.params:
            p.requires_grad_(False)
        return self

    def __exit__(self, *exc) -> None:
        for p in self.engine.params:
            p.requires_grad_(True)
        for handle in self.handles:
            handle.remove()
        self.workspace = None

    def on_forward(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        name = self.engine.names[module]
        if module in self.inputs or module in self.reached:
            raise RuntimeError(f"batch_size.engine=ghost: module {name!r} runs more than once per forward pass; "
                               f"use batch_size.engine=opacus or functorch")
        sees_model_input = not any(isinstance(t, torch.Tensor) and t.requires_grad for t in inputs)
        if sees_model_input and isinstance(output, torch.Tensor) and torch.is_grad_enabled():
            output = Anchored.apply(output, self.anchor)
        if not (isinstance(output, torch.Tensor) and output.requires_grad):
            raise RuntimeError(f"batch_size.engine=ghost: the output of module {name!r} carries no gradient; "
                               f"use batch_size.engine=opacus or functorch")
        a = inputs[0]
        self.inputs[module] = (a, a._version)
        self.input_elements += a.numel()
        output.register_hook(lambda delta: self.on_output_grad(module, delta))
        return output

    @torch.no_grad()
    def on_output_grad(self, module: nn.Module, delta: torch.Tensor) -> None:
        a, version = self.inputs.pop(module)
        if a._version != version:
            raise RuntimeError(f"batch_size.engine=ghost: the input of {self.engine.names[module]!r} was modified in "
                               f"place after its forward; use batch_size.engine=opacus or functorch")
        self.reached.add(module)
        rule = self.engine.rules[module]
        dtype = rule.params[0].dtype  # autocast may have run the layer in lower precision
        a, delta = a.detach().to(dtype), delta.detach().to(dtype)
        if self.directions is not None:
            self.record(rule, rule.inner_products(a, delta, [self.directions[p] for p in rule.params]))
            return
        budget = transient_budget(self.input_elements)
        layer = rule.first_phase(a, delta, self.sums.coord_sq is not None, self.keep, budget, self.workspace)
        for p, grad, sq_norm in zip(rule.params, layer.grad, layer.sq_norm):
            t = self.engine.index[p]
            add(self.sums.grad, t, grad)
            self.sums.sq_norm[t] += sq_norm
        if layer.coord_sq is not None:
            for p, coord_sq in zip(rule.params, layer.coord_sq):
                add(self.sums.coord_sq, self.engine.index[p], coord_sq)
        if self.keep:
            self.record(rule, layer.inner_products([g / len(a) for g in layer.grad]))

    def record(self, rule: LayerRule, products: list[torch.Tensor]) -> None:
        if self.products is None:
            n = len(products[0])
            self.products = torch.zeros(n, len(self.engine.params), dtype=torch.float64, device=products[0].device)
        for p, product in zip(rule.params, products):
            self.products[:, self.engine.index[p]] = product


class Anchored(torch.autograd.Function):
    """The identity on a layer's output, which makes the output depend on `anchor` (a scalar that
    requires grad) without computing anything: the backward passes the output gradient through and
    gives the anchor none. The output is marked as changed in place rather than returned as a view,
    so that later in-place operations on it (ReLU(inplace=True)) stay allowed."""

    @staticmethod
    def forward(ctx, output: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        ctx.mark_dirty(output)
        return output

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None
