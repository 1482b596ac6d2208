"""What a tested step costs next to a plain training step, for each statistics engine and test.

    .venv/bin/python -m adabatch_bench.bench             # the committed table (make bench): results/bench/<device>.md, .csv
    .venv/bin/python -m adabatch_bench.bench --sizes 32 128 512 --per-example-models cnn resnet18 vit  # everything
    .venv/bin/python -m adabatch_bench.bench --models vit --sizes 128 --engines ghost --out /tmp/bench

A plain step is the forward and backward of a batch (`accumulate_gradient`); a tested step is the
same batch through `gradient_with_statistics` with an engine and a test's needs. Each engine is timed
in a process of its own (`--timing-only`), next to the plain step: the ghost engine in one, each
per-example engine in another, so that no step is timed after another engine's multi-GiB allocations.
In a process, after a warm-up, the configurations take turns for `--repeats` rounds, in a new random
order each round, the slow per-example engines in the first `--per-example-repeats` rounds only. A
configuration's time ratio is the median over its rounds of its time over the plain step's in the same
round (shared machines drift by tens of percent within minutes; a round sees one state of the machine);
the table gives the smallest and largest of those per-round ratios next to it. More rounds follow
until every ratio of this project's engines is known within `--ratio-error` of itself (two standard
errors of a median, from the spread of its per-round ratios), while a model's timed rounds have taken
less than `--max-seconds`, up to 10 times `--repeats`: with 7 or 8 rounds for ResNet-18 and the ViT, two
runs of `make bench` differed by up to a quarter.
Peak memory is what a step adds above the memory in use before it, over the plain step's: on CUDA
the allocator's peak, measured in this process; on the CPU the peak resident set size, measured in a
child process (`--memory-only`) started with glibc's mmap threshold fixed at 128 KiB. With glibc's
default, the threshold rises to 32 MiB as blocks are freed and freed blocks below it stay resident, so
the resident set does not follow the live tensors (the same plain CNN step read 43 to 76 MiB); fixed,
every tensor above 128 KiB is mapped and unmapped, and the readings repeat. The fixed threshold also
slows steps (every step faults its memory in afresh), which is why the timing stays in this process.
The models are the configs' own (model=<name>, dataset=cifar10) on random CIFAR-sized images; the GPT is
the kjv_gpt overlay's, on 32 random windows of its block size (the next-token loss, per sequence).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import ctypes
import gc
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from adabatch.components import shipped
from adabatch.data import ArrayDataset, TrainingData, build_augmentation
from adabatch.device import autocast as make_autocast
from adabatch.device import describe, synchronize
from adabatch.data.text import BYTE_VOCABULARY, TextDataset
from adabatch.models import model_from_config
from adabatch.tasks import task_of
from adabatch.run.memory import free_bytes
from adabatch.stats import ENGINES, build_engine, gradient_with_statistics
from adabatch.step import accumulate_gradient
from adabatch_bench import ROOT
from adabatch_bench.anchors import ANCHORS, build_anchor

TESTS = ("norm", "inner_product", "augmented_inner_product", "coordinate_norm")
MODELS = ("cnn", "resnet18", "vit", "gpt")
# Models timed at one batch size whatever --sizes says: the GPT at 32 windows of kjv_gpt's block size.
FIXED_SIZES = {"gpt": 32}
GPT_EXPERIMENT = "kjv_gpt"  # the overlay whose model and block size the GPT row times
REPORTED_SIZE = 128  # the worst-overhead lines compare the models at this batch size
CIFAR_SHAPE = ((3, 32, 32), 10)  # the models are timed at CIFAR-10 shapes
# Engines that form every per-example gradient: this project's exact ones, and the anchors (anchors.py)
PER_EXAMPLE_ENGINES = ("opacus", "functorch", *ANCHORS)


@dataclass
class Result:
    model: str
    batch_size: int
    engine: str  # "plain" for the plain step
    test: str    # "" for the plain step
    seconds: float | None = None  # median
    ratio: float | None = None    # median over rounds of seconds / the plain step's seconds
    ratio_range: tuple[float, float] | None = None  # the smallest and largest of those per-round ratios
    rounds: int | None = None
    peak_bytes: int | None = None
    skipped: str = ""


MORE_ROUNDS = 10  # at most this many times --repeats rounds
MEMORY_CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}


def main() -> None:
    args = parse_args()
    if args.memory_only:
        print(json.dumps(measure_memory_here(args)))
        return
    devices = [args.device]
    if args.device == "auto":
        devices = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    if args.timing_only:
        print(json.dumps([asdict(r) for r in bench_device(torch.device(args.device), args)]))
        return
    for device in devices:
        results = []
        for group in engine_groups(args.engines):
            models = [m for m in args.models if group[0] not in PER_EXAMPLE_ENGINES or m in args.per_example_models]
            if models:  # the plain step's row from the first process that timed it
                timed = {(r.model, r.batch_size) for r in results if r.engine == "plain"}
                results += [r for r in time_in_child(device, group, models, args)
                            if r.engine != "plain" or (r.model, r.batch_size) not in timed]
            results += [Result(m, size, engine, test, skipped=f"not run on {m} (--per-example-models)")
                        for m in args.models if m not in models for size in sizes_of(m, args) for engine in group
                        for test in args.tests]
        results.sort(key=lambda r: (args.models.index(r.model), r.batch_size, r.engine != "plain",
                                    args.engines.index(r.engine) if r.engine != "plain" else -1,
                                    args.tests.index(r.test) if r.test else -1))
        write_tables(results, device, args)
        for line in worst_overheads(results, args):
            print(line)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--sizes", nargs="+", type=int, default=[REPORTED_SIZE])
    parser.add_argument("--engines", nargs="*", default=[*ENGINES, *ANCHORS], choices=[*ENGINES, *ANCHORS],
                        help="none: the plain step only; " + "; ".join(f"{k}: {v}" for k, v in ANCHORS.items()))
    parser.add_argument("--tests", nargs="+", default=list(TESTS), choices=TESTS)
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds after one warm-up round")
    parser.add_argument("--ratio-error", type=float, default=0.05,
                        help="more rounds (up to 10x --repeats) until every ratio of this project's engines is known "
                             "within this fraction of itself (two standard errors of the median)")
    parser.add_argument("--max-seconds", type=float, default=480.0,
                        help="no more rounds once a model's timed rounds have taken this long")
    parser.add_argument("--per-example-repeats", type=int, default=5,
                        help="of those rounds, how many time the per-example engines and anchors: at 2x to 30x a plain "
                             "step they dominate the run; their single rounds spread by up to half between two runs")
    parser.add_argument("--per-example-models", nargs="*", default=["cnn", "vit", "gpt"], choices=MODELS,
                        help="the models on which the per-example engines run (on 2 CPU cores ResNet-18's take about a "
                             "minute a step at b=128: half an hour for its rows)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="bf16: autocast (CUDA or CPU)")
    parser.add_argument("--memory-fraction", type=float, default=0.5,
                        help="skip a per-example engine whose gradients would need more than this share of free memory")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    parser.add_argument("--timing-only", action="store_true",
                        help="time the given engines here and print the results as JSON (what each engine's child runs)")
    parser.add_argument("--memory-only", action="store_true",
                        help="print the peak memory of every configuration as JSON (what the CPU bench's child runs)")
    args = parser.parse_args()
    for option in ("repeats", "per_example_repeats"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} {getattr(args, option)}: give at least 1 timed round")
    for option in ("ratio_error", "max_seconds"):
        if getattr(args, option) < 0:
            parser.error(f"--{option.replace('_', '-')} {getattr(args, option):g}: give 0 or more")
    return args


class Bench:
    """One model on one device: its plain step and, per engine, its tested steps, for any batch size."""

    def __init__(self, model_name: str, device: torch.device, args):
        self.device, self.args = device, args
        self.model = build_config_model(model_name).to(device)
        self.data = random_windows(self.model, FIXED_SIZES[model_name], device) if model_name == "gpt" \
            else random_cifar(max(args.sizes), device)
        self.loss = task_of(self.data.dataset).loss  # classification, or next-token over the GPT's windows
        # This project's engines: one per test, as in a run (ghost_measured chooses its forms on its first pass)
        anchors = {name: build_anchor(name, self.model, self.loss) for name in args.engines if name in ANCHORS}
        self.engines = {(name, test): anchors[name] if name in ANCHORS
                        else build_engine(name, copy.deepcopy(self.model), loss=self.loss)
                        for name in args.engines for test in args.tests}
        self.autocast = make_autocast(device, args.precision)
        self.n_params = sum(p.numel() for p in self.model.parameters())

    def steps(self, size: int) -> tuple[dict, dict]:
        """(configuration -> step, skipped configuration -> why) at this batch size."""
        batch, model, data, autocast, loss = self.data.draw(size), self.model, self.data, self.autocast, self.loss
        steps = {("plain", ""): lambda: accumulate_gradient(model, data, batch, size, autocast, loss=loss)}
        skipped = {}
        per_example_bytes = size * self.n_params * 4 * 2  # per-example gradients (float32), and a transient of their size
        for (name, test), engine in self.engines.items():
            if name in PER_EXAMPLE_ENGINES and per_example_bytes > self.args.memory_fraction * free_bytes(self.device):
                skipped[(name, test)] = f"needs ~{per_example_bytes / 2**30:.0f} GiB of per-example gradients"
                continue
            needs = shipped("batch_size", test).needs
            if name in ANCHORS:
                steps[(name, test)] = lambda e=engine, n=needs: anchor_step(e, data, batch, n, autocast)
            else:
                steps[(name, test)] = (lambda e=engine, n=needs: gradient_with_statistics(e, data, batch, size, n, "global", autocast))
        return steps, skipped

    def clear_gradients(self) -> None:
        for m in (self.model, *(e.model for e in self.engines.values())):
            m.zero_grad(set_to_none=True)

    def timed(self, step) -> float:
        self.clear_gradients()
        synchronize(self.device)
        start = time.perf_counter()
        step()
        synchronize(self.device)
        return time.perf_counter() - start

    def peak_memory(self, step) -> int:
        """What the step adds above the memory in use before it (CUDA: allocated; CPU: resident)."""
        self.clear_gradients()
        gc.collect()
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
            step()
            synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - before
        LIBC.malloc_trim(0)  # return freed memory, so that reusing it counts again
        before = proc_status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # restart the peak resident set size (VmHWM) from now
        step()
        return (proc_status_kib("VmHWM") - before) * 1024


def anchor_step(anchor, data, batch, needs, autocast):
    with autocast or contextlib.nullcontext():
        return anchor.step(*data.examples(batch), needs)


def bench_device(device: torch.device, args) -> list[Result]:
    results = []
    order = random.Random(0)
    for model_name in args.models:
        bench = Bench(model_name, device, args)
        for size in sizes_of(model_name, args):
            steps, skipped = bench.steps(size)
            print(f"{device.type} {model_name} b={size}: {len(steps)} configurations", file=sys.stderr, flush=True)
            times = {key: [] for key in steps}
            round_, timed = 0, 0.0  # round 0 warms up
            own = [key for key in steps if key[0] not in ("plain", *PER_EXAMPLE_ENGINES)]

            def known() -> bool:
                return all(known_within(per_round(times[key], times[("plain", "")]), args.ratio_error) for key in own)

            while round_ <= args.repeats or (own and not known() and timed < args.max_seconds
                                             and round_ <= MORE_ROUNDS * args.repeats):
                keys = [key for key in steps if key[0] not in PER_EXAMPLE_ENGINES or round_ <= args.per_example_repeats]
                for key in order.sample(keys, len(keys)):
                    seconds = bench.timed(steps[key])
                    if round_:
                        times[key].append(seconds)
                        timed += seconds
                round_ += 1
            if device.type == "cpu":
                peaks = measure_memory_in_child(model_name, size, sorted({e for e, _ in steps} - {"plain"}), args)
            else:  # after the warm-up round
                peaks = {key: bench.peak_memory(step) for key, step in steps.items()}
            plain = times[("plain", "")]
            for key, seconds in times.items():  # a per-example engine's rounds are the first ones
                ratios = per_round(seconds, plain)
                results.append(Result(model_name, size, *key, statistics.median(seconds), statistics.median(ratios),
                                      (min(ratios), max(ratios)), len(seconds), peaks[key]))
            for key, why in skipped.items():
                results.append(Result(model_name, size, *key, skipped=why))
        del bench
        gc.collect()
    return results


def per_round(seconds: list[float], plain: list[float]) -> list[float]:
    """A configuration's time over the plain step's, round by round (its rounds are the first ones)."""
    return [t / p for t, p in zip(seconds, plain)]


def known_within(ratios: list[float], error: float) -> bool:
    """Whether the median of these per-round ratios is known within `error` of itself: two standard errors
    of a median, 1.25 sigma / sqrt(rounds), sigma from the median absolute deviation (a round in which the
    machine stalled moves it no more than any other outlying round)."""
    middle = statistics.median(ratios)
    sigma = 1.4826 * statistics.median(abs(r - middle) for r in ratios)
    return 2 * 1.2533 * sigma / math.sqrt(len(ratios)) <= error * middle


def engine_groups(engines: list[str]) -> list[list[str]]:
    """The engines timed together in one process: ghost (with the plain step), each per-example engine apart."""
    own = [[e] for e in engines if e in PER_EXAMPLE_ENGINES]
    shared = [e for e in engines if e not in PER_EXAMPLE_ENGINES]
    return [shared, *own] if shared or not own else own


def time_in_child(device: str, engines: list[str], models: list[str], args) -> list[Result]:
    command = [sys.executable, "-m", __spec__.name, "--timing-only", "--device", device, "--models", *models,
               "--sizes", *map(str, args.sizes), "--tests", *args.tests, "--precision", args.precision,
               "--repeats", str(args.repeats), "--ratio-error", str(args.ratio_error),
               "--max-seconds", str(args.max_seconds),
               "--per-example-repeats", str(args.per_example_repeats),
               "--memory-fraction", str(args.memory_fraction), "--engines", *engines]
    child = subprocess.run(command, stdout=subprocess.PIPE, text=True)  # its progress lines go to our stderr
    if child.returncode:
        raise RuntimeError(f"the timing child {' '.join(command)} failed (exit {child.returncode})")
    return [Result(**{**r, "ratio_range": tuple(r["ratio_range"]) if r["ratio_range"] else None})
            for r in json.loads(child.stdout)]


def measure_memory_in_child(model: str, size: int, engines: list[str], args) -> dict[tuple[str, str], int]:
    command = [sys.executable, "-m", __spec__.name, "--memory-only", "--device", "cpu", "--models", model, "--sizes", str(size),
               "--tests", *args.tests, "--precision", args.precision, "--memory-fraction", "inf", "--engines", *engines]
    child = subprocess.run(command, env={**os.environ, **MEMORY_CHILD_ENV}, capture_output=True, text=True)
    if child.returncode:
        raise RuntimeError(f"the memory child {' '.join(command)} failed:\n{child.stderr}")
    return {(engine, test): peak for engine, test, peak in json.loads(child.stdout)}


def measure_memory_here(args) -> list[tuple[str, str, int]]:
    """Every configuration's peak, after a warm-up call (a first call makes one-time allocations: the
    plain CNN step's first call reads 51 MiB, later ones 30): of its own, or for the slow per-example
    engines, whose peaks are tens of times a plain step's, one of the engine's."""
    peaks, warm = [], set()
    (model_name,), (size,) = args.models, args.sizes
    bench = Bench(model_name, torch.device(args.device), args)
    steps, _ = bench.steps(size)
    for (engine, test), step in steps.items():
        warm_key = engine if engine in PER_EXAMPLE_ENGINES else (engine, test)
        if warm_key not in warm:
            bench.timed(step)
            warm.add(warm_key)
        peaks.append((engine, test, bench.peak_memory(step)))
    return peaks


def sizes_of(model_name: str, args) -> list[int]:
    return [FIXED_SIZES[model_name]] if model_name in FIXED_SIZES else args.sizes


def build_config_model(name: str) -> torch.nn.Module:
    """The config's model at CIFAR-10 shapes; the GPT as the kjv_gpt overlay builds it (byte tokens)."""
    overrides = [f"experiment={GPT_EXPERIMENT}"] if name == "gpt" else [f"model={name}", "dataset=cifar10"]
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    torch.manual_seed(0)
    if name == "gpt":
        return model_from_config(OmegaConf.to_container(cfg.model, resolve=True), (cfg.dataset.block_size,), BYTE_VOCABULARY)
    return model_from_config(OmegaConf.to_container(cfg.model, resolve=True), *CIFAR_SHAPE)


