"""When a run evaluates and checkpoints: points in samples processed, passed by a step."""
from __future__ import annotations

from bisect import bisect_right


def crossed(before: int, after: int, every: int) -> bool:
    """Whether going from `before` to `after` samples passed a multiple of `every`."""
    return after // every > before // every


def early_evaluation_points(first: int | None, every: int) -> tuple[int, ...]:
    """Sample counts first, 2 first, 4 first, ... below `every`: where a run's curves change fastest,
    evaluations spaced evenly on a log axis before the regular ones (none when `first` is None)."""
    points = []
    while first is not None and first < every:
        points.append(first)
        first *= 2
    return tuple(points)


def evaluation_due(before: int, after: int, every: int, early: tuple[int, ...]) -> bool:
    """Whether going from `before` to `after` samples passed a multiple of `every` or an early point
    (`early` sorted: a binary search, not a loop over the points, at every step)."""
    return crossed(before, after, every) or bisect_right(early, after) > bisect_right(early, before)
