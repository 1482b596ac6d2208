"""`make smoke-paper`: every run of `make reproduce` takes real steps at its true shapes (see
adabatch_bench/smoke.py), on stand-in pixels; a table of step times, peak memory and a GPU-hour
estimate goes to results/smoke/<device>.md (and .json). Exit 1 if any run failed a check.

    python -m adabatch_bench.smoke_paper                # every paper run, on the CPU
    python -m adabatch_bench.smoke_paper --subset       # one tested run per model family
    python -m adabatch_bench.smoke_paper --device cuda --micro auto   # on a GPU node (make gpu-check)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from adabatch.data.standin import write_standin_dataset
from adabatch.device import describe, resolve_device
from adabatch.run.micro_batch import AUTO
from adabatch_bench import ROOT
from adabatch_bench.smoke import MEMORY_GROWTH_ALLOWED, MICRO_BATCHES, TIMED_MICRO_BATCHES, matmul_flops_per_second, smoke_run

# Train splits of the true size (batches are capped at it); a small test split: nothing is evaluated.
STANDIN_SIZES = {"mnist": (60000, 100), "cifar10": (50000, 100), "cifar100": (50000, 100)}
# Micro-batches on the CPU: small enough that 4 of them take seconds at the true shapes.
CPU_MICRO = {"logistic": 4096, "cnn": 256, "resnet18": 16, "resnet50": 16, "vit": 64}
CPU_FIRST_STEP_CAP = 1024  # the CPU's first step of a large-batch baseline (8192 examples of ResNet-50: minutes)
SUBSET = ("mnist_logistic/norm_test-adagrad", "mnist_cnn/norm_test-adagrad", "cifar10_resnet18/norm_test-adagrad",
          "cifar100_resnet50/augmented_test-sgdm", "cifar10_vit/augmented_test-adamw")
SEEDS = 3  # seeds per run in make reproduce
# The estimate's yardstick: a GPU sustaining this many float32 (TF32) FLOP/s on the runs' steps, about a
# fifth of an H100's or H200's dense TF32 peak. CPU seconds are scaled by (this / the CPU's measured matmul rate).
GPU_FLOPS = 1.0e14


def paper_run_ids() -> list[str]:
    output = subprocess.run(["make", "-s", "--no-print-directory", "paper-run-ids"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    return output.split()


def overrides(run: str, data_dir: Path, device: str, micro: int | str) -> list[str]:
    experiment, method_optimizer = run.split("/")
    method, optimizer = method_optimizer.split("-")
    return [f"experiment={experiment}", f"method={method}", f"optimizer={optimizer}", "seed=0",
            f"data_dir={data_dir}", "dataset.download=false", f"device={device}", f"batch_size.max_micro={micro}"]


def write_standins(data_dir: Path) -> None:
    for name, (train, test) in STANDIN_SIZES.items():
        marker = data_dir / f".{name}-{train}"
        if not marker.exists():
            print(f"writing stand-in {name} ({train} random training images) under {data_dir}", flush=True)
            write_standin_dataset(name, data_dir, train=train, test=test)
            marker.touch()


def machine(device: torch.device) -> str:
    software = f"torch {torch.__version__}" + (f", CUDA {torch.version.cuda}" if device.type == "cuda" else "")
    return f"{describe(device)}, {torch.get_num_threads()} threads, {software}"


def mib(value: int) -> str:
    return f"{value / 2**20:,.1f}"


def table(results: list[dict]) -> list[str]:
    counts = ", ".join(map(str, MICRO_BATCHES))
    lines = [f"| run | parameters | first step: b | s | micro-batch | plain: peak MiB at {counts} micro-batches | "
             f"plain ms/example | tested: peak MiB at {counts} | tested ms/example | checks |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        first = f"{r['first_batch']}{' tested' if r['first_tested'] else ''}"
        if r["first_batch"] != r["initial_batch"]:
            first += f" (of {r['initial_batch']})"
        kinds = []
        for kind in (r["plain"], r["tested"]):
            if kind is None:
                kinds += ["-", "-"]
            else:
                peaks = [kind["peak_bytes"][k] for k in sorted(kind["peak_bytes"], key=int)]
                kinds += [", ".join(map(mib, peaks)), f"{kind['seconds_per_example'] * 1e3:.3g}"]
        checks = "; ".join(r["problems"]) or "pass"
        lines.append(f"| {r['run']} | {r['parameters']:,} | {first} | {r['first_seconds']:.2f} | {r['micro']} | "
                     f"{' | '.join(kinds)} | {checks} |")
    return lines


def estimate(results: list[dict], budgets: dict[str, int], ratio: float) -> list[str]:
    hours = defaultdict(float)
    for r in results:
        kind = r["tested"] or r["plain"]  # a tested run as if every step were tested: an upper bound
        hours[r["run"].split("/")[0]] += kind["seconds_per_example"] * budgets[r["run"]] * SEEDS / 3600
    lines = ["| experiment | runs x seeds | CPU-hours (extrapolated) | GPU-hours (estimate) |", "|---|---:|---:|---:|"]
    for experiment, cpu_hours in hours.items():
        runs = sum(r["run"].startswith(experiment + "/") for r in results)
        lines.append(f"| {experiment} | {runs} x {SEEDS} | {cpu_hours:,.0f} | {cpu_hours / ratio:,.1f} |")
    lines.append(f"| all | {len(results)} x {SEEDS} | {sum(hours.values()):,.0f} | {sum(hours.values()) / ratio:,.1f} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--micro", default=None, help="micro-batch size, or auto (default: per model on the CPU, auto on CUDA)")
    parser.add_argument("--runs", nargs="*", help="run ids <experiment>/<method>-<optimizer> (default: make paper-run-ids)")
    parser.add_argument("--subset", action="store_true", help="one tested run per model family")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data" / "standin")
    parser.add_argument("--out", type=Path, default=None, help="default: results/smoke/<device>[-subset].md")
    args = parser.parse_args()

    device = resolve_device(args.device)
    runs = list(SUBSET) if args.subset else (args.runs or paper_run_ids())
    out = args.out or ROOT / "results" / "smoke" / f"{device.type}{'-subset' if args.subset else ''}.md"
    write_standins(args.data_dir)
    first_cap = CPU_FIRST_STEP_CAP if device.type == "cpu" else None
    results, budgets = [], {}
    started = time.perf_counter()
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        for run in runs:
            model = compose("train", overrides=overrides(run, args.data_dir, args.device, 1)).model.name
            micro = args.micro or (CPU_MICRO[model] if device.type == "cpu" else AUTO)
            micro = micro if micro == AUTO else int(micro)
            cfg = compose("train", overrides=overrides(run, args.data_dir, args.device, micro))
            budgets[run] = cfg.train.samples
            tick = time.perf_counter()
            result = smoke_run(run, cfg, micro, first_cap).record()
            results.append(result)
            status = "; ".join(result["problems"]) or "pass"
            print(f"{run}: {status} ({time.perf_counter() - tick:.0f} s)", flush=True)
    ratio = GPU_FLOPS / matmul_flops_per_second(device)
    failed = [r["run"] for r in results if r["problems"]]
    counts = ", ".join(map(str, MICRO_BATCHES))
    lines = [
        f"# make smoke-paper{' --subset' if args.subset else ''}: real steps of every paper run at its true shapes",
        "",
        f"Machine: {machine(device)}; device {device.type}; {time.perf_counter() - started:.0f} s in all.",
        "",
        "**Stand-in pixels**: every dataset is random uint8 images at its true example shape, class count and "
        "training-set size, in its genuine file format. The numbers below are about steps (time, memory), never accuracy.",
        "",
        "Each run is built from its config as `src/train.py` builds it, then takes real optimizer steps: its first "
        f"step at its initial batch size (on the CPU at most {CPU_FIRST_STEP_CAP}), then plain steps (and tested "
        f"steps, where its policy tests) of {counts} micro-batches. Checks: every loss and statistic is finite, "
        f"and peak memory at {MICRO_BATCHES[-1]} micro-batches is at most {MEMORY_GROWTH_ALLOWED}x that at "
        f"{MICRO_BATCHES[-2]} (memory grows with the micro-batch, not the batch). Peak memory: bytes allocated by "
        "the step beyond what was allocated before it, measured in a step of its own (on the CPU the count slows "
        f"the step); ms/example: the faster of two other steps of {TIMED_MICRO_BATCHES} micro-batches.",
        "",
        *table(results),
        "",
        "## GPU-hours for make reproduce (an estimate)",
        "",
        f"CPU seconds per example (of each run's step of {TIMED_MICRO_BATCHES} micro-batches; tested runs as if every step were tested, an "
        f"upper bound) x the run's budget x {SEEDS} seeds, scaled by the ratio of an assumed GPU's sustained rate "
        f"({GPU_FLOPS:.0e} FLOP/s, about a fifth of an H100/H200's dense TF32 peak) to this device's measured float32 "
        f"matmul rate ({GPU_FLOPS / ratio / 1e9:,.0f} GFLOP/s): x1/{ratio:,.0f}. An estimate: small micro-batches "
        "use a GPU less well than a matmul does, and the first GPU run replaces it with a measurement.",
        "",
        *estimate(results, budgets, ratio),
        "",
        f"Result: {'FAILED: ' + ', '.join(failed) if failed else 'every run passed'}.",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"machine": machine(device), "device": device.type,
                                                    "data": "stand-in pixels", "runs": results}, indent=1) + "\n")
    print("\n".join(lines))
    print(f"written: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
