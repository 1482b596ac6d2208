"""SLURM for real: the job-array script with a sweep file, Hydra's submitit launcher, and a preempted
array task that resumes. Needs a running SLURM (.ci/run starts a single-node one on localhost with
.ci/local-slurm.sh); skipped where there is none, and failed instead when ADABATCH_SLURM=required."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest
import torch
import yaml
from helpers import ROOT

from adabatch.run.checkpoint import CHECKPOINT_FILE
from adabatch.run.records import MODEL_FILE, read_metrics, read_summary

TINY_RUN = ["device=cpu", "model=logistic", "train.samples=200", "train.eval_every=100", "batch_size=constant",
            "batch_size.initial=16"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TIMES = ("time_s", "train_time_s", "wall_time_s", "resumes")


@pytest.fixture(scope="module", autouse=True)
def slurm():
    if shutil.which("sinfo") and subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0:
        return
    if os.environ.get("ADABATCH_SLURM") == "required":
        pytest.fail("ADABATCH_SLURM=required but SLURM does not answer (sinfo); start it with .ci/local-slurm.sh up")
    pytest.skip("no SLURM here; as root on Debian, `bash .ci/local-slurm.sh up` starts a local one")


def run(*command: str, **kwargs) -> str:
    result = subprocess.run(command, cwd=ROOT, env=kwargs.pop("env", ENV), capture_output=True, text=True,
                            timeout=120, **kwargs)
    assert result.returncode == 0, f"{command}: {result.stderr[-2000:]}"
    return result.stdout


def wait_until_gone(job: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while run("squeue", "-h", "-j", job).strip():
        assert time.monotonic() < deadline, run("squeue")
        time.sleep(1)


def job_field(job: str, field: str) -> str:
    return run("scontrol", "show", "job", job).split(f"{field}=")[1].split()[0]


def test_a_sweep_file_runs_as_an_array_of_runs(tmp_path):
    grid = [*TINY_RUN, "seed=0,1", "optimizer=adagrad,adam"]
    out = run(sys.executable, "scripts/sweep.py", "--name", "tiny", "--sweeps", str(tmp_path), "--runs",
              str(tmp_path / "runs"), "--submit", "--sbatch-arg=--cpus-per-task=1",
              f"--sbatch-arg=--output={tmp_path}/%x-%A_%a.out", *grid)
    assert len((tmp_path / "tiny.txt").read_text().splitlines()) == 4
    job = out.split("submitted job array ")[1].split(":")[0]
    wait_until_gone(job)
    runs = sorted((tmp_path / "runs").iterdir())
    assert [r.name for r in runs] == ["0", "1", "2", "3"]
    assert all(read_summary(r)["status"] == "completed" for r in runs)
    configs = [yaml.safe_load((r / "config.yaml").read_text()) for r in runs]
    assert sorted((c["seed"], c["optimizer"]["name"]) for c in configs) == [
        (0, "adagrad"), (0, "adam"), (1, "adagrad"), (1, "adam")]


def test_a_sweep_through_the_submitit_launcher(tmp_path):
    out = subprocess.run(
        [sys.executable, "src/train.py", "-m", "hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path}",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10", *TINY_RUN, "seed=0,1"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert [read_summary(tmp_path / job)["status"] for job in ("0", "1")] == ["completed", "completed"]
    assert (tmp_path / ".submitit").is_dir()  # they ran as SLURM jobs, not in this process


def test_a_preempted_array_task_resumes_and_ends_like_an_uninterrupted_one(tmp_path):
    line = "experiment=quickstart device=cpu train.samples=20000 train.checkpoint_every=1000 batch_size.max=64 " \
           "batch_size.engine=functorch train.progress_every_s=600"
    sweep_file = tmp_path / "twins.txt"
    sweep_file.write_text(f"{line}\n{line}\n")  # task 1 is the uninterrupted twin of task 0
    job = run("sbatch", "--parsable", "--array=0-1", "--cpus-per-task=1", f"--output={tmp_path}/%x-%A_%a.out",
              "slurm/array.sbatch", str(sweep_file), env={**ENV, "SWEEP_DIR": str(tmp_path / "runs")}).strip()
    preempted, twin = tmp_path / "runs" / "0", tmp_path / "runs" / "1"
    deadline = time.monotonic() + 180
    while not (preempted / CHECKPOINT_FILE).exists():
        assert time.monotonic() < deadline and not (preempted / "summary.json").exists()
        time.sleep(0.2)
    run("scancel", "--signal=TERM", "--batch", f"{job}_0")  # what SLURM does before a time limit
    deadline = time.monotonic() + 120
    while job_field(f"{job}_0", "Restarts") == "0":
        assert time.monotonic() < deadline, run("scontrol", "show", "job", f"{job}_0")
        time.sleep(0.5)
    # Skip SLURM's requeue delay, but not all of it: slurmd refuses to launch a job again within the second
    # its credential was revoked in (when the killed task ended), and the restart then fails with no output.
    time.sleep(2)
    run("scontrol", "update", f"JobId={job}_0", "StartTime=now")
    wait_until_gone(job)

    log = (tmp_path / f"adabatch-sweep-{job}_0.out").read_text()
    assert (preempted / "summary.json").exists(), log + run("scontrol", "show", "job", f"{job}_0")
    assert read_summary(preempted)["resumes"] == 1 and read_summary(twin)["resumes"] == 0
    assert "requeueing" in log
    strip = lambda records: [{k: v for k, v in r.items() if k not in TIMES} for r in records]  # noqa: E731
    assert strip(read_metrics(preempted)) == strip(read_metrics(twin))
    assert strip([read_summary(preempted)]) == strip([read_summary(twin)])
    model, expected = (torch.load(d / MODEL_FILE) for d in (preempted, twin))
    assert all(torch.equal(model[k], expected[k]) for k in expected)


@pytest.mark.parametrize("parallel", [
    (),
    ("train.parallel=fsdp", "batch_size.engine=local", "batch_size.max=64"),
], ids=["ddp", "fsdp"])
def test_the_multi_node_template_runs_a_ddp_run(parallel, tmp_path):
    """slurm/ddp.sbatch on the one local node: srun, then torchrun with two CPU processes (gloo); with
    train.parallel=fsdp the model is sharded and the norm test takes its statistics from the parts."""
    env = {**ENV, "NPROC_PER_NODE": "2", "RUN_DIR": str(tmp_path / "run")}
    job = run("sbatch", "--parsable", "--cpus-per-task=2", f"--output={tmp_path}/ddp-%j.out", "slurm/ddp.sbatch",
              *(TINY_RUN if not parallel else [a.replace("batch_size=constant", "batch_size=norm") for a in TINY_RUN]),
              *parallel, env=env).strip()
    wait_until_gone(job)
    summary = read_summary(tmp_path / "run")
    assert (summary["status"], summary["world_size"]) == ("completed", 2), (tmp_path / f"ddp-{job}.out").read_text()
    if parallel:
        tested = [r for r in read_metrics(tmp_path / "run", "train") if r.get("tested")]
        assert tested and all(r["statistics_source"] == "parts" and r["parts"] >= 2 for r in tested)
