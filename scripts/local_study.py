"""The decision-quality table and figure of engine=local (issue 34): the norm test from M parts against
the per-example norm test on the same configuration, from finished runs' records (never trains).

    python scripts/local_study.py RUNS_PATH --out OUT_DIR

Every completed run under RUNS_PATH is grouped by its statistics' source (per-example, or parts with its
batch_size.parts); runs must share one experiment. Writes OUT_DIR/local_study.md (a row per source:
seeds, steps, final test accuracy (a language model's: perplexity) and loss, mean and final batch size,
and how far the batch sizes were from the per-example run of the same seed: the mean |log2(b_local /
b_exact)| over the exact run's steps, at equal samples) and OUT_DIR/local_study.png (batch size against
samples, one panel per M, the per-example seeds in grey). `make local-study` runs the suite and then this.
"""
from __future__ import annotations

import argparse
import bisect
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


def log2_gap(run, exact) -> float:
    """Mean |log2(b_run / b_exact)| over the exact run's steps, each compared at the same samples."""
    starts, sizes = trajectory(run)
    exact_starts, exact_sizes = trajectory(exact)
    return statistics.fmean(abs(math.log2(size_at(starts, sizes, s) / b)) for s, b in zip(exact_starts, exact_sizes))


def mean_sd(values: list[float], digits: int) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {sd:.{digits}f}"


def table(groups: dict[str, list]) -> str:
    exact = {run.seed: run for run in groups.get(EXACT, [])}
    every_run = [run for runs in groups.values() for run in runs]
    metric = "acc" if all("final_test_acc" in run.summary for run in every_run) else "perplexity"  # a language model's
    lines = [f"| statistics | seeds | parts per tested step | steps | final test {metric} | final test loss | mean batch size "
             "| final batch size | batch size gap to per-example (mean abs log2) |", "|---|---|---|---|---|---|---|---|---|"]
    for source, runs in groups.items():
        parts = sorted({r["parts"] for run in runs for r in run.train_records if "parts" in r})
        gaps = [log2_gap(run, exact[run.seed]) for run in runs if run.seed in exact]
        lines.append(" | ".join([
            f"| {source}", str(len(runs)), f"{parts[0]}-{parts[-1]}" if parts else "-",
            mean_sd([run.summary["steps"] for run in runs], 1),
            mean_sd([run.summary[f"final_test_{metric}"] for run in runs], 4),
            mean_sd([run.summary["final_test_loss"] for run in runs], 4),
            mean_sd([run.summary["mean_batch_size"] for run in runs], 0),
            mean_sd([run.summary["final_batch_size"] for run in runs], 0),
            mean_sd(gaps, 3) if gaps else "-",
        ]) + " |")
    return "\n".join(lines) + "\n"


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
    (args.out / "local_study.md").write_text(table(groups))
    figure(groups, args.out / "local_study.png")
    print(args.out / "local_study.md")
    print(args.out / "local_study.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
