"""Batch-size policies: what the next batch size is after each optimizer step."""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .adaptive import AdaptiveTest, AugmentedInnerProductTest, CoordinateNormTest, InnerProductTest, NormTest
from .base import BatchSizePolicy, Decision, grow
from .fixed import Constant, LinearRamp, Stagewise

POLICY_CLASSES: dict[str, type[BatchSizePolicy]] = {
    "constant": Constant,
    "linear_ramp": LinearRamp,
    "stagewise": Stagewise,
    "norm": NormTest,
    "inner_product": InnerProductTest,
    "augmented_inner_product": AugmentedInnerProductTest,
    "coordinate_norm": CoordinateNormTest,
}
POLICIES = tuple(POLICY_CLASSES)

# Keys of the batch_size group that configure the training loop rather than the policy.
LOOP_KEYS = ("name", "max_micro", "engine")


def build_policy(cfg: Mapping[str, Any], budget: int) -> BatchSizePolicy:
    name = cfg["name"]
    if name not in POLICY_CLASSES:
        raise ValueError(f"batch_size={name!r} is unknown; choose one of {', '.join(POLICIES)}")
    options = {k: v for k, v in cfg.items() if k not in LOOP_KEYS}
    if name == "stagewise":
        options["budget"] = budget
    try:
        return POLICY_CLASSES[name](**options)
    except TypeError as error:  # an unknown or missing key
        raise ValueError(re.sub(r"\w+\.__init__\(\) ", "", f"batch_size={name}: {error}")) from None


__all__ = ["AdaptiveTest", "BatchSizePolicy", "Decision", "POLICIES", "build_policy", "grow"]
