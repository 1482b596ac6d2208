"""train.parallel=fsdp with real processes: torchrun, 2 ranks, gloo, CPU. A sharded run follows the DDP
run (batch sizes, losses, statistics from the parts, final parameters), and a run SIGKILLed anywhere
after its first checkpoint resumes from its DCP shards to the uninterrupted run, bit for bit."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from test_distributed import finish, torchrun, worker_pids

from adabatch.run.checkpoint import CHECKPOINT_FILE, SHARDED_PREFIX
from adabatch.run.records import MODEL_FILE, read_metrics, read_summary

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

OVERRIDES = (
    "experiment=quickstart", "device=cpu", "batch_size.engine=local", "train.samples=2500", "train.eval_every=1000",
    "batch_size.max=96", "batch_size.max_micro=16", "train.checkpoint_every=400", "train.progress_every_s=600",
    "batch_size.interval=3",  # plain steps between the tested ones, for train.compile to take
)
TIMES = ("time_s",)


def launch(run_dir: Path, *extra: str, **popen):
    return torchrun(2, "src/train.py", *OVERRIDES, *extra, f"hydra.run.dir={run_dir}", **popen)


def run(run_dir: Path, *extra: str) -> Path:
    code, stderr = finish(launch(run_dir, *extra))
    assert code == 0, stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    return run(tmp_path_factory.mktemp("fsdp") / "run", "train.parallel=fsdp")


def training(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMES} for r in read_metrics(run_dir, "train")]


def test_an_fsdp_run_follows_the_ddp_run(sharded, tmp_path):
    replicated = run(tmp_path / "ddp", "train.parallel=ddp")
    ddp, fsdp = training(replicated), training(sharded)
    assert [r["batch_size"] for r in fsdp] == [r["batch_size"] for r in ddp]
    assert len({r["batch_size"] for r in ddp}) >= 4  # the test from the parts grew the batch several times
    assert any(r.get("tested") and r["parts"] > 2 for r in fsdp)  # ranks x micro-batches
    for a, b in zip(ddp, fsdp):
        assert b.get("parts") == a.get("parts")
        for field in ("train_loss", "grad_sq_norm", "norm_var") if a.get("tested") else ("train_loss",):
            assert b[field] == pytest.approx(a[field], rel=1e-5), (a["step"], field)
    assert read_summary(sharded)["world_size"] == 2
    final = [torch.load(path / MODEL_FILE) for path in (replicated, sharded)]
    assert final[1].keys() == final[0].keys()
    for name, value in final[0].items():
        torch.testing.assert_close(final[1][name], value, rtol=1e-5, atol=1e-6)
    assert not list(sharded.glob(f"{SHARDED_PREFIX}*")) and not (sharded / CHECKPOINT_FILE).exists()


def test_a_compiled_fsdp_run_follows_the_eager_one(sharded, tmp_path):
    """train.compile compiles the sharded model, which takes the steps between tested ones."""
    eager, compiled = training(sharded), training(run(tmp_path / "compiled", "train.parallel=fsdp", "train.compile=true"))
    assert [r["batch_size"] for r in compiled] == [r["batch_size"] for r in eager]
    assert sum(not r.get("tested") for r in compiled) >= 10  # steps the compiled model took
    for a, b in zip(eager, compiled):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5), a["step"]


def test_a_killed_fsdp_run_resumes_to_the_uninterrupted_run_bit_for_bit(sharded, tmp_path):
    run_dir = tmp_path / "killed"
    process = launch(run_dir, "train.parallel=fsdp", start_new_session=True)
    deadline = time.monotonic() + 300
    while not (run_dir / CHECKPOINT_FILE).exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    for rank in worker_pids(process.pid):  # both ranks, wherever they are (torchrun starts them in sessions of their own)
        os.kill(rank, signal.SIGKILL)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    assert not (run_dir / "summary.json").exists(), "the run ended before it could be killed: give it more samples"
    assert json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])  # it had started writing

    run(run_dir, "train.parallel=fsdp")  # the same command resumes
    assert read_summary(run_dir)["resumes"] == 1
    assert training(run_dir) == training(sharded)
    assert [r for r in read_metrics(run_dir, "eval")] == [r for r in read_metrics(sharded, "eval")]
    final, expected = (torch.load(path / MODEL_FILE) for path in (run_dir, sharded))
    assert final.keys() == expected.keys() and all(torch.equal(final[k], expected[k]) for k in final)
