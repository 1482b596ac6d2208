"""`make gpu-check`: the first thing to run on a GPU node (under 10 minutes). Each check is a real
command of this project; the script prints a pass/fail table and writes every command's output to
results/gpu-check/<host>.log, the file to attach to an issue when a check fails.

    python -m adabatch_bench.gpu_check          # on a GPU node
    python -m adabatch_bench.gpu_check --device cpu --only quickstart-fp32 quickstart-bf16   # the same checks on the CPU
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from adabatch_bench import ROOT

PY = sys.executable
QUICKSTART_ACCURACY = 0.9  # the quickstart reaches ~0.97; below 0.9 something is wrong


@dataclass
class Check:
    name: str
    command: list[str]
    timeout_s: int
    run_dir: Path | None = None  # a training run: pass also needs its summary's accuracy
    needs_gpus: int = 0


def checks(device: str, work: Path, samples: int | None) -> list[Check]:
    quick = ["experiment=quickstart", f"device={device}", "train.progress_every_s=600"]
    if samples:
        quick += [f"train.samples={samples}", f"train.eval_every={samples}"]

    def quickstart(name: str, *extra: str) -> Check:
        run_dir = work / name
        return Check(name, [PY, "src/train.py", *quick, *extra, f"hydra.run.dir={run_dir}"], 300, run_dir)

    torchrun = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return [
        quickstart("quickstart-fp32"),
        quickstart("quickstart-bf16", "train.precision=bf16"),
        quickstart("quickstart-compile", "train.compile=true"),
        quickstart("quickstart-auto-micro", "batch_size.max_micro=auto"),
        Check("bench-subset", [PY, "-m", "adabatch_bench.bench", "--device", device, "--models", "resnet18", "vit",
                               "--sizes", "128", "512", "--repeats", "3", "--out", str(ROOT / "results" / "bench")], 240),
        Check("smoke-paper-subset", [PY, "-m", "adabatch_bench.smoke_paper", "--subset", "--device", device, "--micro", "auto"], 240),
        Check("torchrun-2-gpus", [*torchrun, "src/train.py", *quick, f"hydra.run.dir={work / 'torchrun'}"],
              300, work / "torchrun", needs_gpus=2),
    ]


def environment(device: str) -> str:
    lines = [f"host: {platform.node()}", f"python: {sys.version.split()[0]}", f"torch: {torch.__version__}",
             f"CUDA (torch): {torch.version.cuda}", f"cuda available: {torch.cuda.is_available()}"]
    for index in range(torch.cuda.device_count()):
        total = torch.cuda.get_device_properties(index).total_memory
        lines.append(f"GPU {index}: {torch.cuda.get_device_name(index)}, {total / 2**30:.0f} GiB")
    if device == "cuda":
        try:
            lines.append(subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout)
        except (OSError, subprocess.TimeoutExpired) as error:
            lines.append(f"nvidia-smi: {error}")
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        lines.append(f"commit: {commit}")
    except OSError:
        pass
    return "\n".join(lines)


def run_check(check: Check, gpus: int, log) -> tuple[str, str, float]:
    """(status, detail, seconds): status pass | FAIL | skip."""
    if gpus < check.needs_gpus:
        return "skip", f"needs {check.needs_gpus} GPUs, this node has {gpus}", 0.0
    log.write(f"\n===== {check.name}\n$ {shlex.join(check.command)}\n")
    log.flush()
    started = time.perf_counter()
    try:
        done = subprocess.run(check.command, cwd=ROOT, capture_output=True, text=True, timeout=check.timeout_s,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    except subprocess.TimeoutExpired as error:
        log.write(f"{error.stdout or ''}{error.stderr or ''}\nTIMEOUT after {check.timeout_s} s\n")
        return "FAIL", f"timed out after {check.timeout_s} s", time.perf_counter() - started
    seconds = time.perf_counter() - started
    log.write(done.stdout + done.stderr + f"\nexit code {done.returncode}\n")
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        return "FAIL", f"exit {done.returncode}: {last[:160]}", seconds
    if check.run_dir is None:
        return "pass", "", seconds
    summary = json.loads((check.run_dir / "summary.json").read_text())
    accuracy = summary["final_test_acc"]
    detail = f"test acc {accuracy:.4f}, {summary['steps']} steps, {summary['train_time_s']:.1f} s training"
    if "max_micro_auto" in summary:
        detail += f", max_micro=auto chose {summary['max_micro_auto']['max_micro']}"
    return ("pass" if accuracy >= QUICKSTART_ACCURACY else "FAIL"), detail, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--only", nargs="*", help="check names to run (default: all)")
    parser.add_argument("--samples", type=int, default=None, help="quickstart budget (default: the quickstart's)")
    parser.add_argument("--log", type=Path, default=None, help="default: results/gpu-check/<host>.log")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu-check: torch sees no CUDA device here (torch.cuda.is_available() is False); run it on a GPU node, "
              "or --device cpu for the CPU's share", file=sys.stderr)
        return 2
    log_path = args.log or ROOT / "results" / "gpu-check" / f"{platform.node() or 'host'}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work, open(log_path, "w") as log:
        log.write(environment(args.device) + "\n")
        every = checks(args.device, Path(work), args.samples)
        unknown = set(args.only or ()) - {c.name for c in every}
        if unknown:
            parser.error(f"--only {sorted(unknown)}: no such check; the checks: {', '.join(c.name for c in every)}")
        selected = [c for c in every if not args.only or c.name in args.only]
        for check in selected:
            status, detail, seconds = run_check(check, gpus, log)
            rows.append((check.name, status, seconds, detail))
            print(f"{check.name:<22} {status:<5} {seconds:6.0f} s  {detail}", flush=True)
        log.write("\n===== summary\n" + "\n".join(f"{n}\t{s}\t{t:.0f} s\t{d}" for n, s, t, d in rows) + "\n")
    failed = [name for name, status, _, _ in rows if status == "FAIL"]
    print(f"\n{len(rows) - len(failed)} of {len(rows)} checks passed or skipped; log: {log_path}")
    if failed:
        print(f"failed: {', '.join(failed)}. Open an issue with the log attached; the last lines of each failed "
              "command are in it, under its name.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
