"""`python src/train.py ...` as a user runs it, in a subprocess."""
import os
import subprocess
import sys

from helpers import ROOT

from adabatch.run.records import read_metrics, read_summary


def run_train(*overrides: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, str(ROOT / "src" / "train.py"), *overrides],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


def test_cli_trains_and_logs_to_wandb_offline_without_a_key(tmp_path):
    env = {"HOME": str(tmp_path / "home"), "WANDB_API_KEY": ""}  # no key, no netrc: auto -> offline
    result = run_train(
        "logger=wandb", "device=cpu", "train.samples=800", "train.eval_every=400",
        "batch_size=stagewise", "batch_size.initial=8", "batch_size.max=64",
        f"hydra.run.dir={tmp_path / 'run'}", env_extra=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "run"
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["samples"] >= 800
    sizes = [r["batch_size"] for r in read_metrics(run_dir, "train")]
    assert sizes[0] == 8 and sizes[-1] == 64 and sorted(sizes) == sizes
    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and any(offline_runs[0].glob("*.wandb"))
    assert (run_dir / "train.log").read_text().count("eval at step") >= 3


def test_cli_bad_choice_is_one_clear_line(tmp_path):
    result = run_train("optimizer=adagrad", "optimizer._target_=torch.optim.Lion", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert "error: optimizer._target_=torch.optim.Lion cannot be imported (" in result.stderr


def test_an_error_in_mid_run_is_reported_as_an_error_not_as_a_bad_config(tmp_path):
    """Exit code 2 says "bad config, nothing written": a run that fails after writing records must not say so."""
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "tests/failing_step_worker.py", "3", "device=cpu", "batch_size=constant", "batch_size.initial=16",
         "train.samples=400", "train.eval_every=200",
         f"hydra.run.dir={run_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "ValueError: a bug at step 3" in result.stderr and "error: a bug" not in result.stderr
    assert [r["step"] for r in read_metrics(run_dir, "train")] == [1, 2]  # what the run wrote stays
