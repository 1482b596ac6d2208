"""Per-experiment tables (CSV and Markdown, one row per method) and the index of all outputs.

table.*: rows keep the methods' order (first run found first). frontier.*: rows go series by series
(constant batches by b, norm tests by η), with the steps each method took to reach three accuracy
levels. Each number is the mean and sample standard deviation over the method's completed runs;
incomplete runs are counted but not averaged. Both are deterministic: the same records give the same
bytes (no paths, no times, floats written by repr or a fixed format).
"""
from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .aggregate import Stat, seed_stat
from .frontier import FrontierRow, Reach, best_final, frontier_rows, headline_levels
from .headline import ACCURACY, Headline
from .runs import Experiment, Method, Run


@dataclass(frozen=True)
class Column:
    key: str  # summary.json field, or the name of `of_run`'s value; CSV columns <key>_mean and <key>_std
    header: str
    fmt: str
    of_run: Callable[[Run], float | None] | None = None  # a value derived from the run's records
    bounded: Callable[[Run], bool] | None = None  # whether the run's value is only an upper bound


def samples_before_the_cap(run: Run) -> float | None:
    """Samples processed before the first step at the run's cap (batch_size.max): those of the first
    training record whose next batch has that size. Nothing for a constant batch, or a run that never got
    there or whose cap was lowered to the training set (its records do not say to what). Runs record every
    step before a change of batch size, so this is exact; in records written before they did (untested
    steps every train.log_every steps), an upper bound for the ramps (cap_samples_bounded)."""
    policy = run.config.get("batch_size") or {}
    if policy.get("name") == "constant" or "max" in run.summary.get("batch_size_capped_from", {}):
        return None
    return next((r["samples"] for r in run.train_records if r["next_batch_size"] >= policy["max"]), None)


def cap_samples_bounded(run: Run) -> bool:
    """Whether samples_before_the_cap is only an upper bound: the run's records predate those that hold
    step 1 and every change of batch size (run.reporting's Reporter.changes_size), so they begin at step
    train.log_every and may have left out the step at which the batch reached its cap."""
    return bool(run.train_records) and run.train_records[0]["step"] != 1


COMMON_COLUMNS = (
    Column("steps", "optimizer steps", ".1f"),
    Column("mean_batch_size", "mean batch size", ".1f"),
    Column("samples_before_cap", "samples before b = b_max", ".0f", samples_before_the_cap, cap_samples_bounded),
    Column("train_time_s", "wall-clock training time (s)", ".2f"),
    Column("best_train_loss", "best training loss", ".4f"),
)
COLUMNS = (  # classification
    *COMMON_COLUMNS,
    Column("best_test_acc", "best test accuracy", ".3f"),
    Column("final_test_acc", "final test accuracy", ".3f"),
)
TOKEN_COLUMNS = (  # next-token prediction: tokens seen, and the validation split's loss and perplexity
    *COMMON_COLUMNS[:2],
    Column("tokens", "tokens processed", ".0f"),
    *COMMON_COLUMNS[2:],
    Column("final_test_loss", "final validation loss (nats/token)", ".4f"),
    Column("best_test_perplexity", "best validation perplexity", ".3f"),
    Column("final_test_perplexity", "final validation perplexity", ".3f"),
)
COLUMNS_BY_HEADLINE = {ACCURACY.key: COLUMNS, "test_loss": TOKEN_COLUMNS}


def columns_of(experiment: Experiment) -> tuple[Column, ...]:
    return COLUMNS_BY_HEADLINE[experiment.headline.key]


@dataclass(frozen=True)
class Row:
    method: str
    seeds: int
    incomplete: int
    stats: dict[str, Stat]
    upper_bounds: frozenset[str] = frozenset()  # the keys of the columns where a seed's value is only an upper bound


def column_value(column: Column, run: Run) -> float | None:
    return column.of_run(run) if column.of_run else run.summary.get(column.key)


def is_bounded(column: Column, run: Run) -> bool:
    return column.bounded is not None and column_value(column, run) is not None and column.bounded(run)


def method_row(method: Method, columns: tuple[Column, ...] = COLUMNS) -> Row:
    stats = {column.key: seed_stat([column_value(column, run) for run in method.completed]) for column in columns}
    bounds = frozenset(c.key for c in columns if any(is_bounded(c, run) for run in method.completed))
    return Row(method.label, len(method.completed), len(method.incomplete), stats, bounds)


def table_rows(experiment: Experiment) -> list[Row]:
    columns = columns_of(experiment)
    return [method_row(method, columns) for method in experiment.methods]


