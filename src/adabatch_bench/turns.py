"""Two pieces of work timed side by side: they take turns to go first, and a round sees one state of the machine."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def seconds(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def median_ratio(baseline: Callable[[], object], other: Callable[[], object], rounds: int) -> float:
    """The median over `rounds` of other's time over baseline's in the same round."""
    ratios = []
    for round_ in range(rounds):
        baseline_first = round_ % 2 == 0
        times = [seconds(work) for work in ((baseline, other) if baseline_first else (other, baseline))]
        base, taken = times if baseline_first else reversed(times)
        ratios.append(taken / base)
    return statistics.median(ratios)
