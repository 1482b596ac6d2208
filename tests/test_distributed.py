"""Data parallelism against one process: torchrun with gloo on the CPU, exactly as users launch it.

Ranks must give the global batch's statistics, gradients and evaluation (the unsplit batch in one
process), agree with each other to the last bit, and a whole torchrun training run must follow the
single-process run: the same batch sizes, statistics and final parameters.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import train_cli
from helpers import ROOT, compose
from ranks_worker import collect

from adabatch.data import plan_layout
from adabatch.distributed import SINGLE_PROCESS, World
from adabatch.run.records import MODEL_FILE, read_metrics, read_summary
from adabatch.validation import ConfigError, check_config

TORCHRUN = Path(sys.executable).with_name("torchrun")


def torchrun(nproc: int, *args: str, **popen) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["OMP_NUM_THREADS"] = "1"
    command = [str(TORCHRUN), "--standalone", f"--nproc_per_node={nproc}", *args]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr


@pytest.fixture(scope="module")
def reference():
    return collect(SINGLE_PROCESS)


@pytest.mark.parametrize("nproc", [2])
def test_ranks_give_the_global_batch_statistics_gradients_and_evaluation(nproc, reference, tmp_path):
    code, stderr = finish(torchrun(nproc, "tests/ranks_worker.py", str(tmp_path)))
    assert code == 0, stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(nproc)]
    assert all(r.keys() == reference.keys() for r in ranks)
    for key, expected in reference.items():
        for name, value in expected.items():
            for rank in ranks[1:]:  # every rank holds the same numbers, so they take the same decisions
                assert torch.equal(rank[key][name], ranks[0][key][name]), (key, name)
            actual = ranks[0][key][name]
            if name == "coord_var":
                atol = 1e-13 * float(value.abs().max())
                torch.testing.assert_close(actual, value, rtol=1e-8, atol=atol, msg=str(key))
            else:
                torch.testing.assert_close(actual, value, rtol=1e-10, atol=1e-14, msg=str(key))


def test_torchrun_training_follows_the_single_process_run(tmp_path):
    overrides = [
        "experiment=quickstart", "dataset=digits", "device=cpu", "train.samples=2500", "train.eval_every=1000",
        "batch_size.max=96", "batch_size.max_micro=16", "train.progress_every_s=600",
        # SGD: AdaGrad's first steps move a weight by about lr whatever the sign of a near-zero gradient, which
        # turns the float32 rounding of the ranks' sums into diverging runs within 20 steps on some CPUs
        "optimizer=sgd", "optimizer.lr=0.05",
    ]
    ranks = torchrun(2, "src/train.py", *overrides, f"hydra.run.dir={tmp_path / 'ranks'}")
    train_cli.train([*overrides, f"hydra.run.dir={tmp_path / 'single'}"])  # the entry point, in this process meanwhile
    code, stderr = finish(ranks)
    assert code == 0, stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ranks", "single"]  # rank 1 made no directory of its own
    assert read_summary(tmp_path / "ranks")["world_size"] == 2

    one, two = (list(read_metrics(tmp_path / name, "train")) for name in ("single", "ranks"))
    assert [r["batch_size"] for r in two] == [r["batch_size"] for r in one]
    assert len({r["batch_size"] for r in one}) >= 4  # the test grew the batch several times
    assert [r["next_batch_size"] for r in two] == [r["next_batch_size"] for r in one]
    for a, b in zip(one, two):
        layout = plan_layout(a["batch_size"], 2, 16)
        assert (b["micro_batch_size"], b["accumulation"]) == (layout.micro_batch_size, layout.accumulation)
        assert b.get("tested") == a.get("tested")
        for field in ("train_loss", "grad_sq_norm", "norm_var", "proposal") if a.get("tested") else ("train_loss",):
            assert b[field] == pytest.approx(a[field], rel=1e-4), (a["step"], field)
    assert any(r["accumulation"] > 1 for r in two)  # micro-batching happened on the ranks

    evals = [list(read_metrics(tmp_path / name, "eval")) for name in ("single", "ranks")]
    assert len(evals[0]) == len(evals[1]) >= 3
    for a, b in zip(*evals):
        assert b["test_acc"] == pytest.approx(a["test_acc"], abs=1e-3)
        assert b["test_loss"] == pytest.approx(a["test_loss"], rel=1e-4)

    final = [torch.load(tmp_path / name / MODEL_FILE) for name in ("single", "ranks")]
    for name, value in final[0].items():
        torch.testing.assert_close(final[1][name], value, rtol=1e-4, atol=1e-5)


def worker_pids(parent: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children


def test_a_failing_rank_stops_every_rank(tmp_path):
    run_dir = tmp_path / "run"
    launch = torchrun(2, "src/train.py", "experiment=quickstart", "device=cpu", "train.samples=10000000",
                      f"hydra.run.dir={run_dir}")
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "metrics.jsonl").exists() or len((run_dir / "metrics.jsonl").read_text()) < 2000:
            assert launch.poll() is None and time.monotonic() < deadline, launch.stderr.read()[-3000:]
            time.sleep(0.5)
        workers = worker_pids(launch.pid)
        assert len(workers) == 2
        os.kill(max(workers), signal.SIGKILL)
        killed = time.monotonic()
        code, stderr = finish(launch, timeout=60)
    finally:
        if launch.poll() is None:
            launch.kill()
    assert code != 0 and time.monotonic() - killed < 30
    assert "SIGKILL" in stderr
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_an_initial_batch_smaller_than_the_world_is_refused():
    cfg = compose("device=cpu", "batch_size=constant", "batch_size.initial=3")
    check_config(cfg, World(rank=0, size=3))
    with pytest.raises(ConfigError, match="batch_size.initial=3 gives some of the 4 ranks no example; raise batch_size"):
        check_config(cfg, World(rank=1, size=4))
