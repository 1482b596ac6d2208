"""A run's checkpoint: everything needed to continue it exactly where it stopped.

    <run_dir>/checkpoint.pt   written atomically (temporary file, fsync, rename) by rank 0

The training loop builds it (format 2):

    {"format": 2,
     "experiment": Experiment.state_dict(): the model, the optimizer, the data stream, every rank's
                   random generators, and "adaptive": the policy, the counters (steps, samples, the
                   next batch size) and every rank's statistics-engine choices,
     "loop": the loop's own clock and settings (LoopState: train and wall time, resumes, max_micro=auto's choice),
     "reporter": where the records stood, so that a resumed run cuts its records back to that point
                 and continues them without duplicates,
     "sharded": under train.parallel=fsdp, the directory <run_dir>/checkpoint_sharded_<step> that every
                rank wrote its shards of the model and optimizer into (torch.distributed.checkpoint;
                the experiment's "model" and "optimizer" are then None); absent or None otherwise}

A sharded directory is complete before checkpoint.pt names it, and the directories it does not name
are removed only after it is written: a kill at any point leaves a checkpoint.pt whose shards exist.

Format 1 (the same states, flat, with the counters in "loop") is read and converted on loading.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from ..config_keys import KEYS_NOT_CHANGING_TRAINING, training_identity
from ..validation import ConfigError
from .records import CONFIG_FILE, METRICS_FILE, MODEL_FILE, PACKED_METRICS_FILE, SUMMARY_FILE, write_atomic

CHECKPOINT_FILE = "checkpoint.pt"
SHARDED_PREFIX = "checkpoint_sharded_"
FORMAT = 2


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    write_atomic(run_dir / CHECKPOINT_FILE, lambda f: torch.save({"format": FORMAT, **state}, f))


def load_checkpoint(run_dir: Path, mmap: bool = False) -> dict[str, Any]:
    """The run's checkpoint in this code's format; `mmap`: its tensors mapped, not read (to read the counters)."""
    state = torch.load(run_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=False, mmap=mmap)
    if state.get("format") == 1:
        state = from_format_1(state)
    if state.get("format") != FORMAT:
        raise ConfigError(f"{run_dir / CHECKPOINT_FILE} has format {state.get('format')}, this code reads {FORMAT}")
    return state


def save_sharded(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, world, step: int) -> str:
    """Every rank: the FSDP-sharded model and optimizer state into a directory of their own; its name."""
    from ..parallel import fsdp

    name = f"{SHARDED_PREFIX}{step:09d}"
    fsdp.save_checkpoint(run_dir / name, model, optimizer, world)
    return name


def load_sharded(run_dir: Path, name: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    from ..parallel import fsdp

    fsdp.load_checkpoint(run_dir / name, model, optimizer)


def remove_sharded(run_dir: Path, keep: str | None = None) -> None:
    """Rank 0: the sharded directories (and unfinished ones) other than `keep`."""
    for path in run_dir.glob(f"{SHARDED_PREFIX}*"):
        if path.name != keep:
            shutil.rmtree(path, ignore_errors=True)


def remove_temporary_files(run_dir: Path) -> None:
    """Temporary files of writes that a kill interrupted (the files they were replacing are intact)."""
    for tmp in run_dir.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def remove_earlier_run(run_dir: Path) -> None:
    """Before a fresh start writes anything: an earlier run's files, each removed at once, the summary
    first, so that a kill in between leaves a part of the earlier run (never marked as ended), not a mix."""
    for name in (SUMMARY_FILE, CHECKPOINT_FILE, MODEL_FILE, PACKED_METRICS_FILE, METRICS_FILE, CONFIG_FILE):
        (run_dir / name).unlink(missing_ok=True)
    remove_sharded(run_dir)


def from_format_1(state: dict[str, Any]) -> dict[str, Any]:
    """A format-1 checkpoint (written before the run package) in format 2: the same states, regrouped."""
    loop = state["loop"]
    return {
        "format": 2,
        "experiment": {
            "model": state["model"], "optimizer": state["optimizer"], "data": state["data"], "rng": state["rng"],
            "adaptive": {
                "policy": state["policy"], "batch_size": loop["batch_size"], "steps": loop["step"],
                "samples": loop["samples"],
                "engine": state.get("engine") or [{}] * len(state["rng"]),  # none before ghost_measured
            },
        },
        "loop": {key: loop[key] for key in ("max_micro_auto", "train_time", "wall_time", "resumes") if key in loop},
        "reporter": state["reporter"],
    }


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
    def ignored(key: str) -> bool:
        return key.startswith(KEYS_NOT_CHANGING_TRAINING)  # they may change on resuming

    before = training_identity(flatten(yaml.safe_load((run_dir / CONFIG_FILE).read_text())), ignored)
    now = training_identity(flatten(OmegaConf.to_container(cfg, resolve=True)), ignored)
    for key in sorted(before.keys() | now.keys()):
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
