"""A method's seeds brought onto a common x grid (curves) and reduced to mean and spread.

Every curve of a method ends where its shortest seed ends, so the mean is over all seeds at every
point. Training loss (on a fixed set of training examples) and test accuracy, measured at
evaluations, are interpolated linearly between them; batch sizes are step functions (the size of
the step in progress at x).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .runs import Run

CURVE_POINTS = 200


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
SAMPLES = AXES[0]


@dataclass(frozen=True)
class Band:
    """Mean over seeds with the min-max range of the seeds, at the points x."""

    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


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


def value_in_progress(x: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """y of the record whose step is under way at each grid point: the first record with x >= point."""
    return y[np.minimum(np.searchsorted(x, grid, side="left"), len(y) - 1)]


def method_curves(runs: list[Run], axis: Axis) -> dict[str, Band]:
    """Training loss, test accuracy (both from the evaluations) and batch size of completed runs against `axis`."""
    end = min(train_x(run, axis)[-1] for run in runs)
    if axis.log:
        start = min(max(train_x(run, axis)[0] for run in runs), end)  # every seed's first step is done
        grid = np.geomspace(start, end, CURVE_POINTS)
    else:
        grid = np.linspace(0.0, end, CURVE_POINTS)

    def at_evaluations(key: str) -> Band:
        return band(grid, [np.interp(grid, eval_x(run, axis), column(run.eval_records, key)) for run in runs])

    return {
        "train_loss": at_evaluations("train_eval_loss"),
        "test_acc": at_evaluations("test_acc"),
        "batch_size": band(grid, [
            value_in_progress(train_x(run, axis), column(run.train_records, "batch_size"), grid) for run in runs
        ]),
    }


def tested_sides(run: Run, lhs: str, rhs: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(samples, lhs, rhs) at the run's tested steps."""
    tested = [record for record in run.train_records if record.get("tested") and lhs in record]
    return column(tested, "samples"), column(tested, lhs), column(tested, rhs)
