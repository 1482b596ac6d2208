"""The learning-rate study (make reproduce-cpu SUITE=lr_study): choose each method's rate from the grid's
validation accuracy, list the reruns, compare the reruns with the grid's runs at the paper's rate.

    python scripts/choose_lr.py GRID --out results/lr_study/chosen_lr.json     # the choice
    python scripts/choose_lr.py --ids results/lr_study/chosen_lr.json          # the reruns' run ids
    python scripts/choose_lr.py GRID --compare RERUNS --chosen FILE --out-dir results/lr_study
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PAPER_LR = "0.008"  # fashion_logistic's AdaGrad rate, 8e-3: the grid's runs at it are the comparison's baseline


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("grid", nargs="?", type=Path, help="the grid's runs: <method id>/lr_<rate>/seed<k>")
    parser.add_argument("--out", type=Path, help="write the chosen rates here (JSON)")
    parser.add_argument("--ids", type=Path, metavar="CHOSEN", help="print the reruns' run ids of a chosen-rates file")
    parser.add_argument("--compare", type=Path, metavar="RERUNS", help="the reruns at the chosen rates")
    parser.add_argument("--chosen", type=Path, help="the chosen-rates file (with --compare)")
    parser.add_argument("--out-dir", type=Path, help="where --compare writes comparison.md and comparison.png")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.ids is not None:  # read by make at every start: json alone, no torch
        if args.ids.is_file():
            for method, entry in json.loads(args.ids.read_text())["methods"].items():
                print(f"{method}/lr_{entry['lr']}")
        return 0
    if args.grid is None or not args.grid.is_dir():
        print(f"error: the grid's runs directory {args.grid} does not exist; run make reproduce-cpu SUITE=lr_study",
              file=sys.stderr)
        return 2
    from adabatch.analysis.lr_choice import choose_rates

    if args.compare is not None:
        from adabatch.analysis.lr_comparison import write_comparison

        for path in write_comparison(args.grid, args.compare, json.loads(args.chosen.read_text()), PAPER_LR,
                                     args.out_dir):
            print(path)
        return 0
    try:
        chosen = choose_rates(args.grid)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(chosen, indent=2) + "\n")
    for method, entry in chosen["methods"].items():
        print(f"{method}: lr {entry['lr']} (validation accuracy {entry['mean_validation_acc'][entry['lr']]:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
