"""The summary of `make bench`, written from the committed table rather than typed.

    .venv/bin/python -m adabatch_bench.summary     # print it from results/bench/cpu.csv
    .venv/bin/python -m adabatch_bench.docs        # write it into docs/benchmarks.md (make bench does)

With a second run of the same command in results/bench/repeat/ (`make bench-repeat`), the summary also
says how far apart the two runs' time ratios are.

Per test, at b = 128: the ghost engine's worst time ratio over the models (and ghost_measured's, where
it ran) and ghost's worst memory ratio, and on each model where the anchors ran, the best anchor "as
users call it" next to ghost's ratio on the same model; then which of the project's targets ghost
meets, in each run, and the plain steps' times in both.
"""
from __future__ import annotations

import argparse
import csv
import re
import textwrap
from pathlib import Path

from adabatch_bench import ROOT
from adabatch_bench.anchors import ANCHORS

SIZE = "128"
TEST_NAMES = {"norm": "norm", "inner_product": "inner product", "augmented_inner_product": "augmented inner product",
              "coordinate_norm": "coordinate-wise"}
MODEL_NAMES = {"cnn": "CNN", "resnet18": "ResNet-18", "vit": "ViT"}
# What this project set itself for ghost at b = 128, worst over the models (issue 18): time ratios per test,
# and peak memory over every test
TARGETS = {"norm": 1.2, "inner_product": 1.4, "augmented_inner_product": 1.4, "coordinate_norm": 1.6}
MEMORY_TARGET = 1.2


def model_name(model: str) -> str:
    return MODEL_NAMES.get(model, model)


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r["batch_size"] == SIZE and r["time_ratio"]]


def machine(table: Path) -> str:
    """What the table's header says it ran on: the CPU or GPU, torch and the thread count."""
    found = re.search(r"` on (.+?, \d+ threads)", table.read_text())
    return found.group(1) if found else f"the machine named in {table.name}"


def summary(rows: list[dict]) -> str:
    """The table and one line on ghost's smallest lead over the best anchor."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    anchors = best_anchors(rows)
    anchor_models = list(dict.fromkeys(model for _, model, _, _ in anchors))
    measured = any(r["engine"] == "ghost_measured" for r in rows)
    lines = [
        f"| test | ghost, worst of {' / '.join(map(model_name, models))} | "
        + ("ghost_measured, worst | " if measured else "") +
        f"ghost memory, worst | best anchor as users call it, {' / '.join(map(model_name, anchor_models))} |",
        "|---|---|---|---|" + ("---|" if measured else ""),
    ]
    for test, label in TEST_NAMES.items():
        worst = slowest(rows, "ghost", test)
        if worst is None:
            continue
        memory = max((r for r in rows if (r["engine"], r["test"]) == ("ghost", test)),
                     key=lambda r: float(r["memory_ratio"] or 0))
        cells = [f"{label}", f"{worst['time_ratio']}x ({model_name(worst['model'])})"]
        if measured:
            timed = slowest(rows, "ghost_measured", test)
            cells.append(f"{timed['time_ratio']}x ({model_name(timed['model'])})" if timed else "")
        leads = [f"{best['engine']} {best['time_ratio']}x (ghost {own['time_ratio']}x)"
                 for t, _, best, own in anchors if t == test]
        cells += [f"{memory['memory_ratio']}x", " / ".join(leads)]
        lines.append("| " + " | ".join(cells) + " |")
    said = verdict(rows)
    return "\n".join([*lines, *(["", textwrap.fill(said, 105)] if said else [])])


def slowest(rows: list[dict], engine: str, test: str) -> dict | None:
    """The engine's row with the largest time ratio on this test, over the models (None where it did not run)."""
    timed = [r for r in rows if (r["engine"], r["test"]) == (engine, test)]
    return max(timed, key=lambda r: float(r["time_ratio"])) if timed else None


def best_anchors(rows: list[dict]) -> list[tuple[str, str, dict, dict]]:
    """(test, model, the fastest anchor's row, ghost's row) wherever both ran."""
    ratio = {(r["model"], r["engine"], r["test"]): r for r in rows}
    found = []
    for test in TEST_NAMES:
        for model in dict.fromkeys(r["model"] for r in rows):
            anchors = [ratio[(model, a, test)] for a in ANCHORS if (model, a, test) in ratio]
            if anchors and (model, "ghost", test) in ratio:
                fastest = min(anchors, key=lambda r: float(r["time_ratio"]))
                found.append((test, model, fastest, ratio[(model, "ghost", test)]))
    return found


def verdict(rows: list[dict]) -> str:
    """Ghost's smallest lead over the best anchor (the anchor's time over ghost's), or where it has none."""
    leads = [(float(best["time_ratio"]) / float(own["time_ratio"]), model_name(model), TEST_NAMES[test])
             for test, model, best, own in best_anchors(rows)]
    if not leads:
        return ""
    lead, model, label = min(leads)
    if lead > 1:
        return (f"Ghost is faster than the best anchor on every row where both ran; its smallest lead is on the "
                f"{model}'s {label} test, where the anchor takes {lead:.2f} times ghost's time.")
    return (f"Ghost is not faster than the best anchor on the {model}'s {label} test: the anchor takes {lead:.2f} "
            f"times ghost's time.")


