"""The ghost engine (engine.py), its hooks (capture.py), forms and policy (forms.py) and per-layer
rules (rules/). docs/ghost-engine.md describes the identities, the forms and the tuned constants."""
from .capture import Anchored, Capture, LayerCall, LayerHook
from .engine import GhostEngine, Loss
from .forms import Form, FormPolicy, Workspace
from .rules import RULES, DenseRule, FormedRule, LayerRule, LayerSums, UnsupportedLayer, register_rule, rule_for

__all__ = ["RULES", "Anchored", "Capture", "DenseRule", "Form", "FormPolicy", "FormedRule", "GhostEngine",
           "LayerCall", "LayerHook", "LayerRule", "LayerSums", "Loss", "UnsupportedLayer", "Workspace",
           "register_rule", "rule_for"]
