"""make suite-status: each run of a suite done, part-way (read from its records and checkpoint) or not
started, with the train time so far and an estimate of the time to go. The runs are real: trained to the
end, stopped by SIGTERM part-way (as `kill` or a session's end leaves it), or killed mid-checkpoint."""
from __future__ import annotations

import subprocess
import sys

import interrupt_worker
import pytest
from helpers import ROOT, compose

from adabatch.analysis.suite_status import DONE, NOT_STARTED, PART_WAY, remaining_s, report, suite_states
from adabatch.run.checkpoint import load_checkpoint
from adabatch.run.loop import train
from adabatch.run.preemption import PREEMPTED_EXIT_CODE
from adabatch.run.records import read_metrics, read_summary

OVERRIDES = ["experiment=quickstart", "device=cpu", "train.samples=1200", "train.eval_every=600",
             "train.eval_train_examples=64", "train.save_model=false"]


def test_a_suite_lists_each_run_done_part_way_or_not_started(tmp_path):
    runs = tmp_path / "runs" / "quickstart"
    done, stopped, missing = runs / "constant-sgd" / "seed0", runs / "norm_test-sgd" / "seed0", runs / "ramp" / "seed0"
    train(compose(*OVERRIDES), done)
    assert interrupt_worker.run(stopped, "term", 5, OVERRIDES) == PREEMPTED_EXIT_CODE

    states = suite_states([done, stopped, missing])
    assert [s.run_id for s in states] == ["constant-sgd/seed0", "norm_test-sgd/seed0", "ramp/seed0"]
    summary, last = read_summary(done), list(read_metrics(stopped, "train"))[-1]
    assert (states[0].state, states[0].samples, states[0].train_s) == (DONE, summary["samples"], summary["train_time_s"])
    assert states[0].final == f"test accuracy {100 * summary['final_test_acc']:g}"
    assert (states[1].state, states[1].samples, states[1].budget, states[1].train_s) == (
        PART_WAY, last["samples"], 1200, last["time_s"])
    assert 0 < states[1].fraction < 1 and last["step"] == 5
    assert (states[2].state, states[2].budget, states[2].train_s) == (NOT_STARTED, None, 0.0)
    fraction = last["samples"] / 1200
    assert remaining_s(states) == pytest.approx(last["time_s"] / fraction * (1 - fraction) + summary["train_time_s"])

    lines = report(states).splitlines()
    assert lines[0].startswith("3 runs: 1 done, 1 part-way, 1 not started; train time so far")
    assert [line.split()[0] for line in lines[1:]] == ["done", "part-way", "not"]
    assert f"{100 * fraction:5.1f}%" in lines[2]


def test_a_run_whose_records_are_sparse_is_as_far_as_its_checkpoint(tmp_path):
    """A constant batch records its untested steps every train.log_every steps: a run killed while writing
    its 4th checkpoint has a record of step 1 only, and its 3rd checkpoint (step 3) says how far it got."""
    run_dir = tmp_path / "constant-adagrad" / "seed0"
    overrides = ["experiment=quickstart", "device=cpu", "batch_size=constant", "batch_size.initial=16",
                 "train.samples=320", "train.log_every=1000", "train.checkpoint_every=16", "train.eval_every=320",
                 "train.eval_train_examples=64"]
    assert interrupt_worker.run(run_dir, "mid-checkpoint", 4, overrides) == -9  # SIGKILL

    assert [r["step"] for r in read_metrics(run_dir, "train")] == [1]
    (state,) = suite_states([run_dir])
    checkpoint = load_checkpoint(run_dir)
    assert (state.state, state.samples, state.train_s) == (PART_WAY, 48, checkpoint["loop"]["train_time"])
    assert checkpoint["experiment"]["adaptive"]["steps"] == 3 and state.fraction == 48 / 320


def test_the_listing_needs_run_directories():
    ran = subprocess.run([sys.executable, "scripts/suite_status.py"], cwd=ROOT, capture_output=True, text=True)
    assert ran.returncode == 2 and "RUN_DIR" in ran.stderr
