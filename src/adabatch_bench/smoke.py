"""A paper run's real steps at its true shapes, measured: what `make smoke-paper` does for every run.

A run is built from its composed config exactly as `src/train.py` builds it (dataset files in their
genuine formats, but stand-in pixels: see data/standin.py), then takes real optimizer steps:
  1. its first step, at its initial batch size (tested when its policy tests the first step);
  2. plain steps of 2, 4 and 8 micro-batches, and tested steps too when the policy tests: the
     micro-batch split and the tests' second pass run for real.
Each step's loss (and statistics) must be finite, and the peak memory of the step of 8 micro-batches
must stay within MEMORY_GROWTH_ALLOWED of the one of 4: memory grows with the micro-batch, never with
the batch. Memory is measured in steps of its own (on the CPU, memory.TensorMemory slows the steps it
counts); times come from other steps.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field

import torch
from omegaconf import DictConfig

from adabatch.adaptive_batch import divergence
from adabatch.device import synchronize
from adabatch.run.experiment import build_experiment
from adabatch.run.memory import Measurement, MemoryGauge
from adabatch.run.micro_batch import AUTO, choose_max_micro

MICRO_BATCHES = (2, 4, 8)  # steps of this many micro-batches: peak memory measured at each
TIMED_MICRO_BATCHES = 4  # step time: the faster of two such steps
# peak(8 micro-batches) / peak(4) at most: a buffer that grows with the batch would add as much again
# as it did from 2 to 4 (some tested steps' peak rises once from 2 to 4 micro-batches, then stays flat)
MEMORY_GROWTH_ALLOWED = 1.02


@dataclass
class StepKind:
    """Steps of one kind (plain or tested) of 2, 4 and 8 micro-batches."""

    micro: int
    peak_bytes: dict[int, int] = field(default_factory=dict)  # batch size -> peak bytes
    seconds_per_example: float = math.nan  # of the step of TIMED_MICRO_BATCHES micro-batches

    @property
    def growth(self) -> float:
        """Peak memory of the largest batch over the one before it."""
        *_, smaller, largest = (self.peak_bytes[k] for k in sorted(self.peak_bytes))
        return largest / smaller


@dataclass
class SmokeResult:
    run: str
    parameters: int
    micro: int
    first_batch: int  # the first step's batch size (the run's initial size, or the cap)
    initial_batch: int  # the run's own initial batch size
    first_tested: bool
    first_seconds: float
    plain: StepKind
    tested: StepKind | None
    problems: list[str] = field(default_factory=list)

    def record(self) -> dict:
        return asdict(self)


def smoke_run(
    run: str, cfg: DictConfig, micro: int | str, first_cap: int | None = None, first_step: bool = True
) -> SmokeResult:
    """`micro`: the micro-batch size, or "auto" (what the run would choose, at most an eighth of the
    training set so that 8 micro-batches are a batch). `first_step=False` skips step 1 (the test
    suite's subset); `first_cap` caps its batch size."""
    exp = build_experiment(cfg)
    exp.model.train()
    if micro == AUTO:
        chosen = choose_max_micro(exp, cfg.batch_size.max_micro_memory_gb).max_micro
        micro = min(chosen, exp.data.num_examples // MICRO_BATCHES[-1])
    problems: list[str] = []
    adaptive = exp.adaptive
    adaptive.max_micro = micro

    def step(size: int, tested: bool, measure: bool) -> tuple[float, int | None]:
        batch = exp.data.draw(size)
        gauge = MemoryGauge(exp.device)
        synchronize(exp.device)
        started = time.perf_counter()
        with gauge.measure() if measure else contextlib.nullcontext(Measurement()) as measured:
            exp.optimizer.zero_grad(set_to_none=True)
            loss, statistics = adaptive.gradient(exp.data, batch, tested)
            exp.optimizer.step()
        synchronize(exp.device)
        seconds = time.perf_counter() - started
        problem = divergence(loss, statistics)
        if problem:
            problems.append(f"{'tested' if tested else 'plain'} step of {size}: {problem}")
        return seconds, measured.peak_bytes if measure else None

    first = min(exp.policy.initial, first_cap) if first_cap else exp.policy.initial
    first_tested = exp.policy.wants_statistics(1, first)
    first_seconds = step(first, first_tested, measure=False)[0] if first_step else math.nan

    def kind(tested: bool) -> StepKind:
        result = StepKind(micro)
        for parts in MICRO_BATCHES:
            result.peak_bytes[parts * micro] = step(parts * micro, tested, measure=True)[1]
        timed = TIMED_MICRO_BATCHES * micro
        result.seconds_per_example = min(step(timed, tested, measure=False)[0] for _ in range(2)) / timed
        if result.growth > MEMORY_GROWTH_ALLOWED:
            problems.append(f"{'tested' if tested else 'plain'} steps: peak memory x{result.growth:.3f} from "
                            f"{MICRO_BATCHES[-2]} to {MICRO_BATCHES[-1]} micro-batches of {micro}: it grows with the batch")
        return result

    plain = kind(tested=False)
    tested = kind(tested=True) if exp.engine is not None else None
    return SmokeResult(
        run=run, parameters=sum(p.numel() for p in exp.model.parameters()), micro=micro,
        first_batch=first, initial_batch=exp.policy.initial, first_tested=first_tested, first_seconds=first_seconds,
        plain=plain, tested=tested, problems=problems,
    )


def matmul_flops_per_second(device: torch.device, size: int = 2048, repeats: int = 10) -> float:
    """float32 matrix-multiply throughput of `device`: the yardstick of the GPU-hour estimate."""
    a, b = (torch.randn(size, size, device=device) for _ in range(2))
    a @ b  # warm up
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best
