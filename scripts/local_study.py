"""The decision-quality table and figure of engine=local (issue 34): the norm test from M parts against
the per-example norm test on the same configuration, from finished runs' records (never trains).

    python scripts/local_study.py RUNS_PATH --out OUT_DIR

Every completed run under RUNS_PATH is grouped by its statistics' source (per-example, or parts with its
batch_size.parts); runs must share one experiment. Writes OUT_DIR/local_study.md (a row per source:
seeds, steps, final test accuracy (a language model's: perplexity) and loss, mean and final batch size,
and how far the batch sizes were from the per-example run of the same seed: the mean |log2(b_local /
b_exact)| over the exact run's steps, at equal samples) and OUT_DIR/local_study.png (batch size against
samples, one panel per M, the per-example seeds in grey), and the table's numbers unrounded in
OUT_DIR/local_study.csv. `make local-study` runs the suite and then this.
"""
from __future__ import annotations

import argparse
import bisect
import csv
import math
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from adabatch.analysis import load_runs  # noqa: E402

EXACT = "per-example"


def source_of(run) -> str:
    batch_size = run.config["batch_size"]
    return f"parts, M >= {batch_size.get('parts', 2)}" if batch_size.get("engine") == "local" else EXACT


def trajectory(run) -> tuple[list[int], list[int]]:
    """(samples before each step, its batch size)."""
    starts, sizes = [], []
    for record in run.train_records:
        starts.append(record["samples"] - record["batch_size"])
        sizes.append(record["batch_size"])
    return starts, sizes


def size_at(starts: list[int], sizes: list[int], samples: int) -> int:
    return sizes[max(0, bisect.bisect_right(starts, samples) - 1)]


def log2_gaps(run, exact) -> list[tuple[float, bool]]:
    """At each of the exact run's steps, compared at the same samples: (|log2(b_run / b_exact)|, whether
    both runs were at the largest size either reached, where a test has nothing left to decide)."""
    starts, sizes = trajectory(run)
    exact_starts, exact_sizes = trajectory(exact)
    cap = max(*sizes, *exact_sizes)
    found = []
    for s, b in zip(exact_starts, exact_sizes):
        size = size_at(starts, sizes, s)
        found.append((abs(math.log2(size / b)), size == b == cap))
    return found


def log2_gap(run, exact) -> float:
    """Mean |log2(b_run / b_exact)| over the exact run's steps."""
    return statistics.fmean(gap for gap, _ in log2_gaps(run, exact))


def growing_log2_gap(run, exact) -> float:
    """The same over the steps before both runs reached the largest size: the steps the test decided."""
    return statistics.fmean([gap for gap, capped in log2_gaps(run, exact) if not capped] or [0.0])


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


# (column of the table, of the CSV, a summary key or a gap function of (run, exact run), digits)
COLUMNS = [("steps", "steps", "steps", 1), ("final test {metric}", "final_test_{metric}", "final_test_{metric}", 4),
           ("final test loss", "final_test_loss", "final_test_loss", 4),
           ("mean batch size", "mean_batch_size", "mean_batch_size", 0),
           ("final batch size", "final_batch_size", "final_batch_size", 0),
           ("batch size gap to per-example (mean abs log2)", "log2_gap", log2_gap, 3),
           ("the same, before both reach the largest size", "growing_log2_gap", growing_log2_gap, 3)]


def study_rows(groups: dict[str, list]) -> tuple[str, list[dict]]:
    """The task's metric (acc, or a language model's perplexity) and a row per statistics source: its
    seeds, the parts its tested steps had, and the mean and standard deviation over seeds of each column."""
    exact = {run.seed: run for run in groups.get(EXACT, [])}
    every_run = [run for runs in groups.values() for run in runs]
    metric = "acc" if all("final_test_acc" in run.summary for run in every_run) else "perplexity"
    rows = []
    for source, runs in groups.items():
        parts = sorted({r["parts"] for run in runs for r in run.train_records if "parts" in r})
        row = {"statistics": source, "seeds": len(runs), "parts": f"{parts[0]}-{parts[-1]}" if parts else "-"}
        for _, name, key, _ in COLUMNS:
            name = name.format(metric=metric)
            values = ([key(run, exact[run.seed]) for run in runs if run.seed in exact] if callable(key)
                      else [run.summary[key.format(metric=metric)] for run in runs])
            row[f"{name}_mean"], row[f"{name}_std"] = mean_sd(values) if values else ("", "")
        rows.append(row)
    return metric, rows


def table(metric: str, rows: list[dict]) -> str:
    header = ["statistics", "seeds", "parts per tested step", *(title.format(metric=metric) for title, *_ in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["statistics"], str(row["seeds"]), row["parts"]]
        for _, name, _, digits in COLUMNS:
            name = name.format(metric=metric)
            mean, sd = row[f"{name}_mean"], row[f"{name}_std"]
            cells.append(f"{mean:.{digits}f} ± {sd:.{digits}f}" if mean != "" else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def figure(groups: dict[str, list], path: Path) -> None:
    local = [source for source in groups if source != EXACT]
    fig, axes = plt.subplots(1, max(1, len(local)), figsize=(4 * max(1, len(local)), 3.2), sharey=True, squeeze=False)
    for ax, source in zip(axes[0], local or [EXACT]):
        for run in groups.get(EXACT, []):
            ax.step(*trajectory(run), where="post", color="0.6", lw=1, label=f"{EXACT}" if run is groups[EXACT][0] else None)
        for run in groups[source] if source != EXACT else []:
            ax.step(*trajectory(run), where="post", lw=1, label=f"seed {run.seed}")
        ax.set(title=source, xlabel="samples", xscale="log", yscale="log")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("batch size")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, metavar="RUNS_PATH")
    parser.add_argument("--out", required=True, type=Path, metavar="OUT_DIR")
    args = parser.parse_args(argv)
    try:
        runs = [run for run in load_runs(args.paths) if run.completed]
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    experiments = {run.config.get("experiment_name") for run in runs}
    if len(experiments) != 1:
        print(f"error: the runs under {', '.join(map(str, args.paths))} belong to {len(experiments)} experiments "
              f"({', '.join(map(str, sorted(experiments, key=str)))}); pass the runs of one", file=sys.stderr)
        return 2
    groups: dict[str, list] = {}
    for run in sorted(runs, key=lambda run: (source_of(run) != EXACT, run.config["batch_size"].get("parts", 2), run.seed)):
        groups.setdefault(source_of(run), []).append(run)
    args.out.mkdir(parents=True, exist_ok=True)
    metric, rows = study_rows(groups)
    (args.out / "local_study.md").write_text(table(metric, rows))
    write_csv(rows, args.out / "local_study.csv")
    figure(groups, args.out / "local_study.png")
    for name in ("local_study.md", "local_study.csv", "local_study.png"):
        print(args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
