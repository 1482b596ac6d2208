"""Batch-size policies: what the next batch size is after each optimizer step."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..components import build
from ..run_keys import run_keys
from .adaptive import AdaptiveTest, AugmentedInnerProductTest, CoordinateNormTest, InnerProductTest, NormTest
from .base import BatchSizePolicy, Decision, grow
from .fixed import Constant, LinearRamp, Stagewise
from .noise_scale import NoiseScale


def build_policy(cfg: Mapping[str, Any], budget: int, population: int | None = None) -> BatchSizePolicy:
    """The policy of config `cfg`: its `_target_`, or that of configs/batch_size/<cfg["name"]>.yaml. A policy that
    has parameters named so gets the run's `budget` (samples) and `population`, the training set's size,
    for the tests' optional finite-population correction (cap the batch sizes at it first: `cap_batch_sizes`)."""
    return build("batch_size", cfg, run_keys=run_keys("batch_size"),
                 offered={"budget": budget, "population": population})


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


__all__ = [
    "AdaptiveTest", "AugmentedInnerProductTest", "BatchSizePolicy", "Constant", "CoordinateNormTest", "Decision",
    "InnerProductTest", "LinearRamp", "NoiseScale", "NormTest", "Stagewise", "build_policy", "cap_batch_sizes", "grow",
]
