"""What each key of the config may hold: the range of every number, the order of every list, the
type of every switch. `check_ranges` refuses the first key outside its rule, in one line naming the
key, the value and what is allowed.

The rules of a component's keys hold for the shipped components: a user's own (a config with a
`_target_` of theirs) checks its keys itself. The batch_size keys are checked for their type only: the
policies check their ranges themselves (which depend on the policy: a test needs batch_size.initial >= 2, a constant batch does not).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

SEED_LIMIT = 2**64  # torch's generators take 64-bit seeds
ABSENT = object()


class RangeError(ValueError):
    """A key outside its rule; the message is one line."""


@dataclass(frozen=True)
class Rule:
    accepts: Callable[[Any], bool]
    allowed: str  # completes "<key>=<value> must be ..."


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(minimum: int, maximum: int | None = None) -> Rule:
    if maximum is not None:
        return Rule(lambda v: is_integer(v) and minimum <= v <= maximum, f"an integer from {minimum} to {maximum}")
    return Rule(lambda v: is_integer(v) and v >= minimum, f"an integer >= {minimum}")


def optional(rule: Rule, meaning: str) -> Rule:
    return Rule(lambda v: v is None or rule.accepts(v), f"{rule.allowed}, or null ({meaning})")


def number(low: float, high: float | None = None, *, low_open: bool = False, high_open: bool = False) -> Rule:
    """A finite number in the interval from `low` to `high` (None: unbounded above)."""
    def accepts(v: Any) -> bool:
        if not is_number(v):
            return False
        above = v > low if low_open else v >= low
        below = high is None or (v < high if high_open else v <= high)
        return above and below

    if high is None:
        return Rule(accepts, f"a number {'>' if low_open else '>='} {low:g}")
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    return Rule(accepts, f"a number in {interval}")


def increasing_integers(minimum: int, strictly: bool) -> Rule:
    def accepts(v: Any) -> bool:
        if not isinstance(v, list) or not all(is_integer(x) and x >= minimum for x in v):
            return False
        return all(a < b if strictly else a <= b for a, b in zip(v, v[1:]))

    order = "strictly increasing" if strictly else "non-decreasing"
    return Rule(accepts, f"a list of {order} integers >= {minimum}")


SWITCH = Rule(lambda v: isinstance(v, bool), "true or false")
POSITIVE_INTEGER = integer(1)
FRACTION = number(0, 1, high_open=True)

RULES: dict[str, Rule] = {
    "seed": integer(0, SEED_LIMIT - 1),
    "train.eval_train_examples": optional(POSITIVE_INTEGER, "all"),
    "train.progress_every_s": Rule(number(0).accepts, "a number of seconds >= 0 (0: a line every step)"),
    "train.compile": SWITCH,
    "train.save_model": SWITCH,
    "dataset.download": SWITCH,
    "schedule.warmup_samples": integer(0),
    "schedule.end_samples": POSITIVE_INTEGER,
    # multipliers of optimizer.lr: below 0 the steps climb the loss (above 1 the lr grows, as a test may want)
    "schedule.final_factor": number(0),
    "schedule.gamma": number(0, low_open=True),
    "schedule.milestones": increasing_integers(1, strictly=True),
    "optimizer.lr": number(0, low_open=True),
    "optimizer.eps": number(0),
    "optimizer.weight_decay": number(0),
    "optimizer.momentum": FRACTION,
    "optimizer.betas": Rule(
        lambda v: isinstance(v, list) and len(v) == 2 and all(FRACTION.accepts(b) for b in v),
        "two numbers in [0, 1)",
    ),
    "optimizer.initial_accumulator_value": number(0),
    "optimizer.nesterov": SWITCH,
    "model.hidden": Rule(
        lambda v: isinstance(v, list) and all(POSITIVE_INTEGER.accepts(w) for w in v), "a list of integers >= 1"
    ),
    "model.width": POSITIVE_INTEGER,
    "model.groups": POSITIVE_INTEGER,
    "model.patch": POSITIVE_INTEGER,
    "model.dim": POSITIVE_INTEGER,
    "model.depth": POSITIVE_INTEGER,
    "model.heads": POSITIVE_INTEGER,
    "model.mlp_ratio": number(0, low_open=True),
    "model.dropout": FRACTION,
    # types only (see the module's docstring)
    "batch_size.initial": Rule(is_integer, "an integer"),
    "batch_size.max": Rule(is_integer, "an integer"),
    "batch_size.interval": Rule(is_integer, "an integer >= 1"),
    "batch_size.increment": Rule(is_integer, "an integer >= 1"),
    "batch_size.eta": Rule(is_number, "a number > 0"),
    "batch_size.theta": Rule(is_number, "a number > 0"),
    "batch_size.nu": Rule(is_number, "a number > 0"),
    "batch_size.quantile": Rule(is_number, "a number in (0, 1]"),
    "batch_size.stages": Rule(
        lambda v: v is None or (bool(v) and increasing_integers(1, strictly=False).accepts(v)),
        "null (doubling from batch_size.initial) or a non-empty list of non-decreasing integers >= 1",
    ),
}


def check_ranges(cfg: DictConfig, shipped: Mapping[str, Collection[str]]) -> None:
    """Every key of RULES that `cfg` holds, but those of a component whose name is not among the
    `shipped` names of its group; then the keys whose range depends on another key."""
    for key, rule in RULES.items():
        group = key.partition(".")[0]
        if group in shipped and OmegaConf.select(cfg, f"{group}.name") not in shipped[group]:
            continue
        node = OmegaConf.select(cfg, key, default=ABSENT)
        if node is ABSENT:
            continue
        value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        if not rule.accepts(value):
            raise RangeError(f"{key}={value} must be {rule.allowed}")
    schedule = cfg.schedule
    if schedule.get("name") in shipped.get("schedule", ()) and "end_samples" in schedule \
            and schedule.end_samples <= schedule.warmup_samples:
        raise RangeError(
            f"schedule.end_samples={schedule.end_samples} must be above schedule.warmup_samples="
            f"{schedule.warmup_samples}: the decay runs from the end of the warmup to end_samples"
        )
