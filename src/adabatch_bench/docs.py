"""The generated blocks of README.md and docs/: numbers quoted from the committed tables, never typed.

    .venv/bin/python -m adabatch_bench.docs            # rewrite every block from results/ (make bench, make figures)
    .venv/bin/python -m adabatch_bench.docs --check    # exit 1 naming each block that is not its tables'

A block sits between `<!-- generated: NAME ... -->` and `<!-- /generated: NAME -->`; everything else in
the file is prose and is left alone. The blocks:

- README.md `results-cpu`: per CPU experiment, its own methods (the plan most of its methods share;
  the frontier's extra points stay in frontier.md) with steps, mean batch size and final test accuracy
  from results/cpu/<experiment>/table.csv.
- README.md `bench-brief`: ghost's worst time and memory ratios per test, from results/bench/cpu.csv.
- docs/benchmarks.md `bench-summary`: the whole bench summary of `summary.block`, with the second run of
  results/bench/repeat/ when there is one.
"""
from __future__ import annotations

import argparse
import csv
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from adabatch.analysis import group_runs, load_runs
from adabatch.analysis.figures import is_tested, row_methods
from adabatch_bench import ROOT
from adabatch_bench import summary as bench

CPU_RESULTS = Path("results/cpu")
BENCH_CSV = Path("results/bench/cpu.csv")


@dataclass(frozen=True)
class Block:
    file: Path  # relative to ROOT
    name: str
    source: str  # what it is generated from, named in its first marker line
    text: Callable[[], str]

    def begin(self) -> str:
        return f"<!-- generated: {self.name} from {self.source} by `python -m adabatch_bench.docs`; do not edit -->"

    def end(self) -> str:
        return f"<!-- /generated: {self.name} -->"

    def render(self) -> str:
        return "\n".join([self.begin(), "", self.text(), "", self.end()])


def percent(fraction: str, spread: str) -> str:
    return f"{100 * float(fraction):.2f} ± {100 * float(spread):.2f}" if spread else f"{100 * float(fraction):.2f}"


def count(value: str) -> str:
    return f"{float(value):,.0f}"


def results_table(experiment_dir: Path, labels: list[str]) -> str:
    """The experiment's own methods' rows of its table.csv, in the table's order."""
    with open(experiment_dir / "table.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["method"] in labels]
    lines = ["| method | seeds | optimizer steps | mean batch size | final test accuracy (%) |", "|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['seeds']} | {count(r['steps_mean'])} | {count(r['mean_batch_size_mean'])} | "
              f"{percent(r['final_test_acc_mean'], r['final_test_acc_std'])} |" for r in rows]
    return "\n".join(lines)


def best_of(experiment_dir: Path, labels: list[str]) -> str:
    """The row of table.csv with the best mean final test accuracy among `labels`, as a phrase."""
    with open(experiment_dir / "table.csv", newline="") as f:
        best = max((r for r in csv.DictReader(f) if r["method"] in labels), key=lambda r: float(r["final_test_acc_mean"]))
    return f"{best['method']}, {100 * float(best['final_test_acc_mean']):.2f}% in {count(best['steps_mean'])} steps"


def results_cpu() -> str:
    """Each experiment's own methods, then the best tested and the best constant-batch method of all its
    methods (frontier points included): whether an adaptive test matches a constant batch."""
    experiments = group_runs(load_runs([ROOT / CPU_RESULTS / "runs"]))
    parts = []
    for experiment in sorted(experiments, key=lambda e: e.slug, reverse=True):
        own = row_methods(experiment)
        left_out = len(experiment.methods) - len(own)
        folder = CPU_RESULTS / experiment.slug
        tested = [m.label for m in experiment.methods if is_tested(m)]
        constant = [m.label for m in experiment.methods if m.config["batch_size"]["name"] == "constant"]
        best = (f"Best final accuracy of all {len(experiment.methods)} methods, frontier included: with a test, "
                f"{best_of(ROOT / folder, tested)}; with a constant batch, {best_of(ROOT / folder, constant)}.")
        parts += [f"**`{experiment.name}`** (`{folder.as_posix()}/`; {left_out} more methods, frontier points "
                  f"and other tests, in `frontier.md`):", "", results_table(ROOT / folder, [m.label for m in own]), "",
                  textwrap.fill(best, 105), ""]
    return "\n".join(parts[:-1])


def bench_brief() -> str:
    rows = bench.read_rows(ROOT / BENCH_CSV)
    said = (f"Ghost's worst ratios to a plain step over the CNN, ResNet-18 and the ViT at b = {bench.SIZE}, on "
            f"{bench.machine((ROOT / BENCH_CSV).with_suffix('.md'))} (`{BENCH_CSV.with_suffix('.md').as_posix()}`):")
    lines = [textwrap.fill(said, 105), "", "| test | time | peak memory |", "|---|---|---|"]
    for test, label in bench.TEST_NAMES.items():
        worst = bench.slowest(rows, "ghost", test)
        if worst is None:
            continue
        memory = max((r for r in rows if (r["engine"], r["test"]) == ("ghost", test)),
                     key=lambda r: float(r["memory_ratio"] or 0))
        lines.append(f"| {label} | {worst['time_ratio']}x ({bench.model_name(worst['model'])}) | "
                     f"{memory['memory_ratio']}x ({bench.model_name(memory['model'])}) |")
    return "\n".join(lines)


def bench_summary() -> str:
    return bench.block(BENCH_CSV)


BLOCKS = (
    Block(Path("README.md"), "results-cpu", "results/cpu/*/table.csv", results_cpu),
    Block(Path("README.md"), "bench-brief", BENCH_CSV.as_posix(), bench_brief),
    Block(Path("docs/benchmarks.md"), "bench-summary", BENCH_CSV.as_posix(), bench_summary),
)


def replace(text: str, block: Block) -> str:
    start, end = text.find(block.begin()), text.find(block.end())
    if start < 0 or end < start:
        raise SystemExit(f"error: {block.file} has no block from {block.begin()!r} to {block.end()!r}; "
                         f"add the two lines where it belongs")
    return text[:start] + block.render() + text[end + len(block.end()):]


def updated_files() -> dict[Path, tuple[str, str]]:
    """file -> (as it is, with every block regenerated)."""
    files: dict[Path, tuple[str, str]] = {}
    for block in BLOCKS:
        path = ROOT / block.file
        old, new = files.get(path, (path.read_text(), path.read_text()))
        files[path] = (old, replace(new, block))
    return files


def stale_blocks() -> list[str]:
    """`file: name` of each block whose text differs from what its tables give."""
    stale = []
    for block in BLOCKS:
        text = (ROOT / block.file).read_text()
        if replace(text, block) != text:
            stale.append(f"{block.file}: {block.name}")
    return stale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if a block differs from its tables; write nothing")
    args = parser.parse_args()
    if args.check:
        stale = stale_blocks()
        if stale:
            raise SystemExit(f"not the committed tables' numbers: {', '.join(stale)}; run python -m adabatch_bench.docs")
        return
    for path, (old, new) in updated_files().items():
        if new != old:
            path.write_text(new)
            print(f"{path.relative_to(ROOT)}: generated blocks rewritten")


if __name__ == "__main__":
    main()
