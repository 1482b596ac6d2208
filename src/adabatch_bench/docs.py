"""The generated blocks of README.md and docs/: numbers quoted from the committed tables, never typed.

    .venv/bin/python -m adabatch_bench.docs            # rewrite every block from results/ (make bench, make figures)
    .venv/bin/python -m adabatch_bench.docs --check    # exit 1 naming each block that is not its tables'

A block sits between `<!-- generated: NAME ... -->` and `<!-- /generated: NAME -->`; everything else in
the file is prose and is left alone. The blocks:

- README.md `results-cpu`: per CPU experiment, its own methods (the plan most of its methods share;
  the frontier's extra points stay in frontier.md) with steps, mean batch size and final test accuracy
  from results/cpu/<experiment>/table.csv, or for a small stand-in (STAND_INS) only its best methods
  until its full-scale row has records; and what each suite's runs took (their summaries' wall-clock).
- README.md `bench-brief`: ghost's worst time and memory ratios per test, from results/bench/cpu.csv.
- README.md `engine-choice`: engine=local against the per-example test in one sentence over the
  experiments of results/local_study/, and its tested step's cost on 2 ranks from results/bench/ranks_cpu.csv;
  docs/local-gradients.md `local-study`: a sentence per experiment, with its final metrics.
- docs/benchmarks.md `bench-summary`: the whole bench summary of `summary.block`, with the second run of
  results/bench/repeat/ when there is one; `bench-gpt`: the GPT's rows of both runs, every engine and test.
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
from adabatch.analysis.headline import ACCURACY, Headline
from adabatch_bench import ROOT
from adabatch_bench import ranks
from adabatch_bench import summary as bench

CPU_RESULTS = Path("results/cpu")
BENCH_CSV = Path("results/bench/cpu.csv")
LOCAL_STUDY = Path("results/local_study")
LR_STUDY = Path("results/lr_study")
LR_STUDY_OF = "fashion_logistic"  # the experiment whose methods the learning-rate study tunes
# Small stand-ins for a paper row that also runs at full scale (stand-in: (full-scale row, what it is)): the
# README gives one a sentence, not a table, and nothing once its full-scale row has records.
STAND_INS = {"cpu_digits_cnn": ("fashion_cnn", "the CNN row's stand-in on the 8×8 digits")}
RANKS_CSV = Path("results/bench/ranks_cpu.csv")


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


def headline_cell(headline: Headline, mean: str, spread: str) -> str:
    """A mean final value ± its spread over seeds in the headline's units (percent for accuracy)."""
    if headline.scale == 100:
        return percent(mean, spread)
    return f"{float(mean):.3f} ± {float(spread):.3f}" if spread else f"{float(mean):.3f}"


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def results_table(experiment_dir: Path, labels: list[str], headline: Headline) -> str:
    """The experiment's own methods' rows of its table.csv, in the table's order."""
    rows = [row for row in read_csv(experiment_dir / "table.csv") if row["method"] in labels]
    final = headline.final_key
    title = f"final {headline.label}" + (" (%)" if headline.scale == 100 else "")
    lines = [f"| method | seeds | optimizer steps | mean batch size | {title} |", "|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['seeds']} | {count(r['steps_mean'])} | {count(r['mean_batch_size_mean'])} | "
              f"{headline_cell(headline, r[f'{final}_mean'], r[f'{final}_std'])} |" for r in rows]
    return "\n".join(lines)


def best_of(experiment_dir: Path, labels: list[str], headline: Headline) -> str:
    """The row of table.csv with the best mean final headline value among `labels`, as a phrase."""
    rows = [r for r in read_csv(experiment_dir / "table.csv") if r["method"] in labels]
    value = lambda r: float(r[f"{headline.final_key}_mean"])  # noqa: E731
    best = next(r for r in rows if value(r) == headline.best([value(r) for r in rows]))
    shown = f"{100 * value(best):.2f}%" if headline.scale == 100 else f"{value(best):.3f}"
    return f"{best['method']}, {shown} in {count(best['steps_mean'])} steps"