def csv_number(value: float) -> str:
    return "" if math.isnan(value) else repr(value)


def write_csv(rows: list[Row], path: Path, columns: tuple[Column, ...] = COLUMNS) -> Path:
    header = ["method", "seeds", "incomplete"]
    header += [f"{column.key}_{part}" for column in columns for part in ("mean", "std")]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            numbers = [csv_number(getattr(row.stats[c.key], part)) for c in columns for part in ("mean", "std")]
            writer.writerow([row.method, row.seeds, row.incomplete, *numbers])
    return path


def markdown_cell(stat: Stat, fmt: str) -> str:
    if stat.n == 0:
        return "—"
    if stat.n == 1:
        return format(stat.mean, fmt)
    return f"{stat.mean:{fmt}} ± {stat.std:{fmt}}"


def seeds_cell(row: Row | FrontierRow) -> str:
    return f"{row.seeds} (+{row.incomplete} incomplete)" if row.incomplete else str(row.seeds)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", r"\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_markdown(experiment: Experiment, rows: list[Row], path: Path) -> Path:
    columns = columns_of(experiment)
    header = ["method", "seeds", *(column.header for column in columns)]
    cells = [
        [row.method, seeds_cell(row),
         *(("≤ " if c.key in row.upper_bounds else "") + markdown_cell(row.stats[c.key], c.fmt) for c in columns)]
        for row in rows
    ]
    bounded = ("; ≤ marks an upper bound, from records written before runs recorded every change of batch size "
               "(untested steps every train.log_every steps)" if any(row.upper_bounds for row in rows) else "")
    parts = [
        f"# {experiment.name}",
        markdown_table(header, cells),
        "Mean ± sample standard deviation (ddof=1) over the completed seeds of each method; a single "
        "seed shows its value alone. Rows are in the order in which each method's first run was found. "
        "Samples before b = b_max: processed before the first step at the method's cap, batch_size.max "
        f"(— for a constant batch or a cap never reached){bounded}.",
    ]
    incomplete = [(method.label, run) for method in experiment.methods for run in method.incomplete]
    if incomplete:
        listed = "\n".join(
            f"- {label}: `{run.path}` (status: {run.summary.get('status')})" for label, run in incomplete
        )
        parts.append(f"Not averaged, incomplete runs:\n\n{listed}")
    path.write_text("\n\n".join(parts) + "\n")
    return path


