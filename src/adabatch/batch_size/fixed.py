"""Batch-size schedules that ignore the gradients: constant and the two ramp-up baselines."""
from __future__ import annotations

from collections.abc import Sequence

from ..checks import increasing_integers, integer, refuse
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
        self.increment = integer("batch_size.increment", increment, 1)

    def decide(self, *, step, samples, batch_size, statistics=None) -> Decision:
        return Decision(min(self.max, batch_size + self.increment))


class Stagewise(BatchSizePolicy):
    """Batch size `stages[k]` during the k-th of len(stages) equal shares of the sample budget, or, with
    `boundaries` (in samples, one fewer than the stages), from the step that reaches boundaries[k-1]: a
    batch-size warmup the way OLMo-core runs one (the batch doubles at fixed sample, hence token, counts).

    Without explicit stages, the sizes double from `initial` up to `max` (max always last).
    """

    def __init__(self, initial: int, max: int, budget: int, stages: Sequence[int] | None = None,  # noqa: A002
                 boundaries: Sequence[int] | None = None) -> None:
        super().__init__(initial, max)
        if stages is not None:
            allowed = "null (doubling from batch_size.initial) or a non-empty list of non-decreasing integers >= 1"
            if not stages:
                refuse("batch_size.stages", stages, allowed)
            increasing_integers("batch_size.stages", stages, 1, strictly=False, allowed=allowed)
        self.stages = list(stages) if stages else doubling(initial, max)
        if self.stages[0] != initial or any(b > max for b in self.stages):
            raise ValueError(
                f"batch_size.stages={self.stages} must start at batch_size.initial={initial} and stay <= max={max}"
            )
        self.budget = budget
        self.boundaries = None
        if boundaries is not None:
            count = len(self.stages) - 1
            allowed = (f"null (equal shares of train.samples) or {count} strictly increasing sample counts >= 1, "
                       f"one per stage after the first of {self.stages}")
            increasing_integers("batch_size.boundaries", boundaries, 1, strictly=True, allowed=allowed)
            if len(boundaries) != count:
                refuse("batch_size.boundaries", list(boundaries), allowed)
            self.boundaries = list(boundaries)

    def decide(self, *, step, samples, batch_size, statistics=None) -> Decision:
        if self.boundaries is None:
            stage = min(len(self.stages) - 1, samples * len(self.stages) // self.budget)
        else:
            stage = sum(samples >= boundary for boundary in self.boundaries)
        return Decision(max(batch_size, self.stages[stage]))


def doubling(initial: int, maximum: int) -> list[int]:
    sizes = [initial]
    while sizes[-1] * 2 < maximum:
        sizes.append(sizes[-1] * 2)
    if sizes[-1] != maximum:
        sizes.append(maximum)
    return sizes
