"""Batch-size policies: what the next batch size is after each optimizer step."""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .adaptive import AdaptiveTest, AugmentedInnerProductTest, CoordinateNormTest, InnerProductTest, NormTest
from .base import BatchSizePolicy, Decision, grow
from .fixed import Constant, LinearRamp, Stagewise
from .noise_scale import NoiseScale

POLICY_CLASSES: dict[str, type[BatchSizePolicy]] = {
    "constant": Constant,
    "linear_ramp": LinearRamp,
    "stagewise": Stagewise,
    "norm": NormTest,
    "inner_product": InnerProductTest,
    "augmented_inner_product": AugmentedInnerProductTest,
    "coordinate_norm": CoordinateNormTest,
    "gns": NoiseScale,
}
POLICIES = tuple(POLICY_CLASSES)

# Keys of the batch_size group that configure the training loop rather than the policy.
LOOP_KEYS = ("name", "max_micro", "max_micro_memory_gb", "engine")


def build_policy(cfg: Mapping[str, Any], budget: int, population: int | None = None) -> BatchSizePolicy:
    """The policy `cfg["name"]`; `population`, the training set's size, is for the tests' optional
    finite-population correction (cap the batch sizes at it first: `cap_batch_sizes`)."""
    name = cfg["name"]
    if name not in POLICY_CLASSES:
        raise ValueError(f"batch_size={name!r} is unknown; choose one of {', '.join(POLICIES)}")
    options = {k: v for k, v in cfg.items() if k not in LOOP_KEYS}
    if name == "stagewise":
        options["budget"] = budget
    if issubclass(POLICY_CLASSES[name], AdaptiveTest):
        options["population"] = population
    try:
        return POLICY_CLASSES[name](**options)
    except TypeError as error:  # an unknown or missing key
        raise ValueError(re.sub(r"\w+\.__init__\(\) ", "", f"batch_size={name}: {error}")) from None


def cap_batch_sizes(options: Mapping[str, Any], population: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A batch is drawn without replacement, so it holds at most the `population` examples of the
    training set: batch_size.initial, .max and each of .stages are capped at it. Returns the capped
    options and {key: the value asked for} for each key that was capped."""
    capped, asked = dict(options), {}
    for key in ("initial", "max"):
        if isinstance(capped.get(key), int) and capped[key] > population:
            asked[key], capped[key] = capped[key], population
    stages = capped.get("stages")
    if stages and any(size > population for size in stages):
        asked["stages"], capped["stages"] = list(stages), [min(size, population) for size in stages]
    return capped, asked


__all__ = ["AdaptiveTest", "BatchSizePolicy", "Decision", "POLICIES", "build_policy", "cap_batch_sizes", "grow"]
