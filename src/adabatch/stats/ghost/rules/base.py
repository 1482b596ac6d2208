"""What every ghost rule gives, and the helpers of the rules that form per-example gradients.

A rule turns a module's input `a` and the gradient `delta` of the summed loss with respect to its
output (delta_i is example i's own output gradient) into the module's batch gradient and per-example
statistics (paper-notes §2). Autograd computes no parameter gradient in a ghost pass: the rules do.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..forms import FormPolicy, Workspace

InnerProducts = Callable[[list[torch.Tensor]], list[torch.Tensor]]


class UnsupportedLayer(ValueError):
    """A module with trainable parameters that no rule handles (or a configuration its rule cannot)."""


@dataclass
class LayerSums:
    """Per trainable parameter of a module: sum_i g_i, sum_i ||g_i||², sum_i g_i⊙g_i when asked for,
    and, when asked to keep, `inner_products`: <g_i, G> for every example given one G per parameter."""

    grad: list[torch.Tensor]
    sq_norm: list[torch.Tensor]
    coord_sq: list[torch.Tensor] | None = None
    inner_products: InnerProducts | None = None


class LayerRule(ABC):
    def __init__(self, module: nn.Module, policy: FormPolicy) -> None:
        self.module = module
        self.policy = policy
        self.params = [p for p in module.parameters(recurse=False) if p.requires_grad]

    @abstractmethod
    def first_phase(self, a: torch.Tensor, delta: torch.Tensor, coordinates: bool, keep: bool, budget: int,
                    workspace: Workspace) -> LayerSums:
        """`budget`: the elements the rule may hold at once (FormPolicy.transient_budget); `workspace`: the
        pass's memory for per-example gradients."""

    @abstractmethod
    def inner_products(self, a: torch.Tensor, delta: torch.Tensor, directions: list[torch.Tensor]) -> list[torch.Tensor]:
        """(n,) per parameter: <g_i, G> with G the parameter's entry of `directions`."""

    @abstractmethod
    def per_example(self, a: torch.Tensor, delta: torch.Tensor) -> list[torch.Tensor]:
        """[(n, *p.shape) per parameter]: every example's gradient, formed (for a parameter that several
        modules share, whose contributions add up per example before anything is squared)."""


def formed_sums(grads: list[torch.Tensor], coordinates: bool, keep: bool) -> LayerSums:
    """The sums from per-example gradients [(n, *p.shape) per parameter]."""
    coord_sq = [g.square().sum(0) for g in grads] if coordinates else None
    return LayerSums(
        grad=[g.sum(0) for g in grads],
        sq_norm=[c.sum() for c in coord_sq] if coordinates else [g.square().sum() for g in grads],
        coord_sq=coord_sq,
        inner_products=(lambda directions: dot_each(grads, directions)) if keep else None,
    )


def combine(parts: list[LayerSums]) -> LayerSums:
    """One module's sums from those of its parameters (one parameter each)."""
    keep = parts[0].inner_products is not None
    return LayerSums(
        grad=[g for part in parts for g in part.grad],
        sq_norm=[s for part in parts for s in part.sq_norm],
        coord_sq=None if parts[0].coord_sq is None else [c for part in parts for c in part.coord_sq],
        inner_products=(lambda directions: [part.inner_products([d])[0] for part, d in zip(parts, directions)])
        if keep else None,
    )


def squared_norm(t: torch.Tensor) -> torch.Tensor:
    """||t||², from the norms of its rows (one read of t, nothing written). It rounds like t.square().sum(),
    where one float32 dot product of t with itself, or the norm of t as a whole, rounds far worse."""
    return torch.linalg.vector_norm(t, dim=-1).square_().sum()


def dot_each(grads: list[torch.Tensor], directions: list[torch.Tensor]) -> list[torch.Tensor]:
    return [g.flatten(1) @ d.flatten() for g, d in zip(grads, directions)]


def chunks(n: int, size: int) -> list[slice]:
    size = max(1, min(n, size))
    return [slice(start, start + size) for start in range(0, n, size)]


class FormedRule(LayerRule):
    """Modules whose per-example gradients are no larger than their activations: form them."""

    def first_phase(self, a, delta, coordinates, keep, budget, workspace):
        return formed_sums(self.per_example(a, delta), coordinates, keep)

    def inner_products(self, a, delta, directions):
        return dot_each(self.per_example(a, delta), directions)
