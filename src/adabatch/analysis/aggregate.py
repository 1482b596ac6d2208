"""A method's seeds brought onto a common x (curves) and reduced to mean and spread.

Quantities measured at evaluations (test accuracy, and the loss on a fixed set of training examples)
are averaged evaluation by evaluation: the k-th evaluation of every seed is triggered by the same
sample threshold, so its mean is taken over the seeds' values there, at the mean of their x. Nothing
is drawn between evaluations but the straight line joining them. Batch sizes, recorded densely with
the training steps, are step functions (the size of the step in progress at x) on a grid that covers
the range every seed recorded.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce

import numpy as np

from adabatch.run.milestones import early_evaluation_points

from .runs import Run

CURVE_POINTS = 200
# Curves taken from evaluation records (curve name -> field): measured points, drawn with markers.
EVALUATED = {"train_loss": "train_eval_loss", "test_acc": "test_acc"}


@dataclass(frozen=True)
class Axis:
    key: str  # the field of a training record that is x
    label: str
    name: str  # used in file names: curves_<name>.png
    log: bool = False  # methods differ by orders of magnitude in steps and time: log x, log-spaced grid


AXES = (
    Axis("samples", "samples processed", "samples"),
    Axis("step", "optimizer steps (log scale)", "steps", log=True),
    Axis("time_s", "training wall-clock (s, log scale)", "wallclock", log=True),
)
SAMPLES, STEPS = AXES[0], AXES[1]


@dataclass(frozen=True)
class Band:
    """Mean over seeds with the min-max range of the seeds, at the points x."""

    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray

    def where(self, keep: np.ndarray) -> Band:
        return Band(self.x[keep], self.mean[keep], self.low[keep], self.high[keep])


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (ddof=1; NaN for fewer than two values) over seeds."""

    mean: float
    std: float
    n: int


def seed_stat(values: Sequence[float | None]) -> Stat:
    present = np.array([v for v in values if v is not None], dtype=float)
    if present.size == 0:
        return Stat(math.nan, math.nan, 0)
    std = float(present.std(ddof=1)) if present.size > 1 else math.nan
    return Stat(float(present.mean()), std, int(present.size))


def band(x: np.ndarray, per_seed: list[np.ndarray]) -> Band:
    stacked = np.vstack(per_seed)
    return Band(x, stacked.mean(axis=0), stacked.min(axis=0), stacked.max(axis=0))


def column(records: list[dict], key: str) -> np.ndarray:
    return np.array([record[key] for record in records], dtype=float)


def train_x(run: Run, axis: Axis) -> np.ndarray:
    return column(run.train_records, axis.key)


def eval_x(run: Run, axis: Axis) -> np.ndarray:
    """Evaluations have no time of their own: an evaluation after step k is at step k's training time."""
    if axis.key != "time_s":
        return column(run.eval_records, axis.key)
    steps = np.concatenate([[0.0], column(run.train_records, "step")])
    times = np.concatenate([[0.0], column(run.train_records, "time_s")])
    return np.interp(column(run.eval_records, "step"), steps, times)


def evaluation_thresholds(run: Run) -> np.ndarray:
    """The sample threshold behind each of the run's evaluations: the largest evaluation point (0, an
    early point, a multiple of train.eval_every, the budget) at or below the evaluation's sample count.

    This names the same evaluation in every seed even when a seed's large step passed two points at
    once and evaluated once for both. Without an evaluation schedule in the config, the k-th
    evaluation has threshold k.
    """
    samples = column(run.eval_records, "samples")
    train = run.config.get("train") or {}
    every, budget = train.get("eval_every"), train.get("samples")
    if not every:
        return np.arange(samples.size, dtype=float)
    early = np.array([0, *early_evaluation_points(train.get("eval_first"), every)], dtype=float)
    thresholds = np.maximum(early[np.searchsorted(early, samples, side="right") - 1], samples // every * every)
    return np.where(samples >= budget, budget, thresholds) if budget else thresholds


def evaluation_curve(runs: list[Run], axis: Axis, key: str) -> Band:
    """`key` of the evaluation records, mean and range over seeds at each evaluation all seeds made.

    x is the mean of the seeds' x at that evaluation. A log axis cannot show x = 0 (the evaluation
    before training): that point is left out.
    """
    thresholds = [evaluation_thresholds(run) for run in runs]
    shared = reduce(np.intersect1d, thresholds)
    kept = [np.isin(run_thresholds, shared) for run_thresholds in thresholds]
    x = np.mean([eval_x(run, axis)[keep] for run, keep in zip(runs, kept)], axis=0)
    curve = band(x, [column(run.eval_records, key)[keep] for run, keep in zip(runs, kept)])
    return curve.where(curve.x > 0) if axis.log else curve


def recorded_grid(runs: list[Run], axis: Axis) -> np.ndarray:
    """CURVE_POINTS points from the latest first training record of the seeds to the earliest last one;
    a single point where that range is one point (a run short enough to have one training record)."""
    start = max(train_x(run, axis)[0] for run in runs)
    end = min(train_x(run, axis)[-1] for run in runs)
    if start >= end:  # or a seed is done before another's first record (wall-clock)
        return np.array([end])
    return np.geomspace(start, end, CURVE_POINTS) if axis.log else np.linspace(start, end, CURVE_POINTS)


def value_in_progress(x: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """y of the record whose step is under way at each grid point: the first record with x >= point."""
    return y[np.minimum(np.searchsorted(x, grid, side="left"), len(y) - 1)]


def batch_size_curve(runs: list[Run], axis: Axis) -> Band:
    grid = recorded_grid(runs, axis)
    sizes = [value_in_progress(train_x(run, axis), column(run.train_records, "batch_size"), grid) for run in runs]
    return band(grid, sizes)


def method_curves(runs: list[Run], axis: Axis, headline: str = "test_acc") -> dict[str, Band]:
    """Training loss and the headline evaluation (test accuracy; the validation loss of token runs), both
    at evaluations, and batch size of completed runs against `axis`."""
    evaluated = {**EVALUATED, "test_acc": headline} if headline != "test_acc" else EVALUATED
    curves = {name: evaluation_curve(runs, axis, key) for name, key in evaluated.items()}
    return {**curves, "batch_size": batch_size_curve(runs, axis)}


def tested_sides(run: Run, lhs: str, rhs: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(samples, lhs, rhs) at the run's tested steps."""
    tested = [record for record in run.train_records if record.get("tested") and lhs in record]
    return column(tested, "samples"), column(tested, lhs), column(tested, rhs)
