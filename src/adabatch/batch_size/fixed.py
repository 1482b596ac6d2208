"""Batch-size schedules that ignore the gradients: constant and the two ramp-up baselines."""
from __future__ import annotations

from collections.abc import Sequence

from .base import BatchSizePolicy, Decision


class Constant(BatchSizePolicy):
    def __init__(self, initial: int, max: int | None = None) -> None:  # noqa: A002
        super().__init__(initial, initial if max is None else max)

    def decide(self, *, step, samples, batch_size, statistics=None) -> Decision:
        return Decision(batch_size)


class LinearRamp(BatchSizePolicy):
    """Add `increment` examples to the batch after every step, up to `max`."""

    def __init__(self, initial: int, max: int, increment: int) -> None:  # noqa: A002
        super().__init__(initial, max)
        if increment < 1:
            raise ValueError(f"batch_size.increment={increment} must be >= 1")
        self.increment = increment

    def decide(self, *, step, samples, batch_size, statistics=None) -> Decision:
        return Decision(min(self.max, batch_size + self.increment))


class Stagewise(BatchSizePolicy):
    """Batch size `stages[k]` during the k-th of len(stages) equal shares of the sample budget.

    Without explicit stages, the sizes double from `initial` up to `max` (max always last).
    """

    def __init__(self, initial: int, max: int, budget: int, stages: Sequence[int] | None = None) -> None:  # noqa: A002
        super().__init__(initial, max)
        self.stages = list(stages) if stages else doubling(initial, max)
        if self.stages[0] != initial or any(b > max for b in self.stages):
            raise ValueError(
                f"batch_size.stages={self.stages} must start at batch_size.initial={initial} and stay <= max={max}"
            )
        if any(b < a for a, b in zip(self.stages, self.stages[1:])):
            raise ValueError(f"batch_size.stages={self.stages} must be non-decreasing")
        self.budget = budget

    def decide(self, *, step, samples, batch_size, statistics=None) -> Decision:
        stage = min(len(self.stages) - 1, samples * len(self.stages) // self.budget)
        return Decision(max(batch_size, self.stages[stage]))


def doubling(initial: int, maximum: int) -> list[int]:
    sizes = [initial]
    while sizes[-1] * 2 < maximum:
        sizes.append(sizes[-1] * 2)
    if sizes[-1] != maximum:
        sizes.append(maximum)
    return sizes
