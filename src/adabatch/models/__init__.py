"""Model zoo. A run builds its model from the config (`model_from_config`: the config's `_target_`,
called as target(input_shape, num_classes, **options)); Python callers may name a shipped model by its
config (`build_model("resnet18", input_shape, num_classes, norm, width=8)`: configs/model/resnet18.yaml's
`_target_`). Each builder checks its own options.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from adabatch.components import build, check
from adabatch.models.cnn import cnn
from adabatch.models.gpt import gpt
from adabatch.models.mlp import logistic_regression, mlp
from adabatch.models.norm import NORM_POLICIES, make_norm, normalization_of
from adabatch.models.resnet import resnet18, resnet50
from adabatch.models.vit import register_opacus_samplers, vit

__all__ = [
    "NORM_POLICIES", "build_model", "check_model_config", "cnn", "gpt", "logistic_regression", "make_norm", "mlp",
    "model_from_config", "normalization_of", "register_opacus_samplers", "resnet18", "resnet50", "vit",
]


def model_from_config(cfg: Mapping[str, Any], input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """The model of config `cfg` for inputs of shape (C, H, W) and `num_classes` logits."""
    return build("model", cfg, tuple(int(s) for s in input_shape), int(num_classes))


def check_model_config(cfg: Mapping[str, Any]) -> None:
    """Refuse, before the data is loaded, a model config that `model_from_config` could not call."""
    check("model", cfg, (1, 1, 1), 1)


def build_model(name: str, input_shape: Sequence[int], num_classes: int, norm: str = "group", **options: object) -> nn.Module:
    """Shipped model ``name`` (configs/model/<name>.yaml) for inputs of shape (C, H, W) and ``num_classes``
    logits. ``norm`` ("group", "batch" or "none") goes to the models that take it (the ResNets)."""
    return build("model", {"name": name, **options}, tuple(int(s) for s in input_shape), int(num_classes),
                 offered={"norm": norm})