def random_windows(model: torch.nn.Module, n: int, device: torch.device) -> TrainingData:
    """n random windows of the GPT's block size over its vocabulary, as a text dataset (next-token task)."""
    g = torch.Generator().manual_seed(0)
    windows = torch.randint(0, model.vocab_size, (n, model.block_size + 1), generator=g)
    x, y = windows[:, :-1].contiguous(), windows[:, 1:].contiguous()
    dataset = TextDataset(name="random", train_x=x, train_y=y, test_x=x[:1], test_y=y[:1], num_classes=model.vocab_size,
                          max_value=1.0, mean=(0.0,), std=(1.0,), block_size=model.block_size, tokenizer="random ids",
                          source="random", sha256="", train_tokens=windows.numel(), validation_tokens=0)
    return TrainingData(dataset, build_augmentation("none"), seed=0, device=device)


def random_cifar(n: int, device: torch.device) -> TrainingData:
    (shape, classes), g = CIFAR_SHAPE, torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, classes, (n,), generator=g)
    dataset = ArrayDataset("random", images, labels, images[:1], labels[:1], classes, 255.0, (0.5,) * 3, (0.25,) * 3)
    return TrainingData(dataset, build_augmentation("none"), seed=0, device=device)


LIBC = ctypes.CDLL("libc.so.6") if sys.platform == "linux" else None


