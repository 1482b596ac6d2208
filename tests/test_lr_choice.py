"""The learning-rate study's choice reads validation accuracy only, and lists the reruns make starts."""
import json
import subprocess
import sys

import yaml
from helpers import ROOT

from adabatch.analysis.lr_choice import choose_rates, rerun_ids

GRID = {  # (method id, lr): [(status, final validation acc, final test acc) per seed]
    ("constant_small-adagrad/b0_128", "0.002"): [("completed", 0.80, 0.99), ("completed", 0.82, 0.99)],
    ("constant_small-adagrad/b0_128", "0.008"): [("completed", 0.84, 0.10), ("completed", 0.84, 0.10)],
    ("constant_small-adagrad/b0_128", "0.032"): [("completed", 0.86, 0.10), ("diverged", None, None)],
    ("norm_test-adagrad", "0.008"): [("completed", 0.70, 0.5), ("completed", 0.72, 0.5)],
    ("norm_test-adagrad", "0.032"): [("completed", 0.71, 0.9), ("completed", 0.71, 0.9)],
}


def write_grid(root):
    for (method, lr), seeds in GRID.items():
        for seed, (status, validation, test) in enumerate(seeds):
            run = root / method / f"lr_{lr}" / f"seed{seed}"
            run.mkdir(parents=True)
            (run / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "optimizer": {"lr": float(lr)}}))
            summary = {"status": status, "steps": 10, "final_test_acc": test}
            if validation is not None:
                summary["final_validation_acc"] = validation
            (run / "summary.json").write_text(json.dumps(summary))


def test_each_method_gets_the_rate_of_best_mean_validation_accuracy_whatever_the_test_accuracy(tmp_path):
    write_grid(tmp_path / "grid")
    chosen = choose_rates(tmp_path / "grid")["methods"]
    # 0.032 scores (0.86 + 0) / 2 with its diverged seed; 0.002 has the best test accuracy, never looked at
    assert chosen["constant_small-adagrad/b0_128"]["lr"] == "0.008"
    assert chosen["constant_small-adagrad/b0_128"]["mean_validation_acc"]["0.032"] == 0.43
    assert chosen["norm_test-adagrad"]["lr"] == "0.008"  # 0.71 == 0.71: the smaller rate
    assert chosen["norm_test-adagrad"]["seeds"] == {"0.008": 2, "0.032": 2}


def test_the_script_writes_the_choice_and_lists_the_reruns(tmp_path):
    write_grid(tmp_path / "grid")
    out = tmp_path / "chosen.json"
    script = [sys.executable, str(ROOT / "scripts/choose_lr.py")]
    subprocess.run([*script, str(tmp_path / "grid"), "--out", str(out)], check=True, capture_output=True)
    ids = subprocess.run([*script, "--ids", str(out)], check=True, capture_output=True, text=True).stdout.split()
    assert ids == rerun_ids(out) == ["constant_small-adagrad/b0_128/lr_0.008", "norm_test-adagrad/lr_0.008"]
    assert rerun_ids(tmp_path / "none.json") == []
    missing = subprocess.run([*script, str(tmp_path / "nowhere"), "--out", str(out)], capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.startswith("error: the grid's runs directory")


def test_the_comparison_puts_each_method_at_the_papers_rate_beside_its_chosen_rate(tmp_path):
    from adabatch.analysis.lr_comparison import write_comparison

    write_grid(tmp_path / "grid")
    reruns = tmp_path / "reruns" / "norm_test-adagrad" / "lr_0.032" / "seed2"
    reruns.mkdir(parents=True)
    (reruns / "config.yaml").write_text(yaml.safe_dump({"seed": 2, "method": "AdAdaGrad (norm test)"}))
    (reruns / "summary.json").write_text(json.dumps({"status": "completed", "steps": 30, "final_test_acc": 0.875,
                                                     "final_validation_acc": 0.5}))
    chosen = {"methods": {"norm_test-adagrad": {"lr": "0.032"}}}
    table, figure = write_comparison(tmp_path / "grid", tmp_path / "reruns", chosen, "0.008", tmp_path / "out")
    row = table.read_text().splitlines()[-1]
    assert row == "| AdAdaGrad (norm test) (`norm_test-adagrad`) | 0.008 | 2/2 | 10 | 71.00 | 50.00 | 0.032 | 1/1 | 30 | 50.00 | 87.50 |"
    assert figure.stat().st_size > 0