def targets_line(rows: list[dict]) -> str:
    """Which of TARGETS and MEMORY_TARGET ghost's worst ratios meet."""
    ghost = [r for r in rows if r["engine"] == "ghost"]
    if not ghost:
        return ""
    met, missed = [], []
    for test, target in TARGETS.items():
        worst = slowest(rows, "ghost", test)
        if worst:
            said = f"{TEST_NAMES[test]} {worst['time_ratio']}x ({model_name(worst['model'])}; target {target}x)"
            (met if float(worst["time_ratio"]) <= target else missed).append(said)
    worst = max(ghost, key=lambda r: float(r["memory_ratio"] or 0))
    said = f"memory {worst['memory_ratio']}x ({model_name(worst['model'])}; target {MEMORY_TARGET}x)"
    (met if float(worst["memory_ratio"]) <= MEMORY_TARGET else missed).append(said)
    return (f"ghost's worst ratios against the targets, met: {', '.join(met) or 'none'}; not met: "
            f"{', '.join(missed) or 'none'}.")


def plain_steps(rows: list[dict], repeat: list[dict]) -> str:
    """The plain step's time per model in both runs: ratios move with it when the machine's state does."""
    first = {r["model"]: float(r["time_ms"]) for r in rows if r["engine"] == "plain"}
    second = {r["model"]: float(r["time_ms"]) for r in repeat if r["engine"] == "plain"}
    return ("The plain steps, first run then second: "
            + "; ".join(f"{model_name(m)} {ms(first[m])} then {ms(second[m])} ms" for m in first if m in second) + ".")


def ms(milliseconds: float) -> str:
    return f"{milliseconds:.1f}" if milliseconds < 100 else f"{milliseconds:.0f}"


def repeat_line(rows: list[dict], repeat: list[dict], repeat_path: Path) -> str:
    """How far the second run's time ratios are from the table's: ghost's, ghost_measured's, the
    anchors', the exact per-example engines', each with the rounds its ratios are medians of."""
    first = {(r["model"], r["engine"], r["test"]): r for r in rows if r["engine"] != "plain"}
    second = {(r["model"], r["engine"], r["test"]): r for r in repeat if r["engine"] != "plain"}
    groups = (("ghost", {"ghost"}), ("ghost_measured", {"ghost_measured"}), ("the anchors as users call them", set(ANCHORS)),
              ("the exact per-example engines", {"opacus", "functorch"}))
    parts = []
    for label, member in groups:
        keys = [k for k in first if k in second and k[1] in member]
        if not keys:
            continue
        ratio = lambda run, k: float(run[k]["time_ratio"])  # noqa: E731
        gap, (model, engine, test) = max((abs(ratio(second, k) / ratio(first, k) - 1), k) for k in keys)
        rounds = sorted({int(run[k]["rounds"]) for run in (first, second) for k in keys if run[k].get("rounds")})
        span = f"{rounds[0]}" if len(rounds) == 1 else f"{rounds[0]} to {rounds[-1]}"
        counted = f" ({span} round{'' if rounds == [1] else 's'} each)" if rounds else ""
        parts.append(f"{label}{counted}, {len(keys)} ratios within {gap:.0%} (largest: {model_name(model)}, "
                     f"{engine}, {TEST_NAMES.get(test, test)}: {ratio(first, (model, engine, test)):.2f}x then "
                     f"{ratio(second, (model, engine, test)):.2f}x)")
    if not parts:
        return ""
    return textwrap.fill(f"A second run of the same command (`{repeat_path.as_posix()}`) against this one: "
                         + "; ".join(parts) + ".", 105)


def block(csv_path: Path) -> str:
    ran_on = textwrap.fill(f"Measured on {machine((ROOT / csv_path).with_suffix('.md'))} "
                           f"(`{csv_path.with_suffix('.md').as_posix()}`):", 105)
    rows = read_rows(ROOT / csv_path)
    lines = [ran_on, "", summary(rows)]
    targets = targets_line(rows)
    if targets:
        lines += ["", textwrap.fill(targets[0].upper() + targets[1:], 105)]
    repeat_path = csv_path.parent / "repeat" / csv_path.name
    if (ROOT / repeat_path).exists():
        repeat = read_rows(ROOT / repeat_path)
        lines += ["", repeat_line(rows, repeat, repeat_path), "", textwrap.fill(plain_steps(rows, repeat), 105)]
        second = [verdict(repeat), targets_line(repeat)]
        said = " In it, ".join(line[0].lower() + line[1:] for line in second if line)
        if said:
            lines += ["", textwrap.fill("In the second run, " + said, 105)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=Path("results/bench/cpu.csv"), help="relative to the repository root")
    args = parser.parse_args()
    if not (ROOT / args.csv).exists():
        raise SystemExit(f"error: {args.csv} does not exist; run `make bench` first")
    print(block(args.csv))


if __name__ == "__main__":
    main()