def proc_status_kib(field: str) -> int:
    return proc_kib("/proc/self/status", field)


def proc_kib(path: str, field: str) -> int:
    for line in Path(path).read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{path} has no {field}")


def ratios(results: list[Result]) -> list[dict]:
    plain = {(r.model, r.batch_size): r for r in results if r.engine == "plain"}
    rows = []
    for r in results:
        base = plain.get((r.model, r.batch_size))
        measured = r.seconds is not None
        rows.append({
            "model": r.model, "batch_size": r.batch_size, "engine": r.engine, "test": r.test,
            "time_ms": f"{r.seconds * 1e3:.1f}" if measured else "",
            "time_ratio": f"{r.ratio:.2f}" if measured else "",
            "ratio_range": f"{r.ratio_range[0]:.2f}-{r.ratio_range[1]:.2f}" if measured else "",
            "rounds": r.rounds if measured else "",
            "peak_mib": f"{r.peak_bytes / 2**20:.0f}" if measured else "",
            "memory_ratio": f"{r.peak_bytes / base.peak_bytes:.2f}" if measured and base and base.peak_bytes > 0 else "",
            "skipped": r.skipped,
        })
    return rows


def worst_overheads(results: list[Result], args) -> list[str]:
    lines = []
    at_size = [r for r in results if r.batch_size == REPORTED_SIZE and r.seconds is not None]
    for test in args.tests:
        for engine in args.engines:
            found = [(r.ratio, r.model) for r in at_size if (r.engine, r.test) == (engine, test)]
            if found:
                ratio, model = max(found)
                lines.append(f"worst overhead {engine} {test}: {ratio:.2f}x ({model}, b={REPORTED_SIZE})")
    return lines


