"""The steps-accuracy frontier of one experiment: each method's steps, final test accuracy and best
training loss over its seeds, how many steps it took to reach a few accuracy levels, and the series
that connect methods differing in one setting (constant batches by b, the norm test by η)."""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .aggregate import Stat, seed_stat
from .runs import Experiment, Method, Run, flatten, is_ignored

LEVEL_MARGINS = (5, 2, 1)  # accuracy levels: percentage points below the best mean final test accuracy


@dataclass(frozen=True)
class SeriesKind:
    varied: tuple[str, ...]  # the config keys that change along the series (the first gives the value)
    symbol: str  # how a point is annotated: f"{symbol}={value}"
    describe: str  # the series' legend label; {optimizer} and {tested} are the optimizer's labels


SERIES_KINDS = {
    "constant": SeriesKind(("batch_size.initial", "batch_size.max"), "b", "{optimizer}, constant batch size b"),
    "norm": SeriesKind(("batch_size.eta",), "η", "{tested} (norm test), by η"),
}
# Differ between the members of one series without being what the series varies: the label, and the
# plan keys that the resolved config already spells out.
SERIES_IGNORED = ("method", "plan")


@dataclass(frozen=True)
class Series:
    """Methods drawn as one connected line in the frontier, in order of the varied value; a method
    outside any series (not of a kind in SERIES_KINDS, or alone in its family) has `symbol` None."""

    label: str
    methods: list[Method]
    symbol: str | None = None

    def value(self, method: Method) -> float:
        return series_value(method, SERIES_KINDS[method.config["batch_size"]["name"]])


@dataclass(frozen=True)
class Spread:
    """Mean, min and max over seeds."""

    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class Reach:
    """When a method's seeds first reached an accuracy level: the mean step over the seeds that did."""

    level: int  # percent
    mean_step: float  # NaN when no seed reached it
    reached: int
    seeds: int


@dataclass(frozen=True)
class FrontierRow:
    method: str
    seeds: int
    incomplete: int
    mean_batch_size: Stat
    steps: Stat
    final_test_acc: Stat  # fraction, as in the summaries
    best_train_loss: Stat
    reach: tuple[Reach, ...]


def kind_of(method: Method) -> SeriesKind | None:
    return SERIES_KINDS.get((method.config.get("batch_size") or {}).get("name"))


def series_value(method: Method, kind: SeriesKind) -> float:
    return float(flatten(method.config)[kind.varied[0]])


def family_key(method: Method, kind: SeriesKind) -> str:
    """What a method shares with the other members of its series: its config without the varied keys."""
    def shared(key: str) -> bool:
        return not is_ignored(key) and key not in kind.varied and key.split(".")[0] not in SERIES_IGNORED

    return json.dumps({k: v for k, v in flatten(method.config).items() if shared(k)}, sort_keys=True, default=str)


def series_label(method: Method, kind: SeriesKind) -> str:
    optimizer = method.config.get("optimizer") or {}
    plain = optimizer.get("label") or optimizer.get("name", "")
    return kind.describe.format(optimizer=plain, tested=optimizer.get("tested_label") or plain)


def frontier_series(methods: Sequence[Method]) -> list[Series]:
    """Methods grouped into series, in order of each series' first method; within a series, by value."""
    families: dict[str, list[Method]] = {}
    for method in methods:
        kind = kind_of(method)
        key = family_key(method, kind) if kind else f"single:{method.label}"
        families.setdefault(key, []).append(method)
    series = []
    for members in families.values():
        kind = kind_of(members[0])
        if kind is None or len(members) == 1:
            series.append(Series(members[0].label, members))
        else:
            ordered = sorted(members, key=lambda method: series_value(method, kind))
            series.append(Series(series_label(members[0], kind), ordered, kind.symbol))
    return series


def summary_values(runs: Sequence[Run], key: str) -> list[float]:
    return [float(run.summary[key]) for run in runs if run.summary.get(key) is not None]


def seed_spread(values: Sequence[float]) -> Spread:
    array = np.asarray(values, dtype=float)
    return Spread(float(array.mean()), float(array.min()), float(array.max()))


def percent(fraction: float) -> float:
    """100 x `fraction`, rounded to 6 decimals so that 0.57 is 57 and not 56.99999999999999."""
    return round(100 * fraction, 6)


def best_final_accuracy(experiment: Experiment) -> tuple[str, float] | None:
    """The method with the best mean final test accuracy (fraction) over its completed seeds, and that
    mean; None when no method has one."""
    scored = [
        (seed_stat(summary_values(method.completed, "final_test_acc")).mean, method.label)
        for method in experiment.methods
    ]
    scored = [(accuracy, label) for accuracy, label in scored if not math.isnan(accuracy)]
    if not scored:
        return None
    accuracy, label = max(scored, key=lambda pair: pair[0])  # the first of equals
    return label, accuracy


def levels_below(best_percent: float) -> tuple[int, ...]:
    """`best_percent` less each of LEVEL_MARGINS, rounded down to a whole percent: 84.6 -> (79, 82, 83)."""
    return tuple(math.floor(round(best_percent - margin, 6)) for margin in LEVEL_MARGINS)


def accuracy_levels(experiment: Experiment) -> tuple[int, ...]:
    best = best_final_accuracy(experiment)
    return levels_below(percent(best[1])) if best else ()


def first_step_reaching(run: Run, level: int) -> int | None:
    """The step of the run's first evaluation with test accuracy >= level percent (None if none)."""
    for record in run.eval_records:
        if percent(record["test_acc"]) >= level:
            return int(record["step"])
    return None


def reach(runs: Sequence[Run], level: int) -> Reach:
    steps = [step for step in (first_step_reaching(run, level) for run in runs) if step is not None]
    mean_step = float(np.mean(steps)) if steps else math.nan
    return Reach(level, mean_step, len(steps), len(runs))


def frontier_row(method: Method, levels: Sequence[int]) -> FrontierRow:
    runs = method.completed

    def stat(key: str) -> Stat:
        return seed_stat(summary_values(runs, key))

    return FrontierRow(
        method=method.label, seeds=len(runs), incomplete=len(method.incomplete),
        mean_batch_size=stat("mean_batch_size"), steps=stat("steps"), final_test_acc=stat("final_test_acc"),
        best_train_loss=stat("best_train_loss"), reach=tuple(reach(runs, level) for level in levels),
    )


def frontier_rows(experiment: Experiment) -> list[FrontierRow]:
    """One row per method, series by series (constant batches by b, norm tests by η)."""
    levels = accuracy_levels(experiment)
    return [
        frontier_row(method, levels) for series in frontier_series(experiment.methods) for method in series.methods
    ]


def method_point(method: Method) -> dict[str, Spread]:
    """A method's place in the frontier figure: steps, final test accuracy (percent) and best
    training loss over its completed seeds."""
    runs = method.completed
    return {
        "steps": seed_spread(summary_values(runs, "steps")),
        "final_test_acc": seed_spread([100 * value for value in summary_values(runs, "final_test_acc")]),
        "best_train_loss": seed_spread(summary_values(runs, "best_train_loss")),
    }