def write_tables(experiment: Experiment, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = table_rows(experiment)
    return [write_csv(rows, out_dir / "table.csv", columns_of(experiment)),
            write_markdown(experiment, rows, out_dir / "table.md")]


def reach_columns(level: float, headline: Headline = ACCURACY) -> list[str]:
    name = headline.level_column.format(level)
    return [f"steps_to_{name}_mean", f"steps_to_{name}_seeds_reached"]


def write_frontier_csv(rows: list[FrontierRow], levels: tuple[float, ...], path: Path,
                       headline: Headline = ACCURACY) -> Path:
    header = ["method", "seeds", "incomplete", "mean_batch_size_mean"]
    header += [f"{key}_{part}" for key in ("steps", headline.final_key, "best_train_loss") for part in ("mean", "std")]
    header += [name for level in levels for name in reach_columns(level, headline)]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            stats = (row.steps, row.final, row.best_train_loss)
            numbers = [csv_number(getattr(stat, part)) for stat in stats for part in ("mean", "std")]
            reached = [cell for r in row.reach for cell in (csv_number(r.mean_step), r.reached)]
            writer.writerow([row.method, row.seeds, row.incomplete, csv_number(row.mean_batch_size.mean), *numbers,
                             *reached])
    return path


def as_percent(stat: Stat) -> Stat:
    return Stat(100 * stat.mean, 100 * stat.std, stat.n)


def reach_cell(reach: Reach) -> str:
    if reach.reached == 0:
        return "—"
    steps = f"{reach.mean_step:,.0f}"
    return steps if reach.reached == reach.seeds else f"{steps} ({reach.reached}/{reach.seeds} seeds)"


def frontier_note(experiment: Experiment, levels: tuple[float, ...]) -> str:
    if experiment.headline.key != ACCURACY.key:
        return validation_loss_note(experiment, levels)
    label, accuracy = best_final(experiment)
    shown = ", ".join(f"{level}%" for level in levels)
    return (
        "One row per method; constant batch sizes in order of b, norm tests in order of η. Over the "
        "completed seeds of each method:\n\n"
        "- **seeds**: completed seeds averaged (incomplete runs are not);\n"
        "- **mean batch size**: samples per optimizer step (samples / steps), mean over seeds;\n"
        "- **optimizer steps**, **final test accuracy** (at the end of training) and **best training loss** "
        "(the lowest loss on the fixed training examples over the run's evaluations): mean ± sample "
        "standard deviation (ddof=1) over seeds; a single seed shows its value alone;\n"
        "- **steps to X%**: for each seed, the step of its first evaluation with test accuracy ≥ X%, "
        "averaged over the seeds that reached X; *k/n seeds* when only k of the n did, — when none did. "
        "Evaluations are sparse (log-spaced early on, then every `train.eval_every` samples), so a seed "
        "reached X at or before that step: each value is an upper bound.\n\n"
        f"The levels X ({shown}) are the best mean final test accuracy over the methods "
        f"({100 * accuracy:.2f}%, {label}) less 5, 2 and 1 percentage points, rounded down to a whole percent."
    )


def validation_loss_note(experiment: Experiment, levels: tuple[float, ...]) -> str:
    headline = experiment.headline
    label, loss = best_final(experiment)
    shown = ", ".join(headline.level_name(level) for level in levels)
    margins = ", ".join(f"{margin:g}" for margin in headline.margins)
    return (
        "One row per method; constant batch sizes in order of b, norm tests in order of η. Lower is better. "
        "Over the completed seeds of each method:\n\n"
        "- **seeds**: completed seeds averaged (incomplete runs are not);\n"
        "- **mean batch size**: sequences per optimizer step (samples / steps), mean over seeds;\n"
        "- **optimizer steps**, **final validation loss** (nats per token on the validation split at the end "
        "of training) and **best training loss** (the lowest loss on the fixed training sequences over the "
        "run's evaluations): mean ± sample standard deviation (ddof=1) over seeds; a single seed shows its "
        "value alone;\n"
        "- **steps to loss L**: for each seed, the step of its first evaluation with validation loss ≤ L, "
        "averaged over the seeds that reached L; *k/n seeds* when only k of the n did, — when none did. "
        "Evaluations are sparse, so each value is an upper bound.\n\n"
        f"The levels L ({shown}) are the best mean final validation loss over the methods "
        f"({loss:.4f}, {label}) plus {margins} nats, rounded up to a hundredth."
    )


def write_frontier_markdown(experiment: Experiment, rows: list[FrontierRow], levels: tuple[float, ...],
                            path: Path) -> Path:
    headline = experiment.headline
    accuracy = headline.key == ACCURACY.key
    header = ["method", "seeds", "mean batch size", "optimizer steps",
              "final test accuracy (%)" if accuracy else "final validation loss (nats/token)",
              "best training loss",
              *(f"steps to {level}%" if accuracy else f"steps to loss {headline.level_name(level)}" for level in levels)]
    cells = [
        [
            row.method, seeds_cell(row),
            "—" if row.mean_batch_size.n == 0 else f"{row.mean_batch_size.mean:,.1f}",
            markdown_cell(row.steps, ",.0f"),
            markdown_cell(as_percent(row.final), ".2f") if accuracy else markdown_cell(row.final, ".4f"),
            markdown_cell(row.best_train_loss, ".4f"), *(reach_cell(reach) for reach in row.reach),
        ]
        for row in rows
    ]
    title = "steps to accuracy" if accuracy else "steps to validation loss"
    parts = [f"# {experiment.name}: {title}", frontier_note(experiment, levels), markdown_table(header, cells)]
    path.write_text("\n\n".join(parts) + "\n")
    return path


def write_frontier_tables(experiment: Experiment, out_dir: Path) -> list[Path]:
    """frontier.csv and frontier.md of an experiment with at least one completed run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, levels = frontier_rows(experiment), headline_levels(experiment)
    return [
        write_frontier_csv(rows, levels, out_dir / "frontier.csv", experiment.headline),
        write_frontier_markdown(experiment, rows, levels, out_dir / "frontier.md"),
    ]


def write_index(title: str, outputs: dict[str, list[Path]], out_dir: Path) -> Path:
    """index.md linking each experiment's files (`outputs`: experiment name -> paths), relatively."""
    parts = [f"# {title}"]
    for name, paths in outputs.items():
        links = [f"- [{path.name}]({path.relative_to(out_dir).as_posix()})" for path in paths]
        images = [f"![{path.stem}]({path.relative_to(out_dir).as_posix()})" for path in paths if path.suffix == ".png"]
        parts.append(f"## {name}\n\n" + "\n".join(links) + ("\n\n" + "\n\n".join(images) if images else ""))
    index = out_dir / "index.md"
    index.write_text("\n\n".join(parts) + "\n")
    return index
