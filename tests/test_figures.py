"""Figures and tables from run records: hand-made records for the aggregation, a real multirun end to end."""
from __future__ import annotations

import contextlib
import copy
import csv
import importlib.util
import io
import json
import math
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import ROOT
from matplotlib.image import imread

from adabatch.analysis import Experiment, Method, find_run_dirs, group_runs, load_runs, write_report
from adabatch.analysis.aggregate import AXES, CURVE_POINTS, evaluation_thresholds, method_curves, seed_stat
from adabatch.analysis.figures import curves_figure, frontier_figure, row_methods
from adabatch.analysis.frontier import (
    accuracy_levels,
    best_final_accuracy,
    first_step_reaching,
    frontier_rows,
    frontier_series,
    levels_below,
)
from adabatch.analysis.runs import load_run, method_labels
from adabatch.analysis.tables import samples_before_the_cap, table_rows, write_frontier_tables, write_tables

SCRIPT = ROOT / "scripts" / "make_figures.py"
SAMPLES, STEPS, WALLCLOCK = AXES

BASE_CONFIG = {
    "method": None,
    "experiment_name": None,
    "dataset": {"name": "digits", "download": True},
    "model": {"name": "logistic"},
    "optimizer": {"name": "adagrad", "lr": 0.01},
    "batch_size": {"name": "norm", "initial": 10, "max": 40, "eta": 0.1},
    "logger": {"name": "none"},
    "seed": 0,
    "data_dir": "data",
    "train": {"samples": 100, "progress_every_s": 30},
}


def make_config(**dotted) -> dict:
    """BASE_CONFIG with overrides such as batch_size__eta=0.25 (double underscore for a dot)."""
    config = copy.deepcopy(BASE_CONFIG)
    for key, value in dotted.items():
        *parents, leaf = key.split("__")
        node = config
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return config


def train_records(batch_sizes: list[int], losses: list[float], seconds_per_step: float = 0.5) -> list[dict]:
    records, samples = [], 0
    for step, (size, loss) in enumerate(zip(batch_sizes, losses), start=1):
        samples += size
        records.append({
            "kind": "train", "step": step, "samples": samples, "batch_size": size, "lr": 0.01,
            "train_loss": loss, "time_s": step * seconds_per_step, "next_batch_size": size,
        })
    return records


def eval_records(points: list[tuple[int, int, float]], train_loss: float = 1.0) -> list[dict]:
    return [
        {"kind": "eval", "step": s, "samples": n, "test_loss": 1.0, "test_acc": a,
         "train_eval_loss": train_loss, "train_eval_acc": a}
        for s, n, a in points
    ]


