"""Model zoo. A run builds its model from the config (`model_from_config`: the config's `_target_`,
called as target(input_shape, num_classes, **options): (C, H, W) and classes for images, (tokens,) and the
vocabulary for token windows); Python callers may name a shipped model
(`build_model(name, input_shape, num_classes, norm, **options)`).

The options a shipped model accepts are the keyword-only parameters of its builder.
"""

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from adabatch.components import build, check
from adabatch.models.cnn import cnn
from adabatch.models.gpt import gpt
from adabatch.models.mlp import logistic_regression, mlp
from adabatch.models.norm import NORM_POLICIES, make_norm, normalization_of
from adabatch.models.resnet import resnet18, resnet50
from adabatch.models.vit import register_opacus_samplers, vit

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "logistic": logistic_regression,
    "mlp": mlp,
    "cnn": cnn,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "vit": vit,
    "gpt": gpt,
}
MODELS = tuple(_BUILDERS)

__all__ = [
    "MODELS", "NORM_POLICIES", "build_model", "check_model_config", "make_norm", "model_from_config", "model_options",
    "normalization_of", "register_opacus_samplers",
]


def model_from_config(cfg: Mapping[str, Any], input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """The model of config `cfg` for inputs of shape (C, H, W) and `num_classes` logits."""
    return build("model", cfg, tuple(int(s) for s in input_shape), int(num_classes), shipped=_BUILDERS)


def check_model_config(cfg: Mapping[str, Any]) -> None:
    """Refuse, before the data is loaded, a model config that `model_from_config` could not call."""
    check("model", cfg, (1, 1, 1), 1, shipped=_BUILDERS)


def model_options(name: str) -> tuple[str, ...]:
    """The option names ``build_model`` accepts for model ``name``."""
    return tuple(
        p.name
        for p in inspect.signature(_builder(name)).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name != "norm"
    )


def build_model(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    norm: str = "group",
    **options: object,
) -> nn.Module:
    """Build model ``name`` for inputs of shape (C, H, W) and ``num_classes`` logits.

    ``norm`` ("group", "batch" or "none") only affects the ResNets; other models ignore it.
    """
    builder = _builder(name)
    if norm not in NORM_POLICIES:
        raise ValueError(f"model.norm={norm!r} is unknown; choose one of {', '.join(NORM_POLICIES)}")
    allowed = model_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"model={name} has no option(s) {unknown}; its options are {list(allowed)}")
    shape = tuple(int(s) for s in input_shape)
    if not shape or min(shape) < 1:  # (C, H, W) for images, (tokens,) for token windows
        raise ValueError(f"input_shape must be positive, got {tuple(input_shape)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if "norm" in inspect.signature(builder).parameters:
        options["norm"] = norm
    return builder(shape, num_classes, **options)


def _builder(name: str) -> Callable[..., nn.Module]:
    if name not in _BUILDERS:
        raise ValueError(f"model={name!r} is unknown; choose one of {', '.join(MODELS)}")
    return _BUILDERS[name]
