"""`python -m adabatch_bench.bench` end to end on the small CNN: it times every engine in a process of its own,
measures its memory (in a child process), writes both tables and ends with one worst-overhead line per
engine and test (what it measures is tested elsewhere)."""
from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT, tiny_problem

from adabatch.stats import Needs, build_engine, gradient_with_statistics
from adabatch_bench.anchors import ANCHORS, build_anchor


ENGINES, TESTS = ("ghost", "functorch"), ("norm",)  # every test takes the same path through the bench


def test_bench_writes_its_tables_and_worst_overhead_lines(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "adabatch_bench.bench", "--models", "cnn", "--sizes", "128",
         "--engines", *ENGINES, "--tests", *TESTS, "--repeats", "2", "--max-seconds", "5", "--device", "cpu",
         "--out", tmp_path],
        capture_output=True, text=True, timeout=300, check=True,
    )
    lines = result.stdout.splitlines()
    expected = [f"worst overhead {engine} {test}: " for test in TESTS for engine in ENGINES]
    assert [line[: len(prefix)] for line, prefix in zip(lines, expected)] == expected and len(lines) == len(expected)
    for line in lines:
        assert re.fullmatch(r"worst overhead \w+ \w+: \d+\.\d\dx \(cnn, b=128\)", line)

    with open(tmp_path / "cpu.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["batch_size"], r["engine"], r["test"]) for r in rows] == [
        ("128", *key) for key in [("plain", ""), *((e, t) for e in ENGINES for t in TESTS)]
    ]
    for row in rows:
        assert float(row["time_ms"]) > 0 and float(row["time_ratio"]) > 0
        low, high = map(float, row["ratio_range"].split("-"))
        assert low <= float(row["time_ratio"]) <= high
        assert float(row["peak_mib"]) > 0 and float(row["memory_ratio"]) > 0  # measured by the memory child
        if row["engine"] == "plain":
            assert row["time_ratio"] == "1.00" and row["memory_ratio"] == "1.00"
    table = (tmp_path / "cpu.md").read_text()
    assert all(line in table for line in lines)
    assert "2 rounds, more until every ratio of this project's engines was known within 5% (two standard errors of " \
           "a median) or a model's rounds had taken 5 s (2 for opacus, functorch, opacus-user, functorch-user)" \
           in table  # --ratio-error's default, --max-seconds, and --per-example-repeats' default (at most --repeats)
    rounds = {r["engine"]: int(r["rounds"]) for r in rows}
    assert rounds["functorch"] == 2 and 2 <= rounds["plain"] == rounds["ghost"] <= 20
    assert "vector extensions:" in table and "Each engine timed in a process of its own" in table
    assert table.count("| cnn |") == len(rows)


def test_rounds_continue_until_the_median_ratio_is_known_within_the_error():
    from adabatch_bench.bench import known_within
    spread = [1.2, 1.5, 1.3, 1.6, 1.4]  # median 1.4, median absolute deviation 0.1
    # two standard errors: 2 * 1.2533 * 1.4826 * 0.1 / sqrt(rounds), against 0.05 * 1.4 = 0.07
    assert not known_within(spread, 0.05) and not known_within(spread * 5, 0.05)  # 0.166, then 0.074
    assert known_within(spread * 6, 0.05) and known_within(spread, 0.125)  # 0.068; 0.166 <= 0.175
    assert known_within([1.3] * 3, 0.0) and not known_within([1.3, 1.31, 1.32], 0.0)
    assert known_within([1.3, 1.3, 9.0], 0.01)  # one stalled round does not move a median