def write_run(run_dir: Path, config: dict, train: list[dict], evals: list[dict], status: str = "completed") -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*evals[:1], *train, *evals[1:]]))
    summary = {
        "status": status, "steps": len(train), "samples": train[-1]["samples"],
        "train_time_s": train[-1]["time_s"], "mean_batch_size": train[-1]["samples"] / len(train),
        "best_train_loss": min(e["train_eval_loss"] for e in evals),
        "best_test_acc": max(e["test_acc"] for e in evals), "final_test_acc": evals[-1]["test_acc"],
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def simple_run(run_dir: Path, status: str = "completed", steps: int = 10, **dotted) -> Path:
    return write_run(
        run_dir, make_config(**dotted), train_records([10] * steps, [1.0] * steps),
        eval_records([(0, 0, 0.1), (steps, 10 * steps, 0.8)]), status,
    )


def load_script():
    spec = importlib.util.spec_from_file_location("make_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- finding and grouping runs ----------------------------------------------------------------


def test_find_run_dirs_takes_runs_folders_and_multiruns_in_natural_order(tmp_path):
    single = simple_run(tmp_path / "single")
    sweep = [simple_run(tmp_path / "sweep" / str(n), seed=n) for n in (0, 2, 10, 1)]
    (tmp_path / "sweep" / "multirun.yaml").write_text("hydra: {}\n")
    (tmp_path / "sweep" / "0" / ".hydra").mkdir()
    (tmp_path / "sweep" / "0" / ".hydra" / "config.yaml").write_text("seed: 0\n")  # no summary: not a run
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text("seed: 0\n")

    assert find_run_dirs([single]) == [single.resolve()]
    expected_sweep = [sweep[0], sweep[3], sweep[1], sweep[2]]  # 0, 1, 2, 10
    assert find_run_dirs([tmp_path / "sweep"]) == [p.resolve() for p in expected_sweep]
    assert find_run_dirs([tmp_path / "sweep", tmp_path]) == [p.resolve() for p in [*expected_sweep, single]]
    with pytest.raises(FileNotFoundError):
        find_run_dirs([tmp_path / "missing"])


def test_grouping_ignores_seed_and_per_run_keys_and_splits_experiments(tmp_path):
    simple_run(tmp_path / "a0", seed=0)
    simple_run(tmp_path / "a1", seed=1, data_dir="/elsewhere", logger__name="wandb", hydra__job__num=3,
               train__progress_every_s=0)
    simple_run(tmp_path / "b0", seed=0, batch_size__eta=0.25)
    simple_run(tmp_path / "c0", seed=0, experiment_name="ablation")
    simple_run(tmp_path / "d0", seed=0, model__name="cnn")

    experiments = group_runs(load_runs([tmp_path]))

    assert [e.name for e in experiments] == ["digits_logistic", "ablation", "digits_cnn"]
    methods = experiments[0].methods
    assert [m.label for m in methods] == ["norm eta=0.1", "norm eta=0.25"]
    assert [sorted(r.seed for r in m.runs) for m in methods] == [[0, 1], [0]]
    assert [len(e.methods) for e in experiments[1:]] == [1, 1]


def test_a_seed_started_afresh_or_on_another_engine_is_a_seed_of_its_method(tmp_path):
    simple_run(tmp_path / "a0", seed=0)
    simple_run(tmp_path / "a1", seed=1, resume="never", batch_size__engine="opacus", dataset__download=False)
    methods = group_runs(load_runs([tmp_path]))[0].methods
    assert [sorted(r.seed for r in m.runs) for m in methods] == [[0, 1]]


def test_labels_name_what_differs_and_stay_distinct():
    norm = make_config()
    norm_wide = make_config(batch_size__eta=0.25)
    constant = make_config(batch_size={"name": "constant", "initial": 10, "max": 40})
    assert method_labels([norm, norm_wide, constant]) == ["norm eta=0.1", "norm eta=0.25", "constant"]
    assert method_labels([norm]) == ["adagrad norm"]
    assert method_labels([make_config(method="AdAdaGrad"), constant]) == ["AdAdaGrad", "constant"]
    assert method_labels([make_config(method="A"), make_config(method="A", optimizer__lr=0.1)]) == [
        "A (lr=0.01)", "A (lr=0.1)",
    ]
    # A learning-rate grid: each shared label gets what tells its own configs apart, not what tells all apart.
    grid = [make_config(method=f"b={b}", optimizer__lr=lr, batch_size__initial=b) for b in (4, 8) for lr in (0.01, 0.1)]
    grid.append(make_config(method="Adam", optimizer={"name": "adam", "lr": 0.01}))
    assert method_labels(grid) == ["b=4 (lr=0.01)", "b=4 (lr=0.1)", "b=8 (lr=0.01)", "b=8 (lr=0.1)", "Adam"]


# ---- aggregation ------------------------------------------------------------------------------

# Evaluation points of SCHEDULE: 0, the early points 10, 20, 40, then every 50 samples, and the budget.
SCHEDULE = {"train__samples": 100, "train__eval_every": 50, "train__eval_first": 10}


def two_seeds(tmp_path: Path) -> list:
    """Two seeds of one method. Seed 1's third step (30 -> 50 samples) passes both 40 and 50 and
    evaluates once, so it has no evaluation of its own at threshold 40."""
    write_run(
        tmp_path / "s0", make_config(seed=0, **SCHEDULE), train_records([10, 10, 20, 20, 40], [1.0] * 5, 0.5),
        eval_records([(0, 0, 0.1), (1, 10, 0.3), (2, 20, 0.5), (3, 40, 0.55), (4, 60, 0.6), (5, 100, 0.7)], 1.0),
    )
    write_run(
        tmp_path / "s1", make_config(seed=1, **SCHEDULE), train_records([10, 20, 20, 40, 40], [3.0] * 5, 1.0),
        eval_records([(0, 0, 0.1), (1, 10, 0.2), (2, 30, 0.4), (3, 50, 0.6), (5, 130, 0.8)], 3.0),
    )
    (experiment,) = group_runs(load_runs([tmp_path]))
    (method,) = experiment.methods
    return method.completed


def test_evaluations_are_averaged_evaluation_by_evaluation_where_every_seed_evaluated(tmp_path):
    runs = two_seeds(tmp_path)
    assert [evaluation_thresholds(run).tolist() for run in runs] == [[0, 10, 20, 40, 50, 100], [0, 10, 20, 50, 100]]

    acc = method_curves(runs, SAMPLES)["test_acc"]
    np.testing.assert_allclose(acc.x, [0, 10, 25, 55, 115])  # mean of the seeds' samples at each evaluation
    np.testing.assert_allclose(acc.mean, [0.1, 0.25, 0.45, 0.6, 0.75])
    np.testing.assert_allclose(acc.low, [0.1, 0.2, 0.4, 0.6, 0.7])
    np.testing.assert_allclose(acc.high, [0.1, 0.3, 0.5, 0.6, 0.8])
    loss = method_curves(runs, SAMPLES)["train_loss"]
    np.testing.assert_allclose((loss.mean, loss.low, loss.high), [[2.0] * 5, [1.0] * 5, [3.0] * 5])


def test_log_axes_leave_out_the_evaluation_before_training(tmp_path):
    runs = two_seeds(tmp_path)
    np.testing.assert_allclose(method_curves(runs, STEPS)["test_acc"].x, [1, 2, 3.5, 5])
    # Seed 0 takes 0.5 s a step, seed 1 takes 1 s: an evaluation after step k is at k x that.
    np.testing.assert_allclose(method_curves(runs, WALLCLOCK)["test_acc"].x, [0.75, 1.5, 2.5, 3.75])


def test_without_an_evaluation_schedule_the_kth_evaluations_are_averaged(tmp_path):
    simple_run(tmp_path / "a", seed=0)
    write_run(tmp_path / "b", make_config(seed=1), train_records([10] * 10, [1.0] * 10),
              eval_records([(0, 0, 0.3), (5, 50, 0.5), (10, 100, 0.9)]))
    (experiment,) = group_runs(load_runs([tmp_path]))
    acc = method_curves(experiment.methods[0].completed, SAMPLES)["test_acc"]
    np.testing.assert_allclose((acc.x, acc.mean), [[0, 75], [0.2, 0.65]])  # the common prefix: two evaluations


def test_batch_size_curves_stay_in_the_recorded_range(tmp_path):
    runs = two_seeds(tmp_path)
    sizes = method_curves(runs, SAMPLES)["batch_size"]
    assert (sizes.x[0], sizes.x[-1]) == (10, 100)  # from the first records to the shortest seed's end
    at = {x: i for i, x in enumerate(sizes.x)}
    point = sizes.x[np.argmin(np.abs(sizes.x - 25))]  # inside seed 0's third step (20..40), seed 1's second (10..30)
    assert (sizes.low[at[point]], sizes.high[at[point]], sizes.mean[at[point]]) == (20, 20, 20)
    assert (sizes.low[0], sizes.high[0]) == (10, 10)
    assert (sizes.low[-1], sizes.high[-1]) == (40, 40)

    steps = method_curves(runs, STEPS)["batch_size"]
    assert steps.x[0] == 1 and steps.x[-1] == pytest.approx(5)  # log-spaced from the first step
    np.testing.assert_allclose(np.diff(np.log(steps.x)), np.log(5) / (len(steps.x) - 1))
    np.testing.assert_allclose(steps.mean[[0, -1]], [10, 40])


def test_wallclock_batch_sizes_when_one_seed_is_done_before_the_others_first_step(tmp_path):
    write_run(tmp_path / "fast", make_config(seed=0), train_records([10, 10], [1.0, 1.0], 0.1),
              eval_records([(0, 0, 0.1), (2, 20, 0.5)], train_loss=1.0))
    write_run(tmp_path / "slow", make_config(seed=1), train_records([10, 10], [3.0, 3.0], 1.0),
              eval_records([(0, 0, 0.1), (2, 20, 0.7)], train_loss=3.0))
    (experiment,) = group_runs(load_runs([tmp_path]))
    curves = method_curves(experiment.methods[0].completed, WALLCLOCK)
    assert curves["batch_size"].x.tolist() == [0.2]  # the fast seed is done at 0.2 s: a single point
    np.testing.assert_allclose(curves["test_acc"].x, [1.1])


def test_evaluation_curves_plot_the_measured_points_with_markers(tmp_path):
    runs = two_seeds(tmp_path)
    (experiment,) = group_runs(runs)
    one_seed = Experiment("one seed", [Method("s0", runs[0].config, [runs[0]])])
    colors = {"adagrad norm": (0, 0, 0), "s0": (0, 0, 0)}
    for shown, steps in ((experiment, [1, 2, 3.5, 5]), (one_seed, [1, 2, 3, 4, 5])):
        loss_ax, acc_ax, size_ax = curves_figure(shown, STEPS, colors, "t").axes
        for ax in (loss_ax, acc_ax):
            (line,) = ax.lines
            assert line.get_xdata().tolist() == steps  # the evaluations themselves, no grid between them
            assert line.get_marker() == "o"
        (size_line,) = size_ax.lines
        assert len(size_line.get_xdata()) == CURVE_POINTS and size_line.get_marker() == "None"


def test_seed_stat_is_mean_and_sample_std():
    stat = seed_stat([10, 14, None])
    assert (stat.mean, stat.n) == (12.0, 2) and stat.std == pytest.approx(statistics.stdev([10, 14]), rel=1e-12)
    assert math.isnan(seed_stat([7]).std) and seed_stat([]).n == 0


# ---- the frontier ---------------------------------------------------------------------------------


def accuracy_run(run_dir: Path, accuracies: list[tuple[int, float]], status: str = "completed", **dotted) -> Path:
    """A run evaluated at (step, test accuracy) pairs, 10 samples a step; steps = the last step."""
    steps = accuracies[-1][0]
    return write_run(run_dir, make_config(**dotted), train_records([10] * steps, [1.0] * steps),
                     eval_records([(step, 10 * step, acc) for step, acc in accuracies]), status)


CONSTANT = {"name": "constant", "initial": 10, "max": 10}


def frontier_experiment(tmp_path: Path):
    """Constant b=10: final accuracy 84.6% in both seeds, the best; norm η=0.1: one seed reaches 79%,
    neither 82%. Levels: 84.6 less 5, 2, 1, rounded down: 79, 82, 83."""
    runs = tmp_path / "runs"
    accuracy_run(runs / "c0", [(0, 0.1), (2, 0.795), (4, 0.825), (8, 0.846)], batch_size=CONSTANT, seed=0)
    accuracy_run(runs / "c1", [(0, 0.1), (2, 0.70), (4, 0.82), (8, 0.846)], batch_size=CONSTANT, seed=1)
    accuracy_run(runs / "n0", [(0, 0.1), (1, 0.5), (3, 0.80), (5, 0.81)], seed=0)
    accuracy_run(runs / "n1", [(0, 0.1), (1, 0.5), (3, 0.76), (6, 0.78)], seed=1)
    accuracy_run(runs / "n2", [(0, 0.1), (1, 0.9)], seed=2, status="diverged")  # not averaged
    (experiment,) = group_runs(load_runs([runs]))
    return experiment


def test_levels_are_the_best_mean_final_accuracy_less_5_2_1_points_rounded_down(tmp_path):
    assert levels_below(84.6) == (79, 82, 83)
    assert levels_below(85.0) == (80, 83, 84)
    assert levels_below(100 * 0.57) == (52, 55, 56)  # 100 x 0.57 is 56.99999999999999; less 5, 51.99999999999999
    assert accuracy_levels(frontier_experiment(tmp_path / "a")) == (79, 82, 83)
    # The best *mean*: seeds at 90% and 70% average 80%, below a steady 84.6%.
    accuracy_run(tmp_path / "b" / "c0", [(0, 0.1), (8, 0.846)], batch_size=CONSTANT)
    accuracy_run(tmp_path / "b" / "n0", [(0, 0.1), (4, 0.90)], seed=0)
    accuracy_run(tmp_path / "b" / "n1", [(0, 0.1), (4, 0.70)], seed=1)
    (experiment,) = group_runs(load_runs([tmp_path / "b"]))
    assert best_final_accuracy(experiment) == ("constant", 0.846)
    assert accuracy_levels(experiment) == (79, 82, 83)


def test_steps_to_reach_a_level_average_the_seeds_that_reached_it(tmp_path):
    experiment = frontier_experiment(tmp_path)
    rows = {row.method: row for row in frontier_rows(experiment)}
    assert list(rows) == ["constant", "norm"]
    constant, norm = rows["constant"], rows["norm"]
    assert [(r.level, r.mean_step, r.reached, r.seeds) for r in constant.reach] == [
        (79, 3.0, 2, 2), (82, 4.0, 2, 2), (83, 8.0, 2, 2),  # 79%: steps 2 and 4; 82% (exactly 0.82): 4 and 4
    ]
    assert [(r.mean_step, r.reached) for r in norm.reach[:1]] == [(3.0, 1)]  # seed 1 peaks at 78%
    assert all(math.isnan(r.mean_step) and r.reached == 0 for r in norm.reach[1:])
    assert (norm.seeds, norm.incomplete, norm.steps.mean) == (2, 1, 5.5)  # the diverged seed is not counted
    (edge,) = load_runs([accuracy_run(tmp_path / "edge", [(0, 0.1), (2, 0.56), (3, 0.57)])])
    assert first_step_reaching(edge, 57) == 3  # 0.57 x 100 is 56.99999999999999 unrounded


def test_frontier_tables_show_the_levels_and_are_byte_identical_when_rewritten(tmp_path):
    experiment = frontier_experiment(tmp_path)
    first = write_frontier_tables(experiment, tmp_path / "first")
    second = write_frontier_tables(frontier_experiment(tmp_path / "again"), tmp_path / "second")
    assert [path.name for path in first] == ["frontier.csv", "frontier.md"]
    assert [path.read_bytes() for path in first] == [path.read_bytes() for path in second]

    csv_text = first[0].read_text()
    assert csv_text.splitlines()[0] == (
        "method,seeds,incomplete,mean_batch_size_mean,steps_mean,steps_std,final_test_acc_mean,final_test_acc_std,"
        "best_train_loss_mean,best_train_loss_std,steps_to_79pct_mean,steps_to_79pct_seeds_reached,"
        "steps_to_82pct_mean,steps_to_82pct_seeds_reached,steps_to_83pct_mean,steps_to_83pct_seeds_reached"
    )
    assert csv_text.splitlines()[2] == "norm,2,1,10.0,5.5,0.7071067811865476,0.795,0.021213203435596444,1.0,0.0,3.0,1,,0,,0"
    markdown = first[1].read_text()
    assert "| method | seeds | mean batch size | optimizer steps | final test accuracy (%) |" in markdown
    assert "| constant | 2 | 10.0 | 8 ± 0 | 84.60 ± 0.00 | 1.0000 ± 0.0000 | 3 | 4 | 8 |" in markdown
    assert "| norm | 2 (+1 incomplete) | 10.0 | 6 ± 1 | 79.50 ± 2.12 | 1.0000 ± 0.0000 | 3 (1/2 seeds) | — | — |" in markdown
    assert "(84.60%, constant) less 5, 2 and 1 percentage points" in markdown and "upper bound" in markdown
    assert str(tmp_path) not in markdown + csv_text  # nothing that depends on where the records are


def test_series_join_constant_batches_by_b_and_norm_tests_by_eta(tmp_path):
    for b in (40, 10, 20):
        accuracy_run(tmp_path / f"b{b}", [(0, 0.1), (4, 0.8)], batch_size={"name": "constant", "initial": b, "max": b})
    for eta in (0.5, 0.1):
        accuracy_run(tmp_path / f"eta{eta}", [(0, 0.1), (4, 0.8)], batch_size__eta=eta)
    accuracy_run(tmp_path / "adam", [(0, 0.1), (4, 0.8)], optimizer={"name": "adam", "lr": 0.001})
    accuracy_run(tmp_path / "ramp", [(0, 0.1), (4, 0.8)], batch_size={"name": "linear_ramp", "initial": 10})
    (experiment,) = group_runs(load_runs([tmp_path]))
    series = frontier_series(experiment.methods)
    assert [(s.symbol, [s.value(m) for m in s.methods] if s.symbol else len(s.methods)) for s in series] == [
        (None, 1), ("b", [10, 20, 40]), ("η", [0.1, 0.5]), (None, 1),  # adam's norm test is alone: a single point
    ]
    assert [s.label for s in series][1:3] == ["adagrad, constant batch size b", "adagrad (norm test), by η"]



def test_series_of_a_learning_rate_grid_are_told_apart_by_the_rate(tmp_path):
    for lr in (0.002, 0.008):
        for b in (10, 40):
            accuracy_run(tmp_path / f"lr{lr}-b{b}", [(0, 0.1), (4, 0.8)], optimizer={"name": "adagrad", "lr": lr},
                         batch_size={"name": "constant", "initial": b, "max": b})
    (experiment,) = group_runs(load_runs([tmp_path]))
    series = frontier_series(experiment.methods)
    assert sorted(s.label for s in series) == ["adagrad, constant batch size b (lr=0.002)",
                                               "adagrad, constant batch size b (lr=0.008)"]
    assert all([s.value(m) for m in s.methods] == [10, 40] for s in series)

def test_records_written_before_a_key_existed_join_the_series_of_those_with_its_default(tmp_path):
    """A learning-rate grid whose later runs' configs have train.parallel and batch_size.parts (added since):
    one series of constant batches, as they are one kind of method."""
    for b, later in ((10, False), (40, False), (20, True)):
        extra = {"train__parallel": "ddp", "batch_size": {**CONSTANT, "initial": b, "max": b, "parts": 2}} if later \
            else {"batch_size": {**CONSTANT, "initial": b, "max": b}}
        accuracy_run(tmp_path / f"b{b}", [(0, 0.1), (4, 0.8)], **extra)
    (experiment,) = group_runs(load_runs([tmp_path]))
    (series,) = frontier_series(experiment.methods)
    assert series.label == "adagrad, constant batch size b" and [series.value(m) for m in series.methods] == [10, 20, 40]


def test_frontier_figure_has_a_point_per_method_and_is_written(tmp_path):
    experiment = frontier_experiment(tmp_path)
    acc_ax, loss_ax = frontier_figure(experiment, "t").axes[:2]
    constant, norm = (container.lines[0].get_xydata() for container in acc_ax.containers)
    np.testing.assert_allclose([*constant, *norm], [[8, 84.6], [5.5, 79.5]])  # mean steps, mean final accuracy (%)
    assert loss_ax.get_xscale() == "log" and acc_ax.get_xscale() == "log"

    paths = write_report([experiment], tmp_path / "out")
    figure = tmp_path / "out" / experiment.slug / "frontier.png"
    assert figure in paths and figure.stat().st_size > 10_000
    height, width, _ = imread(figure).shape
    assert 1.5 < width / height < 2.5


def test_curves_show_the_experiments_own_methods_and_leave_its_frontier_points_to_the_frontier(tmp_path):
    """Methods run with the plan most methods share are the row's; a frontier point overrides a plan key."""
    plan = {"b0": 10, "eta": 0.1}
    runs = tmp_path / "runs"
    simple_run(runs / "norm", plan=plan)
    simple_run(runs / "constant", plan=plan, batch_size=CONSTANT)
    simple_run(runs / "eta", plan={**plan, "eta": 0.5}, batch_size__eta=0.5)
    simple_run(runs / "b0", plan={**plan, "b0": 20}, batch_size={**CONSTANT, "initial": 20, "max": 20})
    (experiment,) = group_runs(load_runs([runs]))
    own = row_methods(experiment)
    assert len(experiment.methods) == 4 and {m.config["plan"]["eta"] for m in own} == {0.1}
    assert {m.config["batch_size"]["name"] for m in own} == {"norm", "constant"}
    write_report([experiment], tmp_path / "out")  # the curves draw 2 methods, the frontier all 4

    unplanned = tmp_path / "unplanned"
    simple_run(unplanned / "a", seed=0)
    simple_run(unplanned / "b", seed=0, batch_size__eta=0.5)
    (experiment,) = group_runs(load_runs([unplanned]))
    assert row_methods(experiment) == experiment.methods



def test_a_row_of_more_than_eight_methods_draws_its_schedules_and_its_main_test(tmp_path):
    """Ten methods on one plan: the curves keep the schedules and the test most tested methods run (the
    paper's row, one test under three optimizers); the other tests go to the frontier figure alone."""
    plan, runs = {"b0": 10, "eta": 0.1}, tmp_path / "runs"
    for size in (10, 20, 30, 40):
        simple_run(runs / f"constant{size}", plan=plan, batch_size={**CONSTANT, "initial": size, "max": size})
    simple_run(runs / "ramp", plan=plan, batch_size={"name": "linear_ramp", "initial": 10, "max": 40})
    for optimizer in ("adagrad", "adam", "adagrad_norm"):
        simple_run(runs / f"norm_{optimizer}", plan=plan, optimizer__name=optimizer)
    simple_run(runs / "inner", plan=plan, batch_size={"name": "inner_product", "initial": 10, "max": 40})
    simple_run(runs / "coordinate", plan=plan, batch_size={"name": "coordinate_norm", "initial": 10, "max": 40})
    (experiment,) = group_runs(load_runs([runs]))
    own = row_methods(experiment)
    assert len(experiment.methods) == 10 and len(own) == 8
    assert {m.config["batch_size"]["name"] for m in own} == {"constant", "linear_ramp", "norm"}
    write_report([experiment], tmp_path / "out")


def test_a_row_still_above_eight_methods_draws_its_eight_best_by_final_value(tmp_path):
    """A learning-rate grid: ten constant batches on one plan, none a test; the curves keep the eight with
    the best mean final accuracy, in the row's order."""
    plan, runs = {"b0": 10, "eta": 0.1}, tmp_path / "runs"
    for k in range(10):
        write_run(runs / f"lr{k}", make_config(plan=plan, batch_size={**CONSTANT}, optimizer__lr=0.001 * (k + 1)),
                  train_records([10] * 5, [1.0] * 5), eval_records([(0, 0, 0.1), (5, 50, 0.5 + 0.01 * ((3 * k) % 10))]))
    (experiment,) = group_runs(load_runs([runs]))
    own = row_methods(experiment)
    finals = {m.label: m.completed[0].summary["final_test_acc"] for m in experiment.methods}
    assert len(own) == 8 and [m.label for m in own] == [m.label for m in experiment.methods if m in own]
    assert min(finals[m.label] for m in own) > max(finals[m.label] for m in experiment.methods if m not in own)

# ---- tables and the command line ----------------------------------------------------------------


def test_table_averages_completed_runs_and_counts_incomplete_ones(tmp_path):
    simple_run(tmp_path / "0", steps=10, seed=0)
    simple_run(tmp_path / "1", steps=14, seed=1)
    simple_run(tmp_path / "2", steps=3, seed=2, status="diverged")
    simple_run(tmp_path / "3", steps=3, seed=0, status="diverged", batch_size__eta=0.5)
    (experiment,) = group_runs(load_runs([tmp_path]))

    rows = table_rows(experiment)
    assert [(r.method, r.seeds, r.incomplete) for r in rows] == [("norm eta=0.1", 2, 1), ("norm eta=0.5", 0, 1)]
    assert rows[0].stats["steps"].mean == 12.0

    csv_path, md_path = write_tables(experiment, tmp_path / "out")
    with open(csv_path) as f:
        table = list(csv.DictReader(f))
    assert float(table[0]["steps_mean"]) == 12.0
    assert float(table[0]["steps_std"]) == pytest.approx(statistics.stdev([10, 14]), rel=1e-12)
    assert table[1]["steps_mean"] == "" and table[1]["seeds"] == "0"
    markdown = md_path.read_text()
    assert "| norm eta=0.1 | 2 (+1 incomplete) | 12.0 ± 2.8 |" in markdown
    assert "| norm eta=0.5 | 0 (+1 incomplete) | — |" in markdown
    assert f"`{(tmp_path / '2').resolve()}` (status: diverged)" in markdown


def test_cli_without_completed_runs_exits_2_with_one_error_line(tmp_path):
    simple_run(tmp_path / "runs" / "0", status="interrupted")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "runs"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: no completed runs found under {tmp_path / 'runs'}"]
    assert "warning: not averaging incomplete run" in result.stderr
    assert not (tmp_path / "out").exists()

    script = load_script()
    with contextlib.redirect_stderr(io.StringIO()) as stderr:
        assert script.main([str(tmp_path / "nothing_here"), "--out", str(tmp_path / "out")]) == 2
    assert stderr.getvalue().startswith("error: no such file or directory")


# ---- a real Hydra multirun, end to end -----------------------------------------------------------


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    sweep_dir = tmp_path_factory.mktemp("multirun") / "sweep"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    result = subprocess.run(
        [
            sys.executable, str(ROOT / "src" / "train.py"), "-m", "batch_size=norm,constant", "seed=0,1",
            "dataset=digits", "model=logistic", "device=cpu", "train.samples=600", "train.eval_every=200",
            "batch_size.initial=8", "batch_size.max=64", f"hydra.sweep.dir={sweep_dir}",
            "train.progress_every_s=0",
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir


@pytest.fixture(scope="module")
def report(sweep) -> tuple[Path, list[str]]:
    out = sweep.parent / "figures"
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        assert load_script().main([str(sweep), "--out", str(out)]) == 0
    return out, stdout.getvalue().splitlines()


def test_multirun_groups_into_two_methods_of_two_seeds(sweep):
    (experiment,) = group_runs(load_runs([sweep]))
    assert experiment.name == "digits_logistic"
    assert [(m.label, sorted(r.seed for r in m.runs)) for m in experiment.methods] == [
        ("norm", [0, 1]), ("constant", [0, 1]),
    ]


def test_multirun_table_matches_the_summaries(sweep, report):
    out, _ = report
    with open(out / "digits_logistic" / "table.csv") as f:
        rows = {row["method"]: row for row in csv.DictReader(f)}
    assert list(rows) == ["norm", "constant"]
    for name, jobs in (("norm", ("0", "1")), ("constant", ("2", "3"))):
        summaries = [json.loads((sweep / job / "summary.json").read_text()) for job in jobs]
        assert rows[name]["seeds"] == "2"
        for key in ("steps", "mean_batch_size"):
            values = [summary[key] for summary in summaries]
            assert float(rows[name][f"{key}_mean"]) == (values[0] + values[1]) / 2
            assert float(rows[name][f"{key}_std"]) == pytest.approx(statistics.stdev(values), rel=1e-12, abs=1e-12)
    assert "| norm | 2 |" in (out / "digits_logistic" / "table.md").read_text()


def test_multirun_figures_are_written_and_look_like_three_panels(report):
    out, printed = report
    figures = out / "digits_logistic"
    names = ["curves_samples.png", "curves_steps.png", "curves_wallclock.png", "frontier.png", "test_statistic.png"]
    for name in names:
        path = figures / name
        assert path.stat().st_size > 10_000, name
        height, width, _ = imread(path).shape
        if name.startswith("curves"):
            assert 2.4 < width / height < 3.6, (name, width, height)
    tables = ["table.csv", "table.md", "frontier.csv", "frontier.md"]
    expected = {out / "index.md", *(figures / n for n in [*tables, *names])}
    assert {Path(line) for line in printed} == expected


def test_multirun_index_links_resolve(report):
    out, _ = report
    index = (out / "index.md").read_text()
    targets = re.findall(r"\]\(([^)]+)\)", index)
    assert len(targets) >= 6 and all(not Path(t).is_absolute() for t in targets)
    assert all((out / target).is_file() for target in targets)
    assert "digits_logistic/table.md" in targets and "digits_logistic/test_statistic.png" in targets


def test_samples_before_the_cap_come_from_the_first_record_whose_next_batch_is_at_the_cap(tmp_path):
    def growing(run_dir, sizes, **dotted):
        records = train_records(sizes, [1.0] * len(sizes))
        for record, following in zip(records, [*sizes[1:], sizes[-1]]):
            record["next_batch_size"] = following
        return load_run(write_run(run_dir, make_config(**dotted), records, eval_records([(0, 0, 0.1), (5, 99, 0.5)])))

    assert samples_before_the_cap(growing(tmp_path / "a", [4, 8, 16, 16, 32], batch_size__max=16)) == 12
    assert samples_before_the_cap(growing(tmp_path / "b", [4, 8, 8], batch_size__max=16)) is None
    assert samples_before_the_cap(growing(tmp_path / "c", [16, 16], batch_size__name="constant", batch_size__max=16)) is None


def test_a_ramp_recorded_every_few_steps_shows_its_samples_before_the_cap_as_an_upper_bound(tmp_path):
    """Records written before runs recorded every change of batch size begin at step train.log_every:
    the table marks that run's method ≤ and says why; records from step 1 on give exact values, unmarked."""
    def ramp(run_dir, first_step, seed):
        records = train_records([4, 8, 12, 16, 16, 16], [1.0] * 6)
        for record in records:
            record["next_batch_size"] = min(record["batch_size"] + 4, 16)
        config = make_config(batch_size__name="linear_ramp", batch_size__max=16, seed=seed)
        write_run(run_dir, config, records[first_step - 1:], eval_records([(0, 0, 0.1), (6, 72, 0.5)]))

    ramp(tmp_path / "exact" / "0", 1, seed=0)
    ramp(tmp_path / "exact" / "1", 1, seed=1)
    (exact,) = group_runs(load_runs([tmp_path / "exact"]))
    ramp(tmp_path / "mixed" / "0", 1, seed=0)
    ramp(tmp_path / "mixed" / "1", 2, seed=1)  # its first record is step 2: the cap could have come earlier
    (mixed,) = group_runs(load_runs([tmp_path / "mixed"]))

    exact_md = write_tables(exact, tmp_path / "out_exact")[1].read_text()
    mixed_md = write_tables(mixed, tmp_path / "out_mixed")[1].read_text()
    assert table_rows(exact)[0].upper_bounds == frozenset()
    assert table_rows(mixed)[0].upper_bounds == {"samples_before_cap"}
    assert "| 24 ± 0 |" in exact_md and "≤" not in exact_md.split("\n\n")[-1]
    assert "| ≤ 24 ± 0 |" in mixed_md and "; ≤ marks an upper bound, from records written before" in mixed_md
