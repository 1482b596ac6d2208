"""Figures and tables from run records: find runs, group them into methods, write one figure set
and two tables (the summary, and the steps-accuracy frontier) per experiment, and an index linking
them all."""
from __future__ import annotations

from pathlib import Path

from .figures import write_figures
from .runs import Experiment, Method, Run, find_run_dirs, group_runs, load_runs
from .tables import write_frontier_tables, write_index, write_tables

__all__ = [
    "Experiment", "Method", "Run", "find_run_dirs", "group_runs", "load_runs", "write_report",
]


def write_report(experiments: list[Experiment], out_dir: Path, title: str | None = None) -> list[Path]:
    """Tables and figures of each experiment with a completed run under out_dir/<slug>/, then
    out_dir/index.md; returns every path written. `title` heads the index and prefixes figure titles."""
    outputs: dict[str, list[Path]] = {}
    for experiment in experiments:
        if not any(method.completed for method in experiment.methods):
            continue
        target = out_dir / experiment.slug
        outputs[experiment.name] = [
            *write_tables(experiment, target),
            *write_frontier_tables(experiment, target),
            *write_figures(experiment, target, f"{title} — {experiment.name}" if title else experiment.name),
        ]
    index = write_index(title or "Results", outputs, out_dir)
    return [path for paths in outputs.values() for path in paths] + [index]
