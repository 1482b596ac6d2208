"""Per-experiment tables (CSV and Markdown, one row per method) and the index of all outputs.

Rows keep the methods' order (first run found first). Each number is the mean and sample standard
deviation over the method's completed runs; incomplete runs are counted but not averaged.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from .aggregate import Stat, seed_stat
from .runs import Experiment, Method


@dataclass(frozen=True)
class Column:
    key: str  # summary.json field; CSV columns <key>_mean and <key>_std
    header: str
    fmt: str


COLUMNS = (
    Column("steps", "optimizer steps", ".1f"),
    Column("mean_batch_size", "mean batch size", ".1f"),
    Column("train_time_s", "wall-clock training time (s)", ".2f"),
    Column("best_train_loss", "best training loss", ".4f"),
    Column("best_test_acc", "best test accuracy", ".3f"),
    Column("final_test_acc", "final test accuracy", ".3f"),
)


@dataclass(frozen=True)
class Row:
    method: str
    seeds: int
    incomplete: int
    stats: dict[str, Stat]


def method_row(method: Method) -> Row:
    stats = {column.key: seed_stat([run.summary.get(column.key) for run in method.completed]) for column in COLUMNS}
    return Row(method.label, len(method.completed), len(method.incomplete), stats)


def table_rows(experiment: Experiment) -> list[Row]:
    return [method_row(method) for method in experiment.methods]


def csv_number(value: float) -> str:
    return "" if math.isnan(value) else repr(value)


def write_csv(rows: list[Row], path: Path) -> Path:
    header = ["method", "seeds", "incomplete"]
    header += [f"{column.key}_{part}" for column in COLUMNS for part in ("mean", "std")]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            numbers = [csv_number(getattr(row.stats[c.key], part)) for c in COLUMNS for part in ("mean", "std")]
            writer.writerow([row.method, row.seeds, row.incomplete, *numbers])
    return path


def markdown_cell(stat: Stat, fmt: str) -> str:
    if stat.n == 0:
        return "—"
    if stat.n == 1:
        return format(stat.mean, fmt)
    return f"{stat.mean:{fmt}} ± {stat.std:{fmt}}"


def seeds_cell(row: Row) -> str:
    return f"{row.seeds} (+{row.incomplete} incomplete)" if row.incomplete else str(row.seeds)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", r"\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_markdown(experiment: Experiment, rows: list[Row], path: Path) -> Path:
    header = ["method", "seeds", *(column.header for column in COLUMNS)]
    cells = [
        [row.method, seeds_cell(row), *(markdown_cell(row.stats[c.key], c.fmt) for c in COLUMNS)] for row in rows
    ]
    parts = [
        f"# {experiment.name}",
        markdown_table(header, cells),
        "Mean ± sample standard deviation (ddof=1) over the completed seeds of each method; a single "
        "seed shows its value alone. Rows are in the order in which each method's first run was found.",
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
    return [write_csv(rows, out_dir / "table.csv"), write_markdown(experiment, rows, out_dir / "table.md")]


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
