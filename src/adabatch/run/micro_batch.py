"""`batch_size.max_micro=auto`: the largest micro-batch whose step fits the device's memory.

The search tries real steps on the run's model, as Lightning's batch-size finder and Accelerate's
`find_executable_batch_size` do: sizes double from 1 (2 for a tested step) until a step runs out of memory (or the run's
largest batch per rank is reached), then bisection narrows the gap to an eighth. The step tried is the
run's most memory-hungry one: a tested step through the run's engine and test when the policy tests,
otherwise a plain step, on one micro-batch of the size tried. A step may take `SAFETY` of the memory
free when the search starts (or `batch_size.max_micro_memory_gb`, which stands in for a smaller
device and makes the choice deterministic: see memory.py).

The trial steps leave the run as they found it: the weights are untouched (no optimizer step), the
buffers and every random generator are restored and the examples are the first of the train split
with fixed augmentation draws, so a run with `auto` is the run with the number it chose.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from ..data import Batch
from .memory import MemoryGauge, free_bytes
from ..random_state import rng_state, set_rng_state
from ..stats import gradient_with_statistics
from ..step import accumulate_gradient
from .experiment import Experiment

AUTO = "auto"
SAFETY = 0.9  # of the free memory: the caching allocator's fragmentation and the optimizer's step need the rest
CPU_DEFAULT_MAX_MICRO = 1024  # where the CPU's free memory cannot be read (no /proc/meminfo, no sysconf)


@dataclass
class MicroBatchChoice:
    max_micro: int
    limit_bytes: int | None  # what a step was allowed to take (None: unbounded, CPU_DEFAULT_MAX_MICRO applied)
    upper: int  # the largest micro-batch the run can use: its largest batch per rank
    trials: list[tuple[int, int | None]]  # (size, peak bytes), None where the step ran out of memory

    def record(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        tried = ", ".join(f"{size}: {'out of memory' if peak is None else f'{peak / 2**20:.1f} MiB'}"
                          for size, peak in self.trials)
        bound = "no memory bound" if self.limit_bytes is None else f"{self.limit_bytes / 2**30:.2f} GiB allowed"
        return f"batch_size.max_micro=auto chose {self.max_micro} (largest useful {self.upper}; {bound}; tried {tried})"


def largest_fitting(fits: Callable[[int], bool], upper: int, lower: int = 1) -> int:
    """The largest size in [lower, upper] that `fits` (monotone: a size fits when every smaller one
    does), to within an eighth: doubling from `lower`, then bisection. 0 when `lower` does not fit."""
    if not 1 <= lower <= upper:
        raise ValueError(f"the sizes to search, [{lower}, {upper}], are empty")
    good, bad = 0, None
    size = lower
    while True:
        if fits(size):
            good = size
            if size == upper:
                return good
            size = min(2 * size, upper)
        elif good == 0:
            return 0
        else:
            bad = size
            break
    while bad - good > max(1, good // 8):
        middle = (good + bad) // 2
        if fits(middle):
            good = middle
        else:
            bad = middle
    return good


def choose_max_micro(exp: Experiment, memory_gb: float | None = None) -> MicroBatchChoice:
    """Search this process's largest micro-batch (see the module's docstring); under data parallelism
    every rank searches on its own device and all take the smallest."""
    upper = math.ceil(exp.policy.max / exp.world.size)
    lower = 2 if exp.engine is not None else 1  # the tests' statistics need two examples
    if memory_gb is not None:
        limit = int(memory_gb * 2**30)
    else:
        free = free_bytes(exp.device)
        limit = None if free is None else int(free * SAFETY)
    if limit is None:
        upper = min(upper, CPU_DEFAULT_MAX_MICRO)
    gauge = MemoryGauge(exp.device, limit)
    trials: list[tuple[int, int | None]] = []

    def fits(size: int) -> bool:
        peak = trial_step_peak(exp, gauge, size)
        trials.append((size, peak))
        return peak is not None

    if upper <= lower:  # nothing to choose from
        return MicroBatchChoice(max_micro=upper, limit_bytes=limit, upper=upper, trials=[])
    saved_rng, saved_buffers = rng_state(), {k: v.clone() for k, v in exp.model.named_buffers()}
    try:
        chosen = largest_fitting(fits, upper, lower)
    finally:
        set_rng_state(saved_rng)
        with torch.no_grad():
            for name, buffer in exp.model.named_buffers():
                buffer.copy_(saved_buffers[name])
        exp.model.zero_grad(set_to_none=True)
    gathered = exp.world.gather(chosen)
    chosen = exp.world.agree(min(gathered) if gathered is not None else 0)
    if chosen < 1:
        raise ValueError(
            f"batch_size.max_micro=auto: a step on {lower} example(s) needs more than the {limit} bytes free on {exp.device}; "
            "free the device, or set batch_size.max_micro_memory_gb higher"
        )
    return MicroBatchChoice(max_micro=chosen, limit_bytes=limit, upper=upper, trials=trials)


def trial_step_peak(exp: Experiment, gauge: MemoryGauge, size: int) -> int | None:
    """The peak bytes of the run's most memory-hungry step on one micro-batch of `size` examples,
    None if it ran out of memory."""
    indices = torch.arange(size) % exp.data.num_examples
    params = None
    if exp.data.augmentation is not None:
        params = exp.data.augmentation.sample(size, torch.Generator(exp.device).manual_seed(0))
    batch = Batch(indices, params)
    try:
        with gauge.measure() as measured:
            if exp.engine is not None:
                policy = exp.policy
                gradient_with_statistics(exp.engine, exp.data, batch, size, policy.needs, policy.ip_mode, exp.autocast)
            else:
                accumulate_gradient(exp.model, exp.data, batch, size, exp.autocast)
        return measured.peak_bytes
    except torch.OutOfMemoryError:
        if exp.engine is not None:
            exp.engine.reset()
        return None
    finally:
        exp.model.zero_grad(set_to_none=True)
        if exp.device.type == "cuda":
            torch.cuda.empty_cache()
