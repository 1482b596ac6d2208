"""scripts/local_study.py on real (tiny) runs: a row per statistics source, the parts the records name,
and the batch-size gap to the per-example run of the same seed (zero for that run itself)."""
from __future__ import annotations

import csv
import importlib.util

import pytest
from helpers import ROOT, compose

from adabatch.run.loop import train

pytestmark = pytest.mark.slow

TINY = ("experiment=quickstart", "device=cpu", "train.samples=300", "train.eval_every=300",
        "train.eval_train_examples=100", "train.save_model=false")


def load_script():
    spec = importlib.util.spec_from_file_location("local_study", ROOT / "scripts" / "local_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_study_table_compares_each_number_of_parts_with_the_per_example_test(tmp_path):
    runs = tmp_path / "runs"
    for name, overrides in {"exact": ("batch_size.engine=functorch",),
                            "parts4": ("batch_size.engine=local", "batch_size.parts=4")}.items():
        train(compose(*TINY, *overrides), runs / name)
    study = load_script()
    assert study.main([str(runs), "--out", str(tmp_path / "out")]) == 0
    rows = (tmp_path / "out" / "local_study.md").read_text().splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == ["| per-example", "| parts, M >= 4"]
    cells = [row.split(" | ") for row in rows]
    assert cells[0][2] == "-" and cells[1][2] == "4-4"
    assert cells[0][-2] == "0.000 ± 0.000" and cells[0][-1] == "0.000 ± 0.000 |"  # the per-example run against itself
    assert float(cells[1][-2].split(" ± ")[0]) > 0  # the estimate from 4 parts took other decisions
    assert float(cells[1][-1].split(" ± ")[0]) >= float(cells[1][-2].split(" ± ")[0])  # less diluted by capped steps
    assert (tmp_path / "out" / "local_study.png").stat().st_size > 0
    with open(tmp_path / "out" / "local_study.csv", newline="") as f:
        found = list(csv.DictReader(f))
    assert [(r["statistics"], r["parts"]) for r in found] == [("per-example", "-"), ("parts, M >= 4", "4-4")]
    assert f"{float(found[1]['log2_gap_mean']):.3f}" == cells[1][-2].split(" ± ")[0]  # the table, rounded

    assert study.main([str(runs / "nothing-here"), "--out", str(tmp_path / "out")]) == 2
