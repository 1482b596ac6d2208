"""The steps-accuracy frontier of one experiment: each method's steps, final headline value (test
accuracy; the validation loss of next-token runs, where lower is better) and best training loss over its
seeds, how many steps it took to reach a few levels of the headline, and the series that connect methods
differing in one setting (constant batches by b, the norm test by η)."""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from adabatch.config_keys import training_identity
from .aggregate import Stat, seed_stat
from .headline import ACCURACY, Headline, headline_of
from .runs import Experiment, Method, Run, flatten, is_ignored

LEVEL_MARGINS = ACCURACY.margins  # accuracy levels: percentage points below the best mean final test accuracy


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
    """When a method's seeds first reached a level of the headline: the mean step over the seeds that did."""

    level: float  # in shown units: percent accuracy, nats per token
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
    final: Stat  # the headline's final value (final_test_acc: a fraction, as in the summaries)
    best_train_loss: Stat
    reach: tuple[Reach, ...]


def kind_of(method: Method) -> SeriesKind | None:
    return SERIES_KINDS.get((method.config.get("batch_size") or {}).get("name"))


def series_value(method: Method, kind: SeriesKind) -> float:
    return float(flatten(method.config)[kind.varied[0]])


def family_config(method: Method, kind: SeriesKind) -> dict[str, object]:
    """What a method shares with the other members of its series: what it trains (as methods are told
    apart: keys added since older records were written, at their default, do not count) without the
    varied keys."""
    def shared(key: str) -> bool:
        return key not in kind.varied and key.split(".")[0] not in SERIES_IGNORED

    return {k: v for k, v in training_identity(flatten(method.config), is_ignored).items() if shared(k)}


def family_key(method: Method, kind: SeriesKind) -> str:
    return json.dumps(family_config(method, kind), sort_keys=True, default=str)


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
    return told_apart(series)


def told_apart(series: list[Series]) -> list[Series]:
    """Series that would share a label get the settings in which their families differ appended to it, as
    "(lr=0.002)": a learning-rate grid has one series of constant batches per learning rate."""
    by_label: dict[str, list[int]] = {}
    for index, one in enumerate(series):
        if one.symbol is not None:
            by_label.setdefault(one.label, []).append(index)
    labelled = list(series)
    for indices in by_label.values():
        if len(indices) < 2:
            continue
        configs = [family_config(series[i].methods[0], kind_of(series[i].methods[0])) for i in indices]
        keys = sorted(k for k in set().union(*configs) if len({str(c.get(k, "-")) for c in configs}) > 1)
        for i, config in zip(indices, configs):
            settings = ", ".join(f"{k.rsplit('.', 1)[-1]}={config.get(k, '-')}" for k in keys)
            labelled[i] = Series(f"{series[i].label} ({settings})", series[i].methods, series[i].symbol)
    return labelled


def summary_values(runs: Sequence[Run], key: str) -> list[float]:
    return [float(run.summary[key]) for run in runs if run.summary.get(key) is not None]


def seed_spread(values: Sequence[float]) -> Spread:
    array = np.asarray(values, dtype=float)
    return Spread(float(array.mean()), float(array.min()), float(array.max()))


def percent(fraction: float) -> float:
    """100 x `fraction`, rounded to 6 decimals so that 0.57 is 57 and not 56.99999999999999."""
    return round(100 * fraction, 6)


def best_final(experiment: Experiment) -> tuple[str, float] | None:
    """The method with the best mean final headline value (summary units) over its completed seeds, and
    that mean; None when no method has one."""
    headline = experiment.headline
    scored = [
        (seed_stat(summary_values(method.completed, headline.final_key)).mean, method.label)
        for method in experiment.methods
    ]
    scored = [(value, label) for value, label in scored if not math.isnan(value)]
    if not scored:
        return None
    best = headline.best([value for value, _ in scored])
    label = next(label for value, label in scored if value == best)  # the first of equals
    return label, best


def best_final_accuracy(experiment: Experiment) -> tuple[str, float] | None:
    return best_final(experiment)


def levels_below(best_percent: float) -> tuple[int, ...]:
    """`best_percent` less each of LEVEL_MARGINS, rounded down to a whole percent: 84.6 -> (79, 82, 83)."""
    return tuple(math.floor(round(best_percent - margin, 6)) for margin in LEVEL_MARGINS)


def headline_levels(experiment: Experiment) -> tuple[float, ...]:
    best = best_final(experiment)
    return experiment.headline.levels(best[1]) if best else ()


accuracy_levels = headline_levels


def first_step_reaching(run: Run, level: float, headline: Headline = ACCURACY) -> int | None:
    """The step of the run's first evaluation at `level` or better (None if none)."""
    for record in run.eval_records:
        if headline.reached(record[headline.key], level):
            return int(record["step"])
    return None


def reach(runs: Sequence[Run], level: float, headline: Headline = ACCURACY) -> Reach:
    steps = [step for step in (first_step_reaching(run, level, headline) for run in runs) if step is not None]
    mean_step = float(np.mean(steps)) if steps else math.nan
    return Reach(level, mean_step, len(steps), len(runs))


def frontier_row(method: Method, levels: Sequence[float], headline: Headline = ACCURACY) -> FrontierRow:
    runs = method.completed

    def stat(key: str) -> Stat:
        return seed_stat(summary_values(runs, key))

    return FrontierRow(
        method=method.label, seeds=len(runs), incomplete=len(method.incomplete),
        mean_batch_size=stat("mean_batch_size"), steps=stat("steps"), final=stat(headline.final_key),
        best_train_loss=stat("best_train_loss"), reach=tuple(reach(runs, level, headline) for level in levels),
    )


def frontier_rows(experiment: Experiment) -> list[FrontierRow]:
    """One row per method, series by series (constant batches by b, norm tests by η)."""
    levels, headline = headline_levels(experiment), experiment.headline
    return [
        frontier_row(method, levels, headline) for series in frontier_series(experiment.methods) for method in series.methods
    ]


def method_point(method: Method, headline: Headline | None = None) -> dict[str, Spread]:
    """A method's place in the frontier figure: steps, the final headline value (in shown units: test
    accuracy in percent; by default its runs' task's) and best training loss over its completed seeds."""
    runs = method.completed
    headline = headline or headline_of([run.summary for run in method.runs])
    return {
        "steps": seed_spread(summary_values(runs, "steps")),
        headline.final_key: seed_spread([headline.scale * value for value in summary_values(runs, headline.final_key)]),
        "best_train_loss": seed_spread(summary_values(runs, "best_train_loss")),
    }
