"""Runs that survive: killed (SIGKILL) anywhere, or stopped by SIGTERM, a run resumed in its run
directory ends bit for bit as the run that was never interrupted."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import interrupt_worker
import pytest
import torch
from helpers import ROOT, compose

from adabatch.run.checkpoint import CHECKPOINT_FILE, load_checkpoint
from adabatch.run.preemption import PREEMPTED_EXIT_CODE
from adabatch.run.records import MODEL_FILE, read_metrics, read_summary
from adabatch.run.experiment import build_experiment

OVERRIDES = [
    "experiment=quickstart", "device=cpu", "train.samples=4000", "train.eval_every=1500",
    "train.checkpoint_every=100", "batch_size.max=96", "batch_size.max_micro=32", "train.progress_every_s=600",
    "batch_size.engine=functorch",  # no Opacus import: these tests start many processes
]
TIMES = ("time_s", "train_time_s", "wall_time_s", "resumes")  # wall-clock, and how often a run was resumed
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
pytestmark = pytest.mark.slow  # every test here launches training processes


def worker(run_dir, kind="none", n=0, overrides=OVERRIDES) -> int:
    return interrupt_worker.run(run_dir, kind, n, overrides)


def counters(run_dir) -> dict:
    """The checkpoint's counters: steps, samples and the next batch size."""
    return load_checkpoint(run_dir)["experiment"]["adaptive"]


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
        progress.append(counters(run_dir)["samples"] if (run_dir / CHECKPOINT_FILE).exists() else 0)
        if kind == "term":  # the step under way when the signal came, then a checkpoint and its records
            assert [r["step"] for r in read_metrics(run_dir, "train")][-1] == counters(run_dir)["steps"]
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


def test_ghost_measured_checkpoints_the_forms_it_chose_and_a_resumed_run_takes_them(tmp_path):
    """ghost_measured times each layer's forms on its first tested step: a checkpoint holds the
    choices (per rank) and restoring it hands them back to the engine, which then measures nothing."""
    overrides = [*OVERRIDES[:-1], "batch_size.engine=ghost_measured"]
    run_dir = tmp_path / "run"
    assert worker(run_dir, "term", 3, overrides) == PREEMPTED_EXIT_CODE
    state = load_checkpoint(run_dir)
    exp = build_experiment(compose(*overrides))
    convolutions = {name for name, m in exp.model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    experiment = state["experiment"]
    (forms,) = [engine["forms"] for engine in experiment["adaptive"]["engine"]]
    assert set(forms) == convolutions and set(forms.values()) <= {"gram", "formed"}
    chosen = {name: "gram" for name in convolutions}  # whatever was measured: restoring takes what it is given
    exp.load_state_dict({**experiment, "adaptive": {**experiment["adaptive"], "engine": [{"forms": chosen}]}})
    assert exp.engine.state_dict() == {"forms": chosen}
    assert worker(run_dir, overrides=overrides) == 0 and read_summary(run_dir)["resumes"] == 1


# A small ViT on the 8x8 digits (4 patches of 4x4) with dropout; functorch refuses dropout, ghost runs it.
DROPOUT = [*OVERRIDES[:-1], "batch_size.engine=ghost", "train.samples=3000", "model=vit", "+model.dropout=0.3",
           "model.dim=16", "model.depth=1", "model.heads=2", "model.mlp_ratio=1"]


def test_a_run_with_dropout_stopped_and_resumed_draws_the_masks_of_the_uninterrupted_run(tmp_path):
    """The checkpoint holds the random generators: a resumed run draws the dropout masks the
    uninterrupted run drew (without them it diverges at its first step after the resume)."""
    reference, run_dir = tmp_path / "reference", tmp_path / "run"
    assert worker(reference, overrides=DROPOUT) == 0
    assert worker(run_dir, "term", 6, DROPOUT) == PREEMPTED_EXIT_CODE
    assert counters(run_dir)["steps"] == 6
    assert worker(run_dir, overrides=DROPOUT) == 0
    assert read_summary(run_dir)["resumes"] == 1
    assert_same_run(run_dir, reference)


CHANNELS_LAST = [*OVERRIDES, "train.samples=3000", "train.memory_format=channels_last"]


def test_a_channels_last_run_resumes_exactly_and_follows_the_contiguous_run(reference, tmp_path):
    """train.memory_format=channels_last lays the convolutions' weights out channels last; it changes
    their order of summation only, and a stopped run resumes to the uninterrupted one all the same."""
    exp = build_experiment(compose(*CHANNELS_LAST))
    weights = [m.weight for m in exp.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    assert any(not w.is_contiguous() for w in weights)  # (one input channel is both layouts at once)
    uninterrupted, run_dir = tmp_path / "uninterrupted", tmp_path / "run"
    assert worker(uninterrupted, overrides=CHANNELS_LAST) == 0
    assert worker(run_dir, "term", 6, CHANNELS_LAST) == PREEMPTED_EXIT_CODE
    assert worker(run_dir, overrides=CHANNELS_LAST) == 0 and read_summary(run_dir)["resumes"] == 1
    assert_same_run(run_dir, uninterrupted)
    first, expected = (next(read_metrics(d, "train")) for d in (uninterrupted, reference))
    assert first["next_batch_size"] == expected["next_batch_size"]
    for key in ("train_loss", "grad_sq_norm", "norm_var"):
        assert first[key] == pytest.approx(expected[key], rel=1e-5), key


def as_format_1(state: dict) -> dict:
    """A checkpoint as the code before the run package wrote it: the states flat, the counters in "loop"."""
    experiment, adaptive = state["experiment"], state["experiment"]["adaptive"]
    return {
        "format": 1,
        "loop": {"batch_size": adaptive["batch_size"], "step": adaptive["steps"], "samples": adaptive["samples"],
                 **state["loop"]},
        "model": experiment["model"], "optimizer": experiment["optimizer"], "policy": adaptive["policy"],
        "data": experiment["data"], "rng": experiment["rng"], "engine": adaptive["engine"],
        "reporter": state["reporter"],
    }


def test_a_checkpoint_of_format_1_resumes_to_the_uninterrupted_run(reference, tmp_path):
    run_dir = tmp_path / "run"
    assert worker(run_dir, "term", 7) == PREEMPTED_EXIT_CODE
    torch.save(as_format_1(load_checkpoint(run_dir)), run_dir / CHECKPOINT_FILE)
    assert load_checkpoint(run_dir)["experiment"]["adaptive"]["steps"] == 7  # read, and converted
    assert worker(run_dir) == 0
    assert_same_run(run_dir, reference)
