"""A run's checkpoint: everything needed to continue it exactly where it stopped.

    <run_dir>/checkpoint.pt   written atomically (temporary file, fsync, rename) by rank 0

It holds the model, the optimizer, the batch-size policy, the data stream, every random generator
and the statistics engine's choices (per rank), the loop's counters, and where the records stood, so
that a resumed run cuts its records back to that point and continues them without duplicates.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from .config_keys import KEYS_NOT_CHANGING_TRAINING
from .random_state import rng_state, set_rng_state
from .records import CONFIG_FILE, METRICS_FILE, MODEL_FILE, PACKED_METRICS_FILE, SUMMARY_FILE, write_atomic
from .validation import ConfigError

if TYPE_CHECKING:
    from .reporting import Reporter
    from .training import Experiment, LoopState

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = 1


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    write_atomic(run_dir / CHECKPOINT_FILE, lambda f: torch.save({"format": FORMAT, **state}, f))


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    state = torch.load(run_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    if state.get("format") != FORMAT:
        raise ConfigError(f"{run_dir / CHECKPOINT_FILE} has format {state.get('format')}, this code reads {FORMAT}")
    return state


def remove_temporary_files(run_dir: Path) -> None:
    """Temporary files of writes that a kill interrupted (the files they were replacing are intact)."""
    for tmp in run_dir.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def remove_earlier_run(run_dir: Path) -> None:
    """Before a fresh start writes anything: an earlier run's files, each removed at once, the summary
    first, so that a kill in between leaves a part of the earlier run (never marked as ended), not a mix."""
    for name in (SUMMARY_FILE, CHECKPOINT_FILE, MODEL_FILE, PACKED_METRICS_FILE, METRICS_FILE, CONFIG_FILE):
        (run_dir / name).unlink(missing_ok=True)


def write_checkpoint(exp: Experiment, loop: LoopState, reporter: Reporter, run_dir: Path) -> None:
    """All ranks call this (their generators are gathered); rank 0 writes."""
    rng = exp.world.gather(rng_state())  # every rank's generators: dropout draws differ across ranks
    engine = exp.world.gather(exp.engine.state_dict() if exp.engine else {})  # ghost_measured: each rank's forms
    if exp.world.is_main:
        save_checkpoint(run_dir, {
            "loop": dataclasses.asdict(loop),
            "model": exp.model.state_dict(),
            "optimizer": exp.optimizer.state_dict(),
            "policy": exp.policy.state_dict(),
            "data": exp.data.state_dict(),
            "rng": rng,
            "engine": engine,
            "reporter": reporter.state_dict(),
        })


def restore(exp: Experiment, state: dict[str, Any]) -> None:
    """The components' states, on every rank; the loop's counters are state["loop"]."""
    exp.model.load_state_dict(state["model"])
    exp.optimizer.load_state_dict(state["optimizer"])
    exp.policy.load_state_dict(state["policy"])
    exp.data.load_state_dict(state["data"])
    rng, engine = state["rng"], state.get("engine")  # checkpoints from before ghost_measured hold no engine
    rank = exp.world.rank if exp.world.rank < len(rng) else 0  # more ranks than before: rank 0's
    set_rng_state(rng[rank])
    if exp.engine is not None and engine:
        exp.engine.load_state_dict(engine[rank])


def how_to_start(cfg: DictConfig, run_dir: Path) -> str:
    """"fresh", "resume" (from the checkpoint) or "ended" (the run directory holds a finished run).

    resume=auto continues a run that has a checkpoint and no summary, and starts afresh otherwise;
    resume=never always starts afresh; resume=must refuses to start without a checkpoint.
    """
    if cfg.resume == "never":
        return "fresh"
    if (run_dir / SUMMARY_FILE).exists():
        return "ended"
    if (run_dir / CHECKPOINT_FILE).exists():
        check_same_config(cfg, run_dir)
        return "resume"
    if cfg.resume == "must":
        raise ConfigError(f"resume=must but {run_dir} has no {CHECKPOINT_FILE}; use resume=auto to start afresh")
    return "fresh"


def check_same_config(cfg: DictConfig, run_dir: Path) -> None:
    """A resumed run must be the run that was started: refuse one whose config differs."""
    before = flatten(yaml.safe_load((run_dir / CONFIG_FILE).read_text()))
    now = flatten(OmegaConf.to_container(cfg, resolve=True))
    for key in sorted(before.keys() | now.keys()):
        if key.startswith(KEYS_NOT_CHANGING_TRAINING):  # they may change on resuming
            continue
        if before.get(key, "<absent>") != now.get(key, "<absent>"):
            raise ConfigError(
                f"{run_dir} holds a run with {key}={before.get(key, '<absent>')}, not {now.get(key, '<absent>')}; "
                f"resume it with its own config, or start afresh with resume=never or another hydra.run.dir"
            )


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}"))
    return flat
