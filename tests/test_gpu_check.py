"""make gpu-check's script, run for its CPU share: the same commands, the table and the log."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from helpers import ROOT

SCRIPT = [sys.executable, "-m", "adabatch_bench.gpu_check"]


def test_the_gpu_check_runs_its_checks_and_writes_a_log_for_an_issue(tmp_path):
    log = tmp_path / "check.log"
    done = subprocess.run([*SCRIPT, "--device", "cpu", "--only", "quickstart-fp32", "quickstart-auto-micro",
                           "torchrun-2-gpus", "--samples", "15000", "--log", str(log)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("quickstart-fp32") and " pass " in line for line in lines)
    assert any(line.startswith("quickstart-auto-micro") and "max_micro=auto chose" in line for line in lines)
    assert any(line.startswith("torchrun-2-gpus") and " skip " in line for line in lines)  # no GPUs here
    text = log.read_text()
    assert f"torch: {torch.__version__}" in text and "===== quickstart-fp32" in text and "===== summary" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_the_check_says_so_in_one_line():
    done = subprocess.run(SCRIPT, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "no CUDA device" in done.stderr and "--device cpu" in done.stderr
