"""Every run that `make reproduce` and `make reproduce-cpu` would start composes into a valid config."""
import re
import subprocess

import pytest
import torch
from helpers import ROOT, compose
from omegaconf import OmegaConf

from adabatch.batch_size import build_policy
from adabatch.optim import build_optimizer
from adabatch.schedules import build_schedule


def planned_runs(target: str) -> list[list[str]]:
    dry_run = subprocess.run(["make", "-n", "-B", "--no-print-directory", target], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    return [re.findall(r"(?:experiment|method|optimizer|seed|(?:plan|optimizer|batch_size|dataset)\.\w+)=\S+", line)
            for line in dry_run.splitlines()
            if "src/train.py" in line]


# cpu-runs: each experiment's row (12 and 7 methods) x 3 seeds, and its frontier (12 and 7 more points) x 2 seeds;
# suite-fashion_cnn: the logistic row's 12 methods x 3 seeds and 7 frontier points x 2 seeds
@pytest.mark.parametrize("target, count", [("cpu-runs", (12 + 7) * 3 + (12 + 7) * 2), ("paper-runs", 39 * 3),
                                           ("suite-fashion_cnn", 12 * 3 + 7 * 2)])
def test_every_planned_run_composes(target, count):
    runs = planned_runs(target)
    assert len(runs) == count and len({tuple(r) for r in runs}) == count
    assert {r[3] for r in runs} == {"seed=0", "seed=1", "seed=2"}
    labels = {}
    for overrides in sorted({tuple(r[:3] + r[4:]) for r in runs}):  # the seed does not change the composition
        cfg = OmegaConf.to_container(compose(*overrides), resolve=True)
        policy = build_policy(cfg["batch_size"], budget=cfg["train"]["samples"])
        build_optimizer(cfg["optimizer"], [torch.nn.Parameter(torch.ones(1))])
        build_schedule(cfg["schedule"])
        assert cfg["experiment_name"] == overrides[0].split("=")[1]
        assert policy.initial == cfg["plan"]["b0"] or cfg["batch_size"]["name"] == "constant"
        labels.setdefault((cfg["experiment_name"], cfg["method"]), set()).add(overrides[1:])
    assert all(len(v) == 1 for v in labels.values()), "two methods share a display name"


def test_the_full_scale_fashion_row_differs_from_the_papers_mnist_row_in_the_dataset_only():
    def composed(experiment: str) -> dict:
        cfg = OmegaConf.to_container(compose(f"experiment={experiment}", "method=norm_test"), resolve=True)
        micro = cfg["plan"].pop("max_micro"), cfg["batch_size"].pop("max_micro")
        return {k: v for k, v in cfg.items() if k not in ("dataset", "experiment_name")}, micro

    (fashion, fashion_micro), (mnist, mnist_micro) = composed("fashion_logistic"), composed("mnist_logistic")
    assert fashion == mnist
    assert compose("experiment=fashion_logistic").dataset.name == "fashion_mnist"
    assert fashion_micro == (16384, 16384) and mnist_micro == ("auto", "auto")  # the committed CPU runs' value


def test_make_paper_run_ids_lists_what_make_reproduce_starts():
    ids = subprocess.run(["make", "-s", "--no-print-directory", "paper-run-ids"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
    started = {(r[0], r[1], r[2]) for r in planned_runs("paper-runs")}
    as_ids = {f"{e.split('=')[1]}/{m.split('=')[1]}-{o.split('=')[1]}" for e, m, o in started}
    assert sorted(ids) == sorted(as_ids) and len(ids) == len(as_ids) == 39


def test_frontier_runs_override_one_plan_key():
    runs = [r for r in planned_runs("cpu-runs") if any(o.startswith("plan.") for o in r)]
    assert {o for r in runs for o in r if o.startswith("plan.")} >= {"plan.b0=8", "plan.b0=60000", "plan.eta=0.05"}
    assert all(sum(o.startswith("plan.") for o in r) == 1 for r in runs)


def test_the_lr_study_grid_holds_out_5000_and_sweeps_five_rates_per_method():
    runs = planned_runs("lr-grid-runs")
    assert len(runs) == 8 * 5 * 2 and len({tuple(r) for r in runs}) == 8 * 5 * 2
    rates = set()
    for overrides in {tuple(r[:3] + r[4:]) for r in runs}:
        cfg = OmegaConf.to_container(compose(*overrides), resolve=True)
        assert cfg["experiment_name"] == "fashion_logistic_lr_grid" and cfg["dataset"]["validation"] == 5000
        assert cfg["optimizer"]["name"] == "adagrad"
        rates.add(cfg["optimizer"]["lr"])
    assert sorted(rates) == [0.002, 0.008, 0.032, 0.128, 0.512]  # 8e-3 x 1/4, 1, 4, 16, 64


def test_an_unknown_suite_is_refused_in_one_line():
    done = subprocess.run(["make", "--no-print-directory", "reproduce-cpu", "SUITE=nope"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode != 0 and "SUITE=nope is unknown; choose one of fashion_logistic" in done.stderr
