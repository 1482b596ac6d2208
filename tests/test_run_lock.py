"""A run owns its run directory: a second process started on it while it runs (a second terminal, a
requeued SLURM task whose first copy still runs) is refused at once, before it imports torch, and touches
nothing; a holder killed by SIGKILL leaves no lock behind, and the next start resumes the run. Real
processes: the holder, the CLI refused, the run resumed; two more refused starts go through the CLI's
entry point in this one."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from helpers import ROOT
from train_cli import refused

from adabatch.run.checkpoint import CHECKPOINT_FILE
from adabatch.run.records import METRICS_FILE

# Long enough not to end while a test looks at it (the tests stop it): a run of about half an hour.
RUN = ["experiment=quickstart", "device=cpu", "batch_size.max=16", "train.samples=400000", "train.eval_every=100000",
       "train.checkpoint_every=400", "train.progress_every_s=600"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def start(run_dir: Path, *extra: str, env: dict[str, str] = ENV) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "src/train.py", *RUN, *extra, f"hydra.run.dir={run_dir}"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def without_torch(tmp_path: Path) -> dict[str, str]:
    """ENV with a `torch` first on the path that fails to import: a process that gets by without torch."""
    (tmp_path / "no_torch" / "torch").mkdir(parents=True)
    (tmp_path / "no_torch" / "torch" / "__init__.py").write_text("raise ImportError('torch imported')\n")
    return {**ENV, "PYTHONPATH": str(tmp_path / "no_torch")}


def wait_until(condition, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"waited {timeout} s"
        time.sleep(0.1)


def grown(path: Path) -> Callable[[], bool]:
    size = path.stat().st_size
    return lambda: path.stat().st_size > size


def snapshot(run_dir: Path) -> dict[str, tuple[int, str]]:
    return {p.name: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(run_dir.iterdir())}


def refusal(returncode: int, stderr: str, holder: int) -> str:
    lines = stderr.strip().splitlines()
    assert returncode == 2 and len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith("error: ") and f"is in use by pid {holder} on " in lines[0], lines[0]
    return lines[0]


def test_a_second_process_is_refused_and_a_killed_holder_leaves_no_lock(tmp_path, capsys):
    run_dir = tmp_path / "run"
    first = start(run_dir)
    try:
        wait_until((run_dir / CHECKPOINT_FILE).exists, first)
        os.kill(first.pid, signal.SIGSTOP)  # hold the first run still, so that its files can be compared
        before = snapshot(run_dir)
        second = start(run_dir, env=without_torch(tmp_path))  # the same run, refused before torch's imports
        _, stderr = second.communicate(timeout=240)
        refusal(second.returncode, stderr, first.pid)
        for extra in (["resume=never"], ["seed=1"]):  # a fresh start, another run
            refusal(*refused([*RUN, *extra, f"hydra.run.dir={run_dir}"], capsys), first.pid)
        assert snapshot(run_dir) == before
        going_on = grown(run_dir / METRICS_FILE)
        os.kill(first.pid, signal.SIGCONT)
        wait_until(going_on, first)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()

    third = start(run_dir, "resume=must")  # the kernel released the dead holder's lock: this one resumes the run
    try:
        wait_until(grown(run_dir / METRICS_FILE), third)
        third.send_signal(signal.SIGTERM)  # it checkpoints and stops
        _, stderr = third.communicate(timeout=240)
    finally:
        if third.poll() is None:
            third.kill()
            third.wait()
    assert third.returncode == 75, stderr[-3000:]
    assert torch.load(run_dir / CHECKPOINT_FILE, weights_only=False)["loop"]["resumes"] == 1
    records = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]  # none corrupt
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == list(range(1, len(steps) + 1))
    assert not (run_dir / ".lock").exists()


def test_the_array_script_does_not_requeue_a_task_refused_for_a_busy_run_directory(tmp_path):
    """slurm/array.sbatch, run as SLURM runs it (without SLURM: the #SBATCH lines are comments), on the
    directory of a task whose first copy still runs: refused, exit 2, no requeue."""
    sweep_file, runs = tmp_path / "twice.txt", tmp_path / "runs"
    sweep_file.write_text(" ".join(RUN) + "\n")
    first = start(runs / "0")
    try:
        wait_until((runs / "0" / CHECKPOINT_FILE).exists, first)
        env = {**ENV, "SWEEP_DIR": str(runs), "PYTHON_ENV": str(Path(sys.executable).parent.parent),
               "SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_JOB_ID": "1", "SLURM_RESTART_COUNT": "1"}
        task = subprocess.run(["bash", "slurm/array.sbatch", str(sweep_file)], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=240)
        assert task.returncode == 2, task.stdout + task.stderr
        refusal(task.returncode, task.stderr, first.pid)
        assert "requeue" not in task.stdout + task.stderr
        assert first.poll() is None
    finally:
        first.kill()
        first.wait()