def results_cpu() -> str:
    """Each experiment's own methods, then the best tested and the best constant-batch method of all its
    methods (frontier points included): whether an adaptive test matches a constant batch. The
    classification experiments first, then the language models."""
    experiments = sorted(group_runs(load_runs([ROOT / CPU_RESULTS / "runs"])), key=lambda e: e.slug, reverse=True)
    parts = []
    for experiment in sorted(experiments, key=lambda e: e.headline != ACCURACY):
        own = row_methods(experiment)
        left_out = len(experiment.methods) - len(own)
        folder, headline = CPU_RESULTS / experiment.slug, experiment.headline
        tested = [m.label for m in experiment.methods if is_tested(m)]
        constant = [m.label for m in experiment.methods if m.config["batch_size"]["name"] == "constant"]
        best = (f"Best final {headline.label.removeprefix('test ')} of all {len(experiment.methods)} methods"
                + (", frontier included" if left_out else "") + f": with a test, {best_of(ROOT / folder, tested, headline)}; "
                f"with a constant batch, {best_of(ROOT / folder, constant, headline)}.")
        runs = [run for method in experiment.methods for run in method.runs]
        if experiment.name in STAND_INS:
            full_scale, what = STAND_INS[experiment.name]
            if full_scale not in {e.name for e in experiments}:
                brief = f"**`{experiment.name}`**, {what} (`{folder.as_posix()}/table.md`; {suite_time(runs)}). {best}"
                parts += [textwrap.fill(brief, 105), ""]
            continue
        more = f"; {left_out} more methods, frontier points and other tests, in `frontier.md`" if left_out else ""
        study = lr_study_time() if experiment.name == LR_STUDY_OF else ""
        parts += [f"**`{experiment.name}`** (`{folder.as_posix()}/`{more}; {suite_time(runs)}{study}):", "",
                  results_table(ROOT / folder, [m.label for m in own], headline), ""]
        if left_out:  # else the table above has every method
            parts += [textwrap.fill(best, 105), ""]
    return "\n".join(parts[:-1])


def suite_time(runs: list) -> str:
    """How long the runs took: their own wall-clock (evaluations included), summed, on one core."""
    seconds = sum(run.summary["wall_time_s"] for run in runs)
    return f"{len(runs)} runs, " + (f"{seconds / 3600:.1f} hours" if seconds >= 3600 else f"{seconds / 60:.0f} minutes")


def lr_study_time() -> str:
    runs = [run for experiment in group_runs(load_runs([ROOT / LR_STUDY / "runs"]))
            for method in experiment.methods for run in method.runs]
    return f"; its learning-rate study (`SUITE=lr_study`, `{LR_STUDY.as_posix()}/`): {suite_time(runs)}"


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


def span(rows: list[dict], key: str, show: Callable[[float], str]) -> str:
    """The smallest and the largest of rows[*][key], shown; one value where they show the same."""
    values = sorted(float(row[key]) for row in rows)
    return "-".join(dict.fromkeys((show(values[0]), show(values[-1]))))


def study_csvs() -> list[Path]:
    return sorted((ROOT / LOCAL_STUDY).glob("*/local_study.csv"))


def study_rows(study_csv: Path) -> tuple[dict, list[dict]]:
    """One experiment's local study: the per-example run's row, then one row per M of the parts'."""
    exact, *local = read_csv(study_csv)
    return exact, local


def least_parts(row: dict) -> str:
    return row["statistics"].split()[-1]  # "parts, M >= 4" -> "4"


def steps(rows: list[dict]) -> str:
    return span(rows, "steps_mean", lambda v: f"{v:,.0f}")


def factor(local: list[dict]) -> str:
    return span(local, "growing_log2_gap_mean", lambda v: f"{2 ** v:.2f}")


def study_phrase(study_csv: Path) -> str:
    """One experiment's local study in a sentence: the per-example run, then the range over the M of the parts'."""
    exact, local = study_rows(study_csv)
    if "final_test_acc_mean" in exact:
        metric, name, shown = "final_test_acc_mean", "accuracy", lambda v: f"{100 * v:.2f}%"
    else:
        metric, name, shown = "final_test_perplexity_mean", "perplexity", lambda v: f"{v:.2f}"
    parts = [least_parts(row) for row in local]
    return (f"`{study_csv.parent.name}` ({exact['seeds']} seeds): per-example {steps([exact])} steps, "
            f"final test {name} {shown(float(exact[metric]))}; from M ≥ {parts[0]} to {parts[-1]} parts "
            f"{steps(local)} steps, {span(local, metric, shown)}, batch sizes a factor {factor(local)} from the "
            "per-example run's until both reach b_max (geometric mean).")


def local_study() -> str:
    return "\n\n".join(textwrap.fill(study_phrase(path), 105) for path in study_csvs())


