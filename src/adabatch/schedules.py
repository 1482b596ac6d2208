"""Learning-rate schedules keyed on samples processed (not steps), as multipliers of the base lr."""
from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .components import build

Schedule = Callable[[int], float]


def _warmup(samples: int, warmup_samples: int) -> float:
    return min(1.0, (samples + 1) / warmup_samples) if warmup_samples > 0 else 1.0


def constant(warmup_samples: int = 0) -> Schedule:
    return lambda samples: _warmup(samples, warmup_samples)


def cosine(end_samples: int, warmup_samples: int = 0, final_factor: float = 0.0) -> Schedule:
    """Linear warmup to the base lr, then cosine decay to `final_factor` x base lr at `end_samples`."""

    def factor(samples: int) -> float:
        if samples < warmup_samples:
            return _warmup(samples, warmup_samples)
        progress = min(1.0, (samples - warmup_samples) / max(1, end_samples - warmup_samples))
        return final_factor + (1.0 - final_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def linear(end_samples: int, warmup_samples: int = 0, final_factor: float = 0.0) -> Schedule:
    """Linear warmup to the base lr, then linear decay to `final_factor` x base lr at `end_samples`."""

    def factor(samples: int) -> float:
        if samples < warmup_samples:
            return _warmup(samples, warmup_samples)
        progress = min(1.0, (samples - warmup_samples) / max(1, end_samples - warmup_samples))
        return 1.0 + (final_factor - 1.0) * progress

    return factor


def multistep(milestones: Sequence[int], gamma: float = 0.1, warmup_samples: int = 0) -> Schedule:
    """Multiply the lr by `gamma` at each milestone (in samples processed)."""
    marks = sorted(int(m) for m in milestones)
    return lambda samples: _warmup(samples, warmup_samples) * gamma ** bisect_right(marks, samples)


SHIPPED_SCHEDULES = {"constant": constant, "cosine": cosine, "linear": linear, "multistep": multistep}
SCHEDULES = tuple(SHIPPED_SCHEDULES)


def build_schedule(cfg: Mapping[str, Any]) -> Schedule:
    """The schedule of config `cfg`: its `_target_`, or the shipped one named `cfg["name"]`."""
    return build("schedule", cfg, shipped=SHIPPED_SCHEDULES)
