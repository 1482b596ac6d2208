"""Learning-rate schedules keyed on samples processed (not steps), as multipliers of the base lr."""
from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .checks import increasing_integers, integer, number, positive
from .components import build

Schedule = Callable[[int], float]


def _warmup(samples: int, warmup_samples: int) -> float:
    return min(1.0, (samples + 1) / warmup_samples) if warmup_samples > 0 else 1.0


def constant(warmup_samples: int = 0) -> Schedule:
    integer("schedule.warmup_samples", warmup_samples, 0)
    return lambda samples: _warmup(samples, warmup_samples)


def cosine(end_samples: int, warmup_samples: int = 0, final_factor: float = 0.0) -> Schedule:
    """Linear warmup to the base lr, then cosine decay to `final_factor` x base lr at `end_samples`."""
    check_decay(end_samples, warmup_samples, final_factor)

    def factor(samples: int) -> float:
        if samples < warmup_samples:
            return _warmup(samples, warmup_samples)
        progress = min(1.0, (samples - warmup_samples) / max(1, end_samples - warmup_samples))
        return final_factor + (1.0 - final_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def linear(end_samples: int, warmup_samples: int = 0, final_factor: float = 0.0) -> Schedule:
    """Linear warmup to the base lr, then linear decay to `final_factor` x base lr at `end_samples`."""
    check_decay(end_samples, warmup_samples, final_factor)

    def factor(samples: int) -> float:
        if samples < warmup_samples:
            return _warmup(samples, warmup_samples)
        progress = min(1.0, (samples - warmup_samples) / max(1, end_samples - warmup_samples))
        return 1.0 + (final_factor - 1.0) * progress

    return factor


def multistep(milestones: Sequence[int], gamma: float = 0.1, warmup_samples: int = 0) -> Schedule:
    """Multiply the lr by `gamma` at each milestone (in samples processed)."""
    marks = increasing_integers("schedule.milestones", milestones, 1, strictly=True)
    positive("schedule.gamma", gamma)
    integer("schedule.warmup_samples", warmup_samples, 0)
    return lambda samples: _warmup(samples, warmup_samples) * gamma ** bisect_right(marks, samples)


def check_decay(end_samples: int, warmup_samples: int, final_factor: float) -> None:
    integer("schedule.warmup_samples", warmup_samples, 0)
    integer("schedule.end_samples", end_samples, 1)
    # a multiplier of optimizer.lr: below 0 the steps climb the loss (above 1 the lr grows, as a test may want)
    number("schedule.final_factor", final_factor, 0)
    if end_samples <= warmup_samples:
        raise ValueError(f"schedule.end_samples={end_samples} must be above schedule.warmup_samples={warmup_samples}: "
                         "the decay runs from the end of the warmup to end_samples")


def build_schedule(cfg: Mapping[str, Any]) -> Schedule:
    """The schedule of config `cfg`: its `_target_`, or the shipped one named `cfg["name"]`."""
    return build("schedule", cfg)