def test_per_example_engines_run_only_on_the_models_asked_for(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "adabatch_bench.bench", "--models", "cnn", "--sizes", "32", "--engines", "ghost",
         "functorch", "--tests", "norm", "--repeats", "1", "--device", "cpu", "--per-example-models", "--out", tmp_path],
        capture_output=True, text=True, timeout=300, check=True,
    )
    with open(tmp_path / "cpu.csv") as f:
        rows = {(r["engine"], r["test"]): r for r in csv.DictReader(f)}
    assert list(rows) == [("plain", ""), ("ghost", "norm"), ("functorch", "norm")]
    assert float(rows[("ghost", "norm")]["time_ratio"]) > 0 and not rows[("ghost", "norm")]["skipped"]
    assert rows[("functorch", "norm")]["time_ms"] == "" and "--per-example-models" in rows[("functorch", "norm")]["skipped"]


@pytest.mark.parametrize("anchor", ANCHORS)
def test_the_anchors_compute_the_exact_engines_statistics_in_float32(anchor):
    model, data, batch = tiny_problem("cnn")
    model = model.model.float()  # the anchors run in the model's float32, as users would
    x, y = data.examples(batch)
    needs = Needs(inner_products=True, coordinates=True)
    exact = gradient_with_statistics(build_engine("ghost", model), data, batch, len(batch), needs)[1]
    found = build_anchor(anchor, model).step(x, y, needs)
    assert float(found["mean_sq"]) == pytest.approx(exact.grad_sq_norm, rel=1e-4)
    for key in ("norm_var", "ip_var", "orth_var"):
        assert float(found[key]) == pytest.approx(getattr(exact, key), rel=1e-3), key
    for mine, theirs in zip(found["coordinate_var"], exact.coord_var):
        torch.testing.assert_close(mine.double(), theirs, rtol=1e-3, atol=1e-9)


