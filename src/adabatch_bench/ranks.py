"""What a tested step of `batch_size.engine=local` costs next to a plain DDP step, on 2 ranks (issue 34).

    .venv/bin/python -m adabatch_bench.ranks                       # results/bench/ranks_<device>.md, .csv
    .venv/bin/python -m adabatch_bench.ranks --out results/bench/repeat

It launches itself under torchrun (gloo on the CPU), 2 ranks of one thread each. Each rank builds the run
of each experiment as `src/train.py` would (`build_experiment`: the model under DDP, the data,
`AdaptiveBatch` with engine=local) and takes steps of one global batch of `--size` examples, each rank
its share in one part (M = 2): plain (`adaptive.gradient(tested=False)`, DDP's all-reduce) and tested
(the part statistics: each rank's squared norms before the all-reduce, a few scalars after it). A step
is zero_grad, the gradient and the optimizer's step; `--steps` of them are timed between barriers, so
a round times the slower rank. After two warm-up rounds, plain and tested take turns in a random order
per round (the same on every rank); the time ratio is the median over rounds of tested over plain in
the same round, and rounds continue until it is known within `--ratio-error` (two standard errors of a
median, as in `adabatch_bench.bench`) or the rounds have taken `--max-seconds`.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

from adabatch.device import describe
from adabatch.distributed import join_process_group, run_as_rank
from adabatch_bench import ROOT
from adabatch_bench.bench import known_within

EXPERIMENTS = {"quickstart": "the digits CNN", "kjv_gpt": "the GPT"}  # what each experiment's row times
RANKS = 2
FIELDS = ("device", "experiment", "model", "ranks", "batch_size", "parts", "plain_ms", "tested_ms", "time_ratio",
          "ratio_range", "rounds")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    parser.add_argument("--size", type=int, default=128, help="the global batch, split over the ranks")
    parser.add_argument("--steps", type=int, default=3, help="steps per configuration and round")
    parser.add_argument("--min-rounds", type=int, default=10)
    parser.add_argument("--ratio-error", type=float, default=0.01)
    parser.add_argument("--max-seconds", type=float, default=240.0, help="per experiment")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # under torchrun: rank 0 writes here
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        run_as_rank(lambda: worker(args))
    if "kjv_gpt" in args.experiments and not (args.data_dir / "kjv.txt").exists():
        print(f"error: the kjv_gpt row needs {args.data_dir / 'kjv.txt'}; run `make data-kjv` first, "
              "or pass --experiments quickstart", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        result_file = Path(scratch) / "result.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={RANKS}",
                   "-m", "adabatch_bench.ranks", "--worker", str(result_file), *(argv if argv is not None else sys.argv[1:])]
        done = subprocess.run(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if done.returncode != 0:
            print(f"error: the {RANKS} ranks failed (exit {done.returncode}); their output is above", file=sys.stderr)
            return 1
        found = json.loads(result_file.read_text())
    write_tables(found["rows"], found["device"], args)
    for row in found["rows"]:
        print(f"engine=local on {RANKS} ranks, {row['experiment']} b={row['batch_size']}: {row['time_ratio']}x plain DDP")
    return 0


def worker(args: argparse.Namespace) -> None:
    from hydra import compose, initialize_config_dir

    from adabatch.run.experiment import build_experiment

    torch.set_num_threads(1)
    world = join_process_group()
    rows = []
    for name in args.experiments:
        overrides = [f"experiment={name}", "batch_size.engine=local", "batch_size.parts=2", "device=cpu", f"data_dir={args.data_dir}",
                     f"batch_size.initial={args.size}", f"batch_size.max_micro={args.size}", "logger=none"]
        with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
        exp = build_experiment(cfg, world)
        batch = exp.data.draw(args.size)
        rows.append(time_rounds(exp, batch, args, name, world.rank))
    if world.rank == 0:
        args.worker.write_text(json.dumps({"device": "cpu", "rows": rows}))


def timed_steps(exp, batch, tested: bool, steps: int) -> float:
    dist.barrier()
    start = time.perf_counter()
    for _ in range(steps):
        exp.optimizer.zero_grad(set_to_none=True)
        exp.adaptive.gradient(exp.data, batch, tested)
        exp.optimizer.step()
    dist.barrier()
    return time.perf_counter() - start


def time_rounds(exp, batch, args: argparse.Namespace, name: str, rank: int) -> dict:
    order = random.Random(0)  # the same order on every rank: their collectives must pair up
    for tested in (False, True, False, True):  # warm-up
        timed_steps(exp, batch, tested, 1)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    started = time.perf_counter()
    while True:
        for tested in order.sample([False, True], 2):
            seconds[tested].append(timed_steps(exp, batch, tested, args.steps))
        ratios = [t / p for t, p in zip(seconds[True], seconds[False])]
        enough = len(ratios) >= args.min_rounds and (known_within(ratios, args.ratio_error)
                                                     or time.perf_counter() - started > args.max_seconds)
        decided = [enough]
        dist.broadcast_object_list(decided, src=0)  # rank 0's clock and ratios decide for all
        if decided[0]:
            break
    parts = exp.adaptive.statistics_source()["parts"]  # of the last tested step
    per_step = {tested: 1000 * statistics.median(s) / args.steps for tested, s in seconds.items()}
    return {
        "device": describe(torch.device("cpu")), "experiment": name, "model": exp.model.__class__.__name__, "ranks": RANKS, "batch_size": len(batch),
        "parts": parts, "plain_ms": f"{per_step[False]:.1f}", "tested_ms": f"{per_step[True]:.1f}",
        "time_ratio": f"{statistics.median(ratios):.3f}", "ratio_range": f"{min(ratios):.2f}-{max(ratios):.2f}",
        "rounds": len(ratios),
    }


def write_tables(rows: list[dict], device: str, args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / f"ranks_{device}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    header = ["experiment", "model", "ranks", "b", "parts", "plain DDP step (ms)", "tested step (ms)", "x plain",
              "x plain, min-max over rounds", "rounds"]
    lines = [
        f"# A tested step of engine=local against a plain DDP step ({RANKS} ranks, {device})",
        "",
        f"Written by `{' '.join(['python -m adabatch_bench.ranks', *sys.argv[1:]])}` on {describe(torch.device(device))}, "
        f"torch {torch.__version__}, {RANKS} ranks of 1 thread (gloo). A step: zero_grad, the gradient of the global "
        f"batch (each rank its share, one part each) and the optimizer's step, {args.steps} per configuration and "
        f"round, timed between barriers. x plain: median over rounds of the ratio to the plain step of the same round; "
        f"rounds until it was known within {args.ratio_error:.0%} (two standard errors of a median) or had taken "
        f"{args.max_seconds:g} s.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(str(row[k]) for k in FIELDS[1:]) + " |" for row in rows),  # the device: in the header
    ]
    (args.out / f"ranks_{device}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