def write_tables(results: list[Result], device: str, args) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    rows = ratios(results)
    with open(args.out / f"{device}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    header = ["model", "b", "engine", "test", "time (ms)", "x plain", "x plain, min-max over rounds", "rounds",
              "peak (MiB)", "x plain memory", "skipped"]
    lines = [
        f"# Tested step against a plain step ({device})",
        "",
        f"Written by `{' '.join(['python -m adabatch_bench.bench', *sys.argv[1:]])}` on {describe(torch.device(device))}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, precision {args.precision}; "
        f"{args.repeats} rounds, more until every ratio of this project's engines was known within "
        f"{args.ratio_error:.0%} (two standard errors of a median) or a model's rounds had taken {args.max_seconds:g} s "
        f"({min(args.repeats, args.per_example_repeats)} for {', '.join(PER_EXAMPLE_ENGINES)}). "
        "Each engine timed in a process of its own, next to the plain step. "
        + "".join(f"{k}: {v}, float32, the leanest code a user of that library would write for the test's statistics. "
                  for k, v in ANCHORS.items()) +
        "Time: median; x plain: median over rounds of the ratio to the plain step of the same round. Peak memory: "
        "above what was resident before the step.",
        "",
        *worst_overheads(results, args),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows]
    (args.out / f"{device}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
