"""The hooks of one ghost pass: a forward hook on each layer keeps its input and hooks its output's
gradient; that hook hands both to the layer's rule, which adds to the sums."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from ..sums import GradientSums, add
from .forms import FormPolicy, Workspace
from .rules import LayerRule
from .rules.base import formed_sums



class LayerRules(Protocol):
    """What a capture reads of its engine (the GhostEngine; named here, not imported: no import circle)."""

    params: list[nn.Parameter]
    names: dict[nn.Module, str]
    rules: dict[nn.Module, LayerRule]
    index: dict[nn.Parameter, int]
    formed_together: set[nn.Module]
    policy: FormPolicy
    layer_hook: LayerHook | None


@dataclass
class LayerCall:
    """What a layer's rule is about to work on, for a `GhostEngine.layer_hook` (the profiler)."""

    name: str
    rule: LayerRule
    a: torch.Tensor
    delta: torch.Tensor
    budget: int            # elements the rule may hold at once (FormPolicy.transient_budget)
    keep: bool             # inner products in the same pass
    coordinates: bool      # sum_i g_i⊙g_i wanted
    second_phase: bool     # inner products with ḡ known (a split batch)


LayerHook = Callable[[LayerCall, Callable[[], None]], None]  # given the call and the rule's run: runs it (or not)


class Capture:
    """The parameters stop requiring grad meanwhile. The output of a layer whose input needs no gradient
    (it sees the model's input) then needs none either: it passes through `Anchored`, which ties it to
    `anchor`, a scalar that requires grad and receives none. The backward runs towards that anchor
    (docs/ghost-engine.md: why not a parameter, or the input).

    A parameter that several modules share gets every module's per-example gradients, added per
    example, and only then its sums (`finish`): adding the modules' squared norms would be wrong."""

    def __init__(self, engine: LayerRules, sums: GradientSums, examples: int, keep: bool = False,
                 directions: dict[nn.Parameter, torch.Tensor] | None = None) -> None:
        self.engine = engine
        self.sums = sums
        self.examples = examples
        self.keep = keep
        self.directions = directions  # set in the second phase: ḡ per parameter
        self.inputs: dict[nn.Module, tuple[torch.Tensor, int]] = {}
        self.input_elements = 0  # of every layer's input in this pass: what a plain step's memory mostly holds
        self.workspace = Workspace()
        self.reached: set[nn.Module] = set()
        self.products: torch.Tensor | None = None  # (n, T) float64: <g_i^t, ḡ^t>
        self.shared: dict[nn.Parameter, torch.Tensor] = {}  # per-example gradients of shared parameters, so far
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
        # A pass cut short (out of memory mid-pass) leaves layer inputs here whose autograd graph holds the
        # hooks that hold this capture: a cycle through C++ that Python's collector cannot see. Break it.
        self.inputs.clear()
        self.shared = {}

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
        if len(a) != self.examples or len(output) != self.examples:
            raise RuntimeError(f"batch_size.engine=ghost: module {name!r} sees an input of shape {tuple(a.shape)} for "
                               f"{self.examples} examples; a ghost rule needs one example per row of its input and "
                               f"output (e.g. look up positions per example); use batch_size.engine=opacus or functorch")
        self.inputs[module] = (a, a._version)
        self.input_elements += a.numel()
        output.register_hook(lambda delta: self.on_output_grad(module, delta))
        return output

    @torch.no_grad()
    def on_output_grad(self, module: nn.Module, delta: torch.Tensor) -> None:
        a, version = self.inputs.pop(module)
        name = self.engine.names[module]
        if a._version != version:
            raise RuntimeError(f"batch_size.engine=ghost: the input of {name!r} was modified in "
                               f"place after its forward; use batch_size.engine=opacus or functorch")
        self.reached.add(module)
        rule = self.engine.rules[module]
        dtype = rule.params[0].dtype  # autocast may have run the layer in lower precision
        a = a.detach().to(dtype) if a.is_floating_point() else a.detach()  # (an embedding's input: indices)
        delta = delta.detach().to(dtype)
        budget = self.engine.policy.transient_budget(self.input_elements)
        run = lambda: self.apply_rule(rule, a, delta, budget)  # noqa: E731
        if self.engine.layer_hook is None:
            run()
        else:
            self.engine.layer_hook(LayerCall(name, rule, a, delta, budget, self.keep, self.sums.coord_sq is not None,
                                             self.directions is not None), run)

    def apply_rule(self, rule: LayerRule, a: torch.Tensor, delta: torch.Tensor, budget: int) -> None:
        if self.directions is not None:
            self.record(rule.params, rule.inner_products(a, delta, [self.directions[p] for p in rule.params]))
            return
        if rule.module in self.engine.formed_together:
            for p, grads in zip(rule.params, rule.per_example(a, delta)):
                self.shared[p] = grads if p not in self.shared else self.shared[p] + grads
            return
        layer = rule.first_phase(a, delta, self.sums.coord_sq is not None, self.keep, budget, self.workspace)
        self.add(rule.params, layer, len(a))

    def finish(self) -> None:
        """After the backward: the sums of the parameters that several modules share."""
        for p, grads in self.shared.items():
            self.add([p], formed_sums([grads], self.sums.coord_sq is not None, self.keep), len(grads))
        self.shared = {}

    def add(self, params: list[nn.Parameter], layer, examples: int) -> None:
        for p, grad, sq_norm in zip(params, layer.grad, layer.sq_norm):
            t = self.engine.index[p]
            add(self.sums.grad, t, grad)
            self.sums.sq_norm[t] += sq_norm
        if layer.coord_sq is not None:
            for p, coord_sq in zip(params, layer.coord_sq):
                add(self.sums.coord_sq, self.engine.index[p], coord_sq)
        if self.keep:
            self.record(params, layer.inner_products([g / examples for g in layer.grad]))

    def record(self, params: list[nn.Parameter], products: list[torch.Tensor]) -> None:
        """Adds the products, so that the modules sharing a parameter add theirs up per example."""
        if self.products is None:
            n = len(products[0])
            self.products = torch.zeros(n, len(self.engine.params), dtype=torch.float64, device=products[0].device)
        for p, product in zip(params, products):
            self.products[:, self.engine.index[p]] += product


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
