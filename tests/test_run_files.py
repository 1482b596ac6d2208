"""A run directory holds one run, whole: a diverging run stops with its records and last checkpoint
intact, a failed write keeps the old file, a run resumes only with its own config, and a fresh start
removes the earlier run's files before it writes."""
from __future__ import annotations

import errno
import json

import interrupt_worker
import pytest
import torch
from helpers import compose
from omegaconf import OmegaConf

from adabatch.run.checkpoint import CHECKPOINT_FILE, how_to_start, load_checkpoint
from adabatch.run.preemption import PREEMPTED_EXIT_CODE
from adabatch.run.records import MODEL_FILE, RunRecords, read_metrics, read_summary, write_atomic
from adabatch.run.loop import train
from adabatch.validation import ConfigError


def test_a_diverging_run_stops_with_its_records_and_last_checkpoint_intact(tmp_path):
    cfg = compose("experiment=quickstart", "device=cpu", "optimizer=sgd", "train.samples=4000",
                  "train.checkpoint_every=200", "schedule=multistep", "schedule.milestones=[1000]",
                  "schedule.gamma=1e12")  # from 1000 samples on, lr = 3e10: the loss blows up
    run_dir = tmp_path / "run"
    summary = train(cfg, run_dir)
    assert summary["status"] == "diverged" == read_summary(run_dir)["status"]
    step = summary["diverged_at_step"]
    assert "loss is" in summary["diverged_because"] or "statistic" in summary["diverged_because"]
    steps = [r["step"] for r in read_metrics(run_dir, "train")]
    assert steps == list(range(1, step))  # every step before the divergence, nothing after
    state = load_checkpoint(run_dir)["experiment"]
    assert 1000 <= state["adaptive"]["samples"] and state["adaptive"]["steps"] < step
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (run_dir / MODEL_FILE).exists()
    assert json.loads((run_dir / "summary.json").read_text())["diverged_at_step"] == step


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    write_atomic(target, '{"status": "completed"}\n')

    def disk_full(f):
        f.write(b'{"status": ')
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, disk_full)
    assert target.read_text() == '{"status": "completed"}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_run_resumes_only_with_the_config_it_started_with(tmp_path):
    started = compose("device=cpu", "batch_size.eta=0.5")
    RunRecords(tmp_path).write_config(OmegaConf.to_container(started, resolve=True))
    assert how_to_start(started, tmp_path) == "fresh"  # records but no checkpoint: nothing to resume
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"")
    assert how_to_start(started, tmp_path) == "resume"
    assert how_to_start(compose("device=cpu", "batch_size.eta=0.5", "logger=wandb"), tmp_path) == "resume"
    with pytest.raises(ConfigError, match=r"holds a run with batch_size.eta=0.5, not 0.25; resume it with its own"):
        how_to_start(compose("device=cpu", "batch_size.eta=0.25"), tmp_path)
    assert how_to_start(compose("device=cpu", "batch_size.eta=0.25", "resume=never"), tmp_path) == "fresh"
    (tmp_path / "summary.json").write_text("{}")
    assert how_to_start(started, tmp_path) == "ended"


def test_a_fresh_start_removes_the_earlier_runs_files_before_it_writes(tmp_path):
    """resume=never in a directory holding a finished run, stopped early: the directory holds the new run
    alone (its config, its records), not the old run's summary and model next to them."""
    run_dir = tmp_path / "run"
    short = ["device=cpu", "batch_size=constant", "batch_size.initial=16",
             "train.eval_every=200", "train.checkpoint_every=100", "train.progress_every_s=600"]
    assert interrupt_worker.run(run_dir, "none", 0, [*short, "train.samples=400"]) == 0
    assert (run_dir / "summary.json").exists() and (run_dir / MODEL_FILE).exists()
    again = [*short, "train.samples=4000", "seed=1", "resume=never"]
    assert interrupt_worker.run(run_dir, "term", 3, again) == PREEMPTED_EXIT_CODE
    assert sorted(p.name for p in run_dir.iterdir()) == [CHECKPOINT_FILE, "config.yaml", "metrics.jsonl"]
    assert yaml_seed(run_dir) == 1 and [r["step"] for r in read_metrics(run_dir, "train")] == [1, 2, 3]
    assert how_to_start(compose(*short, "train.samples=4000", "seed=1"), run_dir) == "resume"


def yaml_seed(run_dir) -> int:
    return OmegaConf.load(run_dir / "config.yaml").seed
