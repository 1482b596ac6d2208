"""The learning-rate study's comparison: each method at its chosen rate (the reruns, on seeds the choice
never saw) beside the same method at the paper's rate (the grid's runs at it), on the same 55000/5000
split: a table (comparison.md) and the steps-accuracy figure (comparison.png)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from .lr_choice import grid_point
from .runs import Run, load_runs


def by_method(root: Path) -> dict[tuple[str, str], list[Run]]:
    grouped: dict[tuple[str, str], list[Run]] = {}
    for run in load_runs([root]):
        point = grid_point(run, root)
        grouped.setdefault((point.method, point.lr), []).append(run)
    return grouped


def mean_of(runs: list[Run], key: str) -> float:
    values = [float(run.summary[key]) for run in runs if run.completed and run.summary.get(key) is not None]
    return float(np.mean(values)) if values else float("nan")


def cells(runs: list[Run]) -> list[str]:
    done = [run for run in runs if run.completed]
    return [f"{len(done)}/{len(runs)}", f"{mean_of(runs, 'steps'):,.0f}", f"{100 * mean_of(runs, 'final_validation_acc'):.2f}",
            f"{100 * mean_of(runs, 'final_test_acc'):.2f}"]


def write_comparison(grid: Path, reruns: Path, chosen: dict[str, Any], paper_lr: str, out_dir: Path) -> list[Path]:
    grid_runs, rerun_runs = by_method(grid), by_method(reruns)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, points = [], []
    for method, entry in chosen["methods"].items():
        label = rerun_runs.get((method, entry["lr"]), [None])[0]
        name = label.config.get("method") if label else method
        paper, tuned = grid_runs.get((method, paper_lr), []), rerun_runs.get((method, entry["lr"]), [])
        rows.append(f"| {name} (`{method}`) | {paper_lr} | " + " | ".join(cells(paper)) + f" | {entry['lr']} | "
                    + " | ".join(cells(tuned)) + " |")
        points.append((name, mean_of(paper, "steps"), 100 * mean_of(paper, "final_test_acc"),
                       mean_of(tuned, "steps"), 100 * mean_of(tuned, "final_test_acc")))
    table = out_dir / "comparison.md"
    table.write_text(
        "# fashion_logistic: the paper's rate against the rate chosen on held-out data\n\n"
        "Every run trains on the same 55000 training examples; 5000 are held out (`dataset.validation=5000`). "
        f"Each method's rate is the one of the grid with the best mean final validation accuracy "
        f"(`chosen_lr.json`; the test split is not read). Left: the grid's runs at lr = {paper_lr} (the paper's); "
        "right: the reruns at the chosen rate, on seeds the choice never saw. Seeds: completed/all; steps and "
        "accuracies (%) are means over the completed seeds.\n\n"
        "| method | lr | seeds | steps | final validation acc | final test acc | chosen lr | seeds | steps | "
        "final validation acc | final test acc |\n|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    figure = out_dir / "comparison.png"
    fig, ax = plt.subplots(figsize=(8, 5))
    for index, (name, paper_steps, paper_acc, tuned_steps, tuned_acc) in enumerate(points):
        color = f"C{index}"
        ax.scatter([paper_steps], [paper_acc], marker="o", facecolors="none", edgecolors=color)
        ax.scatter([tuned_steps], [tuned_acc], marker="o", color=color, label=name)
        ax.annotate("", xy=(tuned_steps, tuned_acc), xytext=(paper_steps, paper_acc),
                    arrowprops={"arrowstyle": "->", "color": color, "alpha": 0.6})
    ax.set_xscale("log")
    ax.set_xlabel("optimizer steps")
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title(f"fashion_logistic: lr {paper_lr} (hollow) -> chosen on validation (filled)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(figure, dpi=120)
    plt.close(fig)
    return [table, figure]
