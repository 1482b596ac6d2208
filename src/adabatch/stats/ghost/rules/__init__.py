"""The ghost rules, one module per layer type, found through a registry.

Add a rule for a layer type by subclassing `LayerRule` (or `FormedRule`, `DenseRule`) and decorating
it: `@register_rule(nn.MyLayer)`. A module is handled by the rule registered for the nearest class in
its MRO, except that a module defining `per_example_gradients(a, delta)` states its own (OwnRule).
"""
from __future__ import annotations

from . import conv2d, embedding, groupnorm, layernorm, linear  # noqa: F401  (they register their rules)
from .base import FormedRule, LayerRule, LayerSums, UnsupportedLayer, chunks
from .dense import DenseRule
from .own import OwnRule
from .registry import RULES, register_rule, rule_for

__all__ = ["RULES", "DenseRule", "FormedRule", "LayerRule", "LayerSums", "OwnRule", "UnsupportedLayer", "chunks",
           "register_rule", "rule_for"]
