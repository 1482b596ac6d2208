"""Pack finished runs for committing: gzip each metrics.jsonl (byte-for-byte reproducible) under the paths.

    python scripts/pack_runs.py RUNS_PATH [RUNS_PATH ...]

A run counts as finished when its directory holds summary.json; runs still going are left alone.
Figures and tables read metrics.jsonl.gz as they read metrics.jsonl.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adabatch.run.records import METRICS_FILE, SUMMARY_FILE, pack_metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, metavar="RUNS_PATH")
    args = parser.parse_args(argv)
    for root in args.paths:
        for metrics in sorted(root.rglob(METRICS_FILE)):
            if (metrics.parent / SUMMARY_FILE).exists():
                print(pack_metrics(metrics.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
