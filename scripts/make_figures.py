"""Figures and tables from finished runs' records (never trains).

    python scripts/make_figures.py RUNS_PATH [RUNS_PATH ...] --out OUT_DIR [--title TITLE]

A RUNS_PATH is a run directory, a directory of runs or a Hydra multirun directory; every directory
under it holding config.yaml and summary.json is a run. Writes OUT_DIR/<experiment>/{table.csv,
table.md, frontier.csv, frontier.md, curves_samples.png, curves_steps.png, curves_wallclock.png,
frontier.png, test_statistic.png} and OUT_DIR/index.md, printing each path written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from adabatch.analysis import group_runs, load_runs, write_report  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, metavar="RUNS_PATH", help="run, runs or multirun directory")
    parser.add_argument("--out", required=True, type=Path, metavar="OUT_DIR", help="where figures and tables go")
    parser.add_argument("--title", help="heads index.md and prefixes every figure title")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        runs = load_runs(args.paths)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for run in runs:
        if not run.completed:
            print(f"warning: not averaging incomplete run {run.path} (status: {run.summary.get('status')})",
                  file=sys.stderr)
    if not any(run.completed for run in runs):
        print(f"error: no completed runs found under {', '.join(map(str, args.paths))}", file=sys.stderr)
        return 2
    for path in write_report(group_runs(runs), args.out, args.title):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
