"""The learning-rate study's choice: for each method of a grid of runs laid out as
<grid>/<method id>/lr_<rate>/seed<k>/ (the Makefile's run ids), the rate with the best mean final
VALIDATION accuracy over its seeds. The test split plays no part. A rate at which a seed diverged (or
recorded no validation accuracy) scores that seed 0, so it is chosen only if nothing else learns."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .runs import Run, load_runs

SELECTED_BY = "final_validation_acc"


@dataclass(frozen=True)
class GridPoint:
    method: str  # the run id's method part, e.g. constant_small-adagrad/b0_128
    lr: str  # as the run id spells it
    seed: str


def grid_point(run: Run, grid: Path) -> GridPoint:
    parts = run.path.resolve().relative_to(grid.resolve()).parts
    if len(parts) < 3 or not parts[-2].startswith("lr_") or not parts[-1].startswith("seed"):
        raise ValueError(f"{run.path} is not laid out as <method id>/lr_<rate>/seed<k> under {grid}")
    return GridPoint("/".join(parts[:-2]), parts[-2].removeprefix("lr_"), parts[-1].removeprefix("seed"))


def seed_score(run: Run) -> float:
    value = run.summary.get(SELECTED_BY)
    return float(value) if run.completed and value is not None and math.isfinite(value) else 0.0


def choose_rates(grid: Path) -> dict[str, Any]:
    """{"selected_by", "methods": {method id: {"lr": chosen, "mean_validation_acc": {lr: mean}, "seeds": {lr: n}}}}."""
    scores: dict[str, dict[str, list[float]]] = {}
    for run in load_runs([grid]):
        point = grid_point(run, grid)
        scores.setdefault(point.method, {}).setdefault(point.lr, []).append(seed_score(run))
    if not scores:
        raise ValueError(f"no finished runs under {grid}")
    methods = {}
    for method, by_lr in scores.items():
        rates = sorted(by_lr, key=float)
        means = {lr: float(np.mean(by_lr[lr])) for lr in rates}
        chosen = max(rates, key=lambda lr: means[lr])  # the smallest of equal rates
        methods[method] = {"lr": chosen, "mean_validation_acc": means, "seeds": {lr: len(by_lr[lr]) for lr in rates}}
    return {"selected_by": f"mean {SELECTED_BY} over seeds (the test split is not read)", "methods": methods}


def rerun_ids(chosen_file: Path) -> list[str]:
    """`<method id>/lr_<chosen rate>` for each method of a chosen-rates file; none when there is no file yet."""
    if not chosen_file.is_file():
        return []
    methods = json.loads(chosen_file.read_text())["methods"]
    return [f"{method}/lr_{entry['lr']}" for method, entry in methods.items()]
