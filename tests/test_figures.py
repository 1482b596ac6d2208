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

from adabatch.analysis import find_run_dirs, group_runs, load_runs
from adabatch.analysis.aggregate import AXES, method_curves, seed_stat
from adabatch.analysis.runs import method_labels
from adabatch.analysis.tables import table_rows, write_tables

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


def test_labels_name_what_differs_and_stay_distinct():
    norm = make_config()
    norm_wide = make_config(batch_size__eta=0.25)
    constant = make_config(batch_size={"name": "constant", "initial": 10, "max": 40})
    assert method_labels([norm, norm_wide, constant]) == ["norm eta=0.1", "norm eta=0.25", "constant"]
    assert method_labels([norm]) == ["adagrad norm"]
    assert method_labels([make_config(method="AdAdaGrad"), constant]) == ["AdAdaGrad", "constant"]
    assert method_labels([make_config(method="A"), make_config(method="A", optimizer__lr=0.1)]) == [
        "A (adagrad lr=0.01)", "A (adagrad lr=0.1)",
    ]


# ---- aggregation ------------------------------------------------------------------------------


def two_seeds(tmp_path: Path) -> list:
    write_run(
        tmp_path / "s0", make_config(seed=0), train_records([10, 10, 20, 20, 40], [1.0] * 5, 0.5),
        eval_records([(0, 0, 0.0), (3, 40, 0.4), (5, 100, 0.6)], train_loss=1.0),
    )
    write_run(
        tmp_path / "s1", make_config(seed=1), train_records([10, 20, 20, 40, 40], [3.0] * 5, 1.0),
        eval_records([(0, 0, 0.2), (5, 130, 0.8)], train_loss=3.0),
    )
    (experiment,) = group_runs(load_runs([tmp_path]))
    (method,) = experiment.methods
    return method.completed


def test_curves_average_seeds_on_a_common_grid_up_to_the_shortest_seed(tmp_path):
    runs = two_seeds(tmp_path)
    curves = method_curves(runs, SAMPLES)

    loss = curves["train_loss"]
    assert loss.x[-1] == 100  # the grid of every curve ends with the shortest seed
    np.testing.assert_allclose(loss.mean, 2.0)
    np.testing.assert_allclose(loss.low, 1.0)
    np.testing.assert_allclose(loss.high, 3.0)

    acc = curves["test_acc"]
    assert acc.x[0] == 0 and acc.x[-1] == 100  # seed 0 ends at 100 samples, seed 1 at 130
    expected = (np.interp(acc.x, [0, 40, 100], [0.0, 0.4, 0.6]) + np.interp(acc.x, [0, 130], [0.2, 0.8])) / 2
    np.testing.assert_allclose(acc.mean, expected)

    sizes = curves["batch_size"]
    at = {x: i for i, x in enumerate(sizes.x)}
    point = sizes.x[np.argmin(np.abs(sizes.x - 25))]  # inside seed 0's third step (20..40), seed 1's second (10..30)
    assert (sizes.low[at[point]], sizes.high[at[point]], sizes.mean[at[point]]) == (20, 20, 20)
    assert (sizes.low[0], sizes.high[0]) == (10, 10)
    assert (sizes.low[-1], sizes.high[-1]) == (40, 40)


def test_curves_against_steps_and_wallclock(tmp_path):
    runs = two_seeds(tmp_path)
    steps = method_curves(runs, STEPS)["batch_size"]
    assert steps.x[0] == 1 and steps.x[-1] == pytest.approx(5)  # log-spaced from the first step
    np.testing.assert_allclose(np.diff(np.log(steps.x)), np.log(5) / (len(steps.x) - 1))
    np.testing.assert_allclose(steps.mean[[0, -1]], [10, 40])

    wallclock = method_curves(runs, WALLCLOCK)["test_acc"]
    assert wallclock.x[-1] == 2.5  # seed 0: 5 steps of 0.5 s
    # Seed 0 evaluated after step 3 (1.5 s) and step 5 (2.5 s); seed 1 after step 5 (5 s).
    expected = (np.interp(wallclock.x, [0, 1.5, 2.5], [0.0, 0.4, 0.6]) + np.interp(wallclock.x, [0, 5], [0.2, 0.8])) / 2
    np.testing.assert_allclose(wallclock.mean, expected)


def test_wallclock_curves_when_one_seed_is_done_before_the_others_first_step(tmp_path):
    write_run(tmp_path / "fast", make_config(seed=0), train_records([10, 10], [1.0, 1.0], 0.1),
              eval_records([(0, 0, 0.1), (2, 20, 0.5)], train_loss=1.0))
    write_run(tmp_path / "slow", make_config(seed=1), train_records([10, 10], [3.0, 3.0], 1.0),
              eval_records([(0, 0, 0.1), (2, 20, 0.7)], train_loss=3.0))
    (experiment,) = group_runs(load_runs([tmp_path]))
    curves = method_curves(experiment.methods[0].completed, WALLCLOCK)
    assert curves["train_loss"].x[-1] == pytest.approx(0.2)  # the fast seed is done at 0.2 s
    np.testing.assert_allclose(curves["train_loss"].mean, 2.0)


def test_seed_stat_is_mean_and_sample_std():
    stat = seed_stat([10, 14, None])
    assert (stat.mean, stat.n) == (12.0, 2) and stat.std == pytest.approx(statistics.stdev([10, 14]), rel=1e-12)
    assert math.isnan(seed_stat([7]).std) and seed_stat([]).n == 0


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
    names = ["curves_samples.png", "curves_steps.png", "curves_wallclock.png", "test_statistic.png"]
    for name in names:
        path = figures / name
        assert path.stat().st_size > 10_000, name
        height, width, _ = imread(path).shape
        if name.startswith("curves"):
            assert 2.4 < width / height < 3.6, (name, width, height)
    expected = {figures / "table.csv", figures / "table.md", out / "index.md", *(figures / n for n in names)}
    assert {Path(line) for line in printed} == expected


def test_multirun_index_links_resolve(report):
    out, _ = report
    index = (out / "index.md").read_text()
    targets = re.findall(r"\]\(([^)]+)\)", index)
    assert len(targets) >= 6 and all(not Path(t).is_absolute() for t in targets)
    assert all((out / target).is_file() for target in targets)
    assert "digits_logistic/table.md" in targets and "digits_logistic/test_statistic.png" in targets
