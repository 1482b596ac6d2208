"""What every batch-size policy answers after an optimizer step: the size of the next batch."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from ..checks import integer


@dataclass(frozen=True)
class Decision:
    next_size: int
    record: dict[str, Any] = field(default_factory=dict)  # fields added to the step's training record


def grow(current: int, proposal: float, maximum: int) -> int:
    """The paper's update: b' = min(b_max, ceil(max(b, T))). Never shrinks."""
    if math.isnan(proposal):
        raise ValueError(f"batch-size proposal is NaN at batch size {current}")
    if proposal >= maximum:  # also covers +inf, which ceil() cannot convert
        return maximum
    return min(maximum, math.ceil(max(current, proposal)))


class BatchSizePolicy(ABC):
    def __init__(self, initial: int, max: int) -> None:  # noqa: A002 - mirrors the config key
        integer("batch_size.initial", initial, 1)
        integer("batch_size.max", max, 1)
        if max < initial:
            raise ValueError(f"batch_size.max={max} is below batch_size.initial={initial}; raise max or lower initial")
        self.initial = initial
        self.max = max

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep beyond the config: nothing for the policies here, which decide
        from (step, samples, batch size, statistics) alone; a policy with memory returns it."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def wants_statistics(self, step: int, batch_size: int) -> bool:
        """Whether the step about to run (1-based `step`) needs per-example statistics."""
        return False

    @abstractmethod
    def decide(self, *, step: int, samples: int, batch_size: int, statistics: Any = None) -> Decision:
        """Next batch size after optimizer step `step`, with `samples` processed in total."""
