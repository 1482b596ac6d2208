"""Runs that survive: killed (SIGKILL) anywhere, or stopped by SIGTERM, a run resumed in its run
directory ends bit for bit as the run that was never interrupted; a diverging run stops cleanly."""
from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import ROOT, compose
from omegaconf import OmegaConf

from adabatch.checkpoint import CHECKPOINT_FILE, how_to_start, load_checkpoint
from adabatch.preemption import PREEMPTED_EXIT_CODE
from adabatch.records import MODEL_FILE, RunRecords, read_metrics, read_summary, write_atomic
from adabatch.training import train
from adabatch.validation import ConfigError

OVERRIDES = [
    "experiment=quickstart", "device=cpu", "train.samples=8000", "train.eval_every=1500",
    "train.checkpoint_every=100", "batch_size.max=96", "batch_size.max_micro=32", "train.progress_every_s=600",
    "batch_size.engine=functorch",  # no Opacus import: these tests start many processes
]
TIMES = ("time_s", "train_time_s", "wall_time_s", "resumes")  # wall-clock, and how often a run was resumed
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def worker(run_dir, kind="none", n=0) -> int:
    command = [sys.executable, "tests/interrupt_worker.py", str(run_dir), kind, str(n), *OVERRIDES]
    return subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, timeout=300).returncode


def without_times(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMES}


def assert_same_run(run_dir, reference_dir) -> None:
    records = [without_times(r) for r in read_metrics(run_dir)]
    assert records == [without_times(r) for r in read_metrics(reference_dir)]
    assert without_times(read_summary(run_dir)) == without_times(read_summary(reference_dir))
    model, expected = (torch.load(d / MODEL_FILE) for d in (run_dir, reference_dir))
    assert model.keys() == expected.keys() and all(torch.equal(model[k], expected[k]) for k in model)
    files = lambda d: sorted(p.name for p in d.iterdir() if p.name != "train.log")  # noqa: E731 - the CLI's log
    assert files(run_dir) == files(reference_dir)  # no checkpoint or temporary file left behind


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference")
    assert worker(run_dir) == 0
    assert not (run_dir / CHECKPOINT_FILE).exists()  # a completed run keeps model.pt and its records
    return run_dir


def test_killed_or_stopped_anywhere_then_resumed_gives_the_uninterrupted_run(reference, tmp_path):
    chooser = random.Random(6)
    interruptions = [("mid-checkpoint", 1), ("after-record", chooser.randint(5, 15)),
                     ("mid-record", chooser.randint(5, 15)), ("term", chooser.randint(5, 15)),
                     ("mid-checkpoint", chooser.randint(2, 4))]
    run_dir = tmp_path / "run"
    progress = []
    for kind, n in interruptions:
        expected = PREEMPTED_EXIT_CODE if kind == "term" else -signal.SIGKILL
        assert worker(run_dir, kind, n) == expected, (kind, n)
        assert not (run_dir / "summary.json").exists()
        progress.append(load_checkpoint(run_dir)["loop"]["samples"] if (run_dir / CHECKPOINT_FILE).exists() else 0)
        if kind == "term":  # the step under way when the signal came, then a checkpoint and its records
            state = load_checkpoint(run_dir)
            assert [r["step"] for r in read_metrics(run_dir, "train")][-1] == state["loop"]["step"]
    assert progress == sorted(progress) and len(set(progress)) >= 4  # each process got further before its end
    assert worker(run_dir) == 0
    assert read_summary(run_dir)["resumes"] >= 4
    assert_same_run(run_dir, reference)


def test_the_cli_stops_on_sigterm_and_resumes_when_run_again(reference, tmp_path):
    """What SLURM does before preemption: SIGTERM to the running command, then the same command again."""
    run_dir = tmp_path / "run"
    command = [sys.executable, "src/train.py", *OVERRIDES, f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (run_dir / CHECKPOINT_FILE).exists():
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()[-2000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert process.returncode == PREEMPTED_EXIT_CODE, output[-2000:]
    assert "run the same command to resume" in output
    again = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert_same_run(run_dir, reference)
    rerun = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and "nothing to do" in rerun.stdout
    assert_same_run(run_dir, reference)


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
    state = load_checkpoint(run_dir)
    assert 1000 <= state["loop"]["samples"] and state["loop"]["step"] < step
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
    command = [sys.executable, "tests/interrupt_worker.py", str(run_dir)]
    assert subprocess.run([*command, "none", "0", *short, "train.samples=400"], cwd=ROOT, env=ENV).returncode == 0
    assert (run_dir / "summary.json").exists() and (run_dir / MODEL_FILE).exists()
    again = [*command, "term", "3", *short, "train.samples=4000", "seed=1", "resume=never"]
    assert subprocess.run(again, cwd=ROOT, env=ENV).returncode == PREEMPTED_EXIT_CODE
    assert sorted(p.name for p in run_dir.iterdir()) == [CHECKPOINT_FILE, "config.yaml", "metrics.jsonl"]
    assert yaml_seed(run_dir) == 1 and [r["step"] for r in read_metrics(run_dir, "train")] == [1, 2, 3]
    assert how_to_start(compose(*short, "train.samples=4000", "seed=1"), run_dir) == "resume"


def yaml_seed(run_dir) -> int:
    return OmegaConf.load(run_dir / "config.yaml").seed
