"""Where a suite of runs stands (`make suite-status SUITE=<name>`): each run done, part-way (how far, from
its records or its checkpoint) or not started, the train time it has taken, and a rough estimate of what
is left, so that a suite of many core-hours can be planned around."""
from __future__ import annotations

import os
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from .headline import headline_of
from adabatch.run.checkpoint import CHECKPOINT_FILE, load_checkpoint
from adabatch.run.records import CONFIG_FILE, METRICS_FILE, PACKED_METRICS_FILE, SUMMARY_FILE, read_metrics, read_summary

DONE, STOPPED, PART_WAY, NOT_STARTED = "done", "stopped", "part-way", "not started"


@dataclass(frozen=True)
class RunState:
    run_id: str
    state: str  # DONE (completed), STOPPED (a summary with another status: diverged), PART_WAY, NOT_STARTED
    samples: int  # trained so far: the last train record's, or the checkpoint's when that is further on
    budget: int | None  # the config's train.samples (None before the run has written its config)
    train_s: float  # train time so far (the records' clock: evaluations and checkpoints not included)
    final: str = ""  # a finished run's last evaluation, as its summary gives it

    @property
    def fraction(self) -> float:
        return min(1.0, self.samples / self.budget) if self.budget else 0.0


def run_state(run_dir: Path, run_id: str) -> RunState:
    if (run_dir / SUMMARY_FILE).is_file():
        summary = read_summary(run_dir)
        headline = headline_of([summary])
        value = summary.get(headline.final_key)
        final = f"{headline.label} {headline.shown(value):g}" if isinstance(value, float) else ""
        state = DONE if summary.get("status") == "completed" else STOPPED
        return RunState(run_id, state, summary.get("samples", 0), budget_of(run_dir), summary.get("train_time_s", 0.0),
                        final if state == DONE else str(summary.get("status")))
    if not any((run_dir / name).is_file() for name in (METRICS_FILE, PACKED_METRICS_FILE)):
        return RunState(run_id, NOT_STARTED, 0, budget_of(run_dir), 0.0)
    samples, train_s = 0, 0.0
    for record in read_metrics(run_dir, "train"):
        samples, train_s = record["samples"], record["time_s"]
    if (run_dir / CHECKPOINT_FILE).is_file():  # ahead of the records where untested steps are logged sparsely
        state = load_checkpoint(run_dir, mmap=True)
        if state["experiment"]["adaptive"]["samples"] >= samples:
            samples, train_s = state["experiment"]["adaptive"]["samples"], state["loop"].get("train_time", train_s)
    return RunState(run_id, PART_WAY, samples, budget_of(run_dir), train_s)


def budget_of(run_dir: Path) -> int | None:
    if not (run_dir / CONFIG_FILE).is_file():
        return None
    return (yaml.safe_load((run_dir / CONFIG_FILE).read_text()) or {}).get("train", {}).get("samples")


def remaining_s(states: list[RunState]) -> float | None:
    """Train time still to come: a part-way run at its own rate so far, a run not started at the mean of
    the finished ones (None when no run has finished)."""
    finished = [s.train_s for s in states if s.state == DONE]
    if not finished:
        return None
    mean = statistics.fmean(finished)
    left = 0.0
    for s in states:
        if s.state == PART_WAY:
            left += s.train_s / s.fraction * (1 - s.fraction) if s.fraction > 0 else mean
        elif s.state == NOT_STARTED:
            left += mean
    return left


def report(states: list[RunState]) -> str:
    counts = {state: sum(s.state == state for s in states) for state in (DONE, STOPPED, PART_WAY, NOT_STARTED)}
    spent = sum(s.train_s for s in states)
    left = remaining_s(states)
    lines = [
        f"{len(states)} runs: " + ", ".join(f"{n} {state}" for state, n in counts.items() if n)
        + f"; train time so far {spent / 3600:.1f} core-hours"
        + (f", about {left / 3600:.1f} to go (a run not started counted at the finished runs' mean)"
           if left is not None and counts[DONE] < len(states) else ""),
    ]
    width = max((len(s.run_id) for s in states), default=0)
    for s in states:
        progress = f"{100 * s.fraction:5.1f}%" if s.budget else "     -"
        minutes = f"{s.train_s / 60:6.1f} min" if s.train_s else " " * 10
        lines.append(f"{s.state:<11}  {s.run_id:<{width}}  {progress}  {minutes}  {s.final}".rstrip())
    return "\n".join(lines)


def suite_states(run_dirs: Iterable[str | Path]) -> list[RunState]:
    """The state of each run directory (existing or not), named by its path below the directories' common one."""
    run_dirs = [Path(run_dir) for run_dir in run_dirs]
    root = Path(os.path.commonpath(run_dirs)) if len(run_dirs) > 1 else None
    return [run_state(run_dir, str(run_dir.relative_to(root)) if root else str(run_dir)) for run_dir in run_dirs]