def test_the_readme_and_docs_quote_the_committed_tables():
    """README.md's and docs/benchmarks.md's numbers are generated from results/, never typed."""
    from adabatch_bench.docs import BLOCKS, STAND_INS, replace, stale_blocks
    assert stale_blocks() == [], "run python -m adabatch_bench.docs (make bench and make figures do)"
    for block in BLOCKS:
        text = (ROOT / block.file).read_text()
        quoted = text[text.index(block.begin()): text.index(block.end())]
        tampered = quoted.replace("x", "y", 1) if "x" in quoted else quoted + " "
        assert replace(text.replace(quoted, tampered), block) == text  # a changed number does not survive
    readme = (ROOT / "README.md").read_text()
    with open(ROOT / "results/cpu/fashion_logistic/table.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["method"] == "AdAdaGrad (norm test, η=0.1)")
    assert f"| {row['method']} | 3 | {float(row['steps_mean']):,.0f} |" in readme
    assert f"{100 * float(row['final_test_acc_mean']):.2f} ± " in readme
    for name, (full_scale, _) in STAND_INS.items():
        if (ROOT / "results/cpu" / full_scale / "table.csv").exists():  # the row itself replaces its stand-in
            assert f"**`{name}`**" not in readme and f"**`{full_scale}`**" in readme
        else:  # a sentence, its table left to table.md
            stand_in = readme[readme.index(f"**`{name}`**"):]
            assert stand_in.index("**`kjv_gpt`**") < stand_in.index("| method |") and "Best final accuracy" in stand_in
    with open(ROOT / "results/bench/cpu.csv", newline="") as f:
        ghost = [r for r in csv.DictReader(f) if r["engine"] == "ghost" and r["test"] == "norm" and r["batch_size"] == "128"]
    worst = max(ghost, key=lambda r: float(r["time_ratio"]))
    assert f"| norm | {worst['time_ratio']}x" in readme and "Measured on " in (ROOT / "docs/benchmarks.md").read_text()
    with open(ROOT / "results/bench/cpu.csv", newline="") as f:
        gpt = next(r for r in csv.DictReader(f) if r["model"] == "gpt" and r["engine"] == "ghost" and r["test"] == "norm")
    assert f"| norm | {gpt['time_ratio']}x / " in (ROOT / "docs/benchmarks.md").read_text()  # with the repeat's


def test_the_bench_summary_names_the_worst_model_and_ghosts_smallest_lead():
    from adabatch_bench.summary import summary
    row = lambda model, engine, test, ratio, memory="1.00": {  # noqa: E731
        "model": model, "batch_size": "128", "engine": engine, "test": test, "time_ratio": ratio, "memory_ratio": memory}
    rows = [row("cnn", "ghost", "norm", "1.30", "1.10"), row("vit", "ghost", "norm", "1.50", "1.02"),
            row("cnn", "opacus-user", "norm", "9.00"), row("cnn", "functorch-user", "norm", "8.00"),
            row("vit", "functorch-user", "norm", "1.65")]
    lines = summary(rows).splitlines()
    assert lines[0] == "| test | ghost, worst of CNN / ViT | ghost memory, worst | best anchor as users call it, CNN / ViT |"
    assert lines[2] == "| norm | 1.50x (ViT) | 1.10x | functorch-user 8.00x (ghost 1.30x) / functorch-user 1.65x (ghost 1.50x) |"
    assert "smallest lead is on the ViT's norm test, where the anchor takes 1.10 times ghost's time" in " ".join(lines)
    rows[-1]["time_ratio"] = "1.40"
    assert "Ghost is not faster than the best anchor on the ViT's norm test" in summary(rows)
    rows += [row("cnn", "ghost_measured", "norm", "1.25"), row("vit", "ghost_measured", "norm", "1.20")]
    lines = summary(rows).splitlines()
    assert lines[0].startswith("| test | ghost, worst of CNN / ViT | ghost_measured, worst | ghost memory, worst |")
    assert lines[2].startswith("| norm | 1.50x (ViT) | 1.25x (CNN) | 1.10x | functorch-user 8.00x")


def test_the_layer_profile_lists_every_layer_with_its_form():
    result = subprocess.run([sys.executable, "-m", "adabatch_bench.profiler", "--model", "cnn", "--test",
                             "inner_product", "--size", "16", "--rounds", "1"],
                            capture_output=True, text=True, timeout=300, check=True)
    rows = [line.split(" | ") for line in result.stdout.splitlines() if line.startswith("| ") and "(" in line.split(" | ")[0]]
    assert {row[0] for row in rows} == {"| 0 (Conv2d)", "| 3 (Conv2d)", "| 6 (Conv2d)", "| 10 (Linear)", "| 12 (Linear)"}
    forms = {row[0]: row[2] for row in rows}
    assert forms["| 10 (Linear)"] == "outer" and forms["| 0 (Conv2d)"].startswith(("formed", "gram"))
    assert all(float(row[3]) > 0 for row in rows) and "the rules add" in result.stdout
    forming = {row[0]: row[4] for row in rows}  # a formed dense layer's per-example gradients alone
    assert forming["| 10 (Linear)"] == "" and all(float(forming[name]) > 0 for name in forms
                                                   if forms[name].startswith("formed"))
    assert "the forward and activation gradients alone" in result.stdout


def test_the_memory_format_bench_checks_both_layouts_agree_then_times_each_kind_of_work():
    result = subprocess.run([sys.executable, "-m", "adabatch_bench.memory_format", "--size", "32", "--rounds", "1"],
                            capture_output=True, text=True, timeout=300, check=True)
    ratios = re.findall(r"^  (.+?) +(\d+\.\d\d)$", result.stdout, re.MULTILINE)
    assert [name for name, _ in ratios] == ["plain step, b = 8", "plain step, b = 32", "evaluation, 32 examples",
                                            "norm test's step, b = 32", "augmented test's step, b = 32"]
    assert all(float(ratio) > 0 for _, ratio in ratios)


def test_the_bench_summary_says_how_far_a_second_run_is():
    from adabatch_bench.summary import repeat_line
    def row(engine, ratio, rounds, test="norm"):
        return {"model": "vit", "batch_size": "128", "engine": engine, "test": test, "time_ratio": ratio, "rounds": rounds}
    first = [row("plain", "1.00", "8"), row("ghost", "1.30", "8"), row("ghost", "1.50", "8", "inner_product"),
             row("functorch-user", "1.60", "5"), row("opacus", "4.00", "5"), row("ghost_measured", "1.20", "8")]
    second = [row("plain", "1.00", "9"), row("ghost", "1.43", "9"), row("ghost", "1.53", "9", "inner_product"),
              row("functorch-user", "1.52", "5"), row("opacus", "3.00", "5"), row("ghost_measured", "1.26", "9")]
    line = " ".join(repeat_line(first, second, Path("results/bench/repeat/cpu.csv")).split())
    assert "ghost (8 to 9 rounds each), 2 ratios within 10% (largest: ViT, ghost, norm: 1.30x then 1.43x)" in line
    assert "ghost_measured (8 to 9 rounds each), 1 ratios within 5%" in line
    assert "the anchors as users call them (5 rounds each), 1 ratios within 5%" in line
    assert "the exact per-example engines (5 rounds each), 1 ratios within 25% (largest: ViT, opacus, norm: " \
           "4.00x then 3.00x)" in line


def test_the_bench_summary_says_which_targets_ghost_meets_and_the_plain_steps_of_both_runs():
    from adabatch_bench.summary import plain_steps, targets_line
    def row(model, engine, test, ratio, memory="1.00", ms="50.0"):
        return {"model": model, "batch_size": "128", "engine": engine, "test": test, "time_ratio": ratio,
                "memory_ratio": memory, "time_ms": ms}
    rows = [row("cnn", "plain", "", "1.00", ms="45.44"), row("vit", "plain", "", "1.00", ms="673.0"),
            row("cnn", "ghost", "norm", "1.20", "1.05"), row("vit", "ghost", "norm", "1.26", "1.21"),
            row("vit", "ghost", "coordinate_norm", "1.59"), row("vit", "functorch-user", "norm", "1.10", "3.00")]
    line = targets_line(rows)
    assert line == ("ghost's worst ratios against the targets, met: coordinate-wise 1.59x (ViT; target 1.6x); not met: "
                    "norm 1.26x (ViT; target 1.2x), memory 1.21x (ViT; target 1.2x).")
    rows[3].update(time_ratio="1.20", memory_ratio="1.20")
    assert "not met: none." in targets_line(rows) and "norm 1.20x (CNN; target 1.2x)" in targets_line(rows)
    second = [{**r, "time_ms": str(float(r["time_ms"]) * 2)} for r in rows]
    assert plain_steps(rows, second) == "The plain steps, first run then second: CNN 45.4 then 90.9 ms; ViT 673 then 1346 ms."


@pytest.mark.subprocess
def test_the_ranks_bench_times_local_tested_steps_against_plain_ddp_steps_on_two_ranks(tmp_path):
    """`python -m adabatch_bench.ranks` under torchrun (2 ranks, gloo): a row per experiment, its tested
    step's parts (one per rank) and a ratio inside its per-round range."""
    result = subprocess.run(
        [sys.executable, "-m", "adabatch_bench.ranks", "--experiments", "quickstart", "--size", "32", "--steps", "1",
         "--min-rounds", "2", "--max-seconds", "0", "--out", tmp_path],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.fullmatch(r"engine=local on 2 ranks, quickstart b=32: \d\.\d{3}x plain DDP\n", result.stdout)
    with open(tmp_path / "ranks_cpu.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["experiment"], row["ranks"], row["batch_size"], row["parts"], row["rounds"]) == ("quickstart", "2", "32", "2", "2")
    low, high = map(float, row["ratio_range"].split("-"))
    assert low <= round(float(row["time_ratio"]), 2) <= high and float(row["plain_ms"]) > 0
    assert "| quickstart |" in (tmp_path / "ranks_cpu.md").read_text()


def test_the_ranks_bench_refuses_the_gpt_row_without_its_text_in_one_line(tmp_path):
    from adabatch_bench.ranks import main

    assert main(["--experiments", "kjv_gpt", "--data-dir", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
