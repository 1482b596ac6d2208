"""Which rule handles which layer type: `@register_rule(nn.Linear)` on a rule class."""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..forms import FormPolicy
from .base import LayerRule, UnsupportedLayer

RULES: dict[type[nn.Module], type[LayerRule]] = {}


def register_rule(*layer_types: type[nn.Module]) -> Callable[[type[LayerRule]], type[LayerRule]]:
    """Class decorator: the decorated rule handles modules of `layer_types` (and their subclasses that
    have no rule of their own). A subclass whose forward computes something else must register its own."""

    def register(rule: type[LayerRule]) -> type[LayerRule]:
        for layer_type in layer_types:
            RULES[layer_type] = rule
        return rule

    return register


def rule_for(module: nn.Module, policy: FormPolicy) -> LayerRule:
    if hasattr(module, "per_example_gradients"):
        from .own import OwnRule

        return OwnRule(module, policy)
    for layer_type in type(module).__mro__:
        if layer_type in RULES:
            return RULES[layer_type](module, policy)
    raise UnsupportedLayer(f"{type(module).__name__} has no ghost rule (rules exist for "
                           f"{', '.join(sorted(t.__name__ for t in RULES))} and modules with per_example_gradients)")