def engine_choice() -> str:
    """engine=local's decisions against the per-example test's (results/local_study/*/local_study.csv), all
    experiments in one sentence, and its cost on 2 ranks (results/bench/ranks_cpu.csv, with the repeat's
    ratios where there is one)."""
    studies = {path.parent.name: study_rows(path) for path in study_csvs()}
    said = []
    if studies:
        parts = sorted({least_parts(row) for _, local in studies.values() for row in local}, key=int)
        seeds = sorted({exact["seeds"] for exact, _ in studies.values()})
        runs = " and ".join(f"{steps(local)} steps to the per-example test's {steps([exact])} on `{name}`"
                            for name, (exact, local) in studies.items())
        factors = " and ".join(factor(local) for _, local in studies.values())
        said.append(f"From M ≥ {parts[0]} to {parts[-1]} parts ({'/'.join(seeds)} seeds), it takes {runs}, its batch "
                    f"sizes a factor {factors} from the exact test's until both reach b_max (geometric mean).")
    if (ROOT / RANKS_CSV).exists():
        rows = read_csv(ROOT / RANKS_CSV)
        repeat_csv = ROOT / RANKS_CSV.parent / "repeat" / RANKS_CSV.name
        again = {r["experiment"]: r["time_ratio"] for r in read_csv(repeat_csv)} if repeat_csv.exists() else {}
        costs = " and ".join(
            f"{float(r['time_ratio']):.2f}x" + (f" (repeat {float(again[r['experiment']]):.2f}x)" if r["experiment"] in again
                                               else "")
            + f" for `{r['experiment']}` ({ranks.EXPERIMENTS.get(r['experiment'], r['model'])}, a plain step "
              f"{float(r['plain_ms']):.0f} ms at b = {r['batch_size']})" for r in rows)
        said.append(f"A tested step with `engine=local` on 2 ranks of this project's 2-core CPU costs {costs} as "
                    f"much as a plain DDP step (`{RANKS_CSV.with_suffix('.md').as_posix()}`).")
    return "\n\n".join(textwrap.fill(text, 105) for text in said)


def bench_summary() -> str:
    return bench.block(BENCH_CSV)


def bench_gpt() -> str:
    """The GPT's rows of the bench (results/bench/cpu.csv, and its repeat run): every engine's ratio per test."""
    first = [r for r in read_csv(ROOT / BENCH_CSV) if r["model"] == "gpt"]
    again_csv = ROOT / BENCH_CSV.parent / "repeat" / BENCH_CSV.name
    again = ({(r["engine"], r["test"]): r["time_ratio"] for r in read_csv(again_csv) if r["model"] == "gpt"}
             if again_csv.exists() else {})
    engines = list(dict.fromkeys(r["engine"] for r in first if r["engine"] != "plain"))
    cell = {(r["engine"], r["test"]): r["time_ratio"] for r in first}
    plain = next(r for r in first if r["engine"] == "plain")
    lines = [textwrap.fill(
        f"The GPT of `kjv_gpt` at b = {plain['batch_size']} sequences, a plain step {float(plain['time_ms']):.0f} ms on "
        f"{bench.machine((ROOT / BENCH_CSV).with_suffix('.md'))} (`{BENCH_CSV.with_suffix('.md').as_posix()}`). Each "
        "cell: x plain step" + (", then the repeat run's (`repeat/`)" if again else "") + ":", 105), "",
        "| test | " + " | ".join(engines) + " |", "|---|" + "---|" * len(engines)]
    for test, label in bench.TEST_NAMES.items():
        cells = [f"{cell[(e, test)]}x" + (f" / {again[(e, test)]}x" if (e, test) in again else "")
                 if cell.get((e, test)) else "" for e in engines]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


BLOCKS = (
    Block(Path("README.md"), "results-cpu", f"{CPU_RESULTS.as_posix()}/*/table.csv and the runs' summaries", results_cpu),
    Block(Path("README.md"), "bench-brief", BENCH_CSV.as_posix(), bench_brief),
    Block(Path("docs/benchmarks.md"), "bench-summary", BENCH_CSV.as_posix(), bench_summary),
    Block(Path("docs/benchmarks.md"), "bench-gpt", BENCH_CSV.as_posix(), bench_gpt),
    Block(Path("README.md"), "engine-choice", f"{LOCAL_STUDY.as_posix()}/*/local_study.csv and {RANKS_CSV.as_posix()}",
          engine_choice),
    Block(Path("docs/local-gradients.md"), "local-study", f"{LOCAL_STUDY.as_posix()}/*/local_study.csv", local_study),
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
