"""`batch_size.max_micro=auto`: the largest micro-batch whose step fits the device's memory.

The search tries real steps on the run's model, as Lightning's batch-size finder and Accelerate's
`find_executable_batch_size` do: sizes double from 1 (2 for a tested step) until a step runs out of memory (or the run's
largest batch per rank is reached), then bisection narrows the gap to an eighth. The step tried is the
run's most memory-hungry one: a tested step through the run's engine and test when the policy tests,
otherwise a plain step, on one micro-batch of the size tried. On CUDA a step may take `SAFETY` of the
memory free when the search starts. On the CPU the process holds more than its live tensors (kernel
workspaces, the allocator's kept pages: see memory.py), so what is measured there is the process's
resident memory, checked after every operation: a step may grow it by `CPU_HEADROOM` of the memory
available when the search starts, less room for the optimizer's state, which the trials do not
create. `batch_size.max_micro_memory_gb` stands in for a smaller device (a limit on the step's
counted tensors, deterministic); the resident-memory guard still applies on the CPU.

The trial steps leave the run as they found it: the weights are untouched (no optimizer step), the
buffers and every random generator are restored and the examples are the first of the train split
with fixed augmentation draws, so a run with `auto` is the run with the number it chose.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from ..data import Batch
from .memory import MemoryGauge, free_bytes, release_freed_memory, resident_bytes
from ..random_state import rng_state, set_rng_state
from ..stats import StatisticsEngine, gradient_with_statistics
from ..step import accumulate_gradient
from .experiment import Experiment

AUTO = "auto"
SAFETY = 0.9  # of the free memory: the caching allocator's fragmentation and the optimizer's step need the rest
CPU_HEADROOM = 0.5  # of the available memory (the machine's, shared with other processes) a CPU step may add
OPTIMIZER_STATE_PER_PARAMETER_BYTE = 2  # Adam's two moments: the most the shipped optimizers keep
CPU_DEFAULT_MAX_MICRO = 1024  # where the CPU's free memory cannot be read (no /proc/meminfo, no sysconf)


@dataclass
class MicroBatchChoice:
    max_micro: int
    limit_bytes: int | None  # what a step's tensors were allowed to take (None: no limit on them)
    upper: int  # the largest micro-batch the run can use: its largest batch per rank
    trials: list[tuple[int, int | None]]  # (size, peak bytes of its tensors), None where the step ran out of memory
    # CPU: the process's resident memory a step could reach, and each trial's peak (None: out of memory
    # or not read). They vary from process to process: the console shows them, the records do not.
    resident_limit_bytes: int | None = field(default=None, compare=False)
    resident_peaks: list[int | None] = field(default_factory=list, compare=False)

    def record(self) -> dict:
        return {key: value for key, value in asdict(self).items() if key not in ("resident_limit_bytes", "resident_peaks")}

    def describe(self) -> str:
        tried = ", ".join(f"{size}: {'out of memory' if peak is None else f'{peak / 2**20:.1f} MiB'}"
                          for size, peak in self.trials)
        bounds = [f"{self.limit_bytes / 2**30:.2f} GiB allowed"] if self.limit_bytes is not None else []
        if self.resident_limit_bytes is not None:
            peak = max((p for p in self.resident_peaks if p is not None), default=None)
            reached = "" if peak is None else f", reached {peak / 2**30:.2f}"
            bounds.append(f"the process at most {self.resident_limit_bytes / 2**30:.2f} GiB resident{reached}")
        bound = ", ".join(bounds) or "no memory bound"
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


def resident_limit(exp: Experiment, growth_bytes: int | None = None) -> int | None:
    """CPU: the resident bytes the process may reach in a trial step: what it holds now plus
    `growth_bytes` (default `CPU_HEADROOM` of the available memory), less the optimizer's future
    state. None on CUDA, or where the process's or the machine's memory cannot be read."""
    now = resident_bytes()
    if exp.device.type != "cpu" or now is None:
        return None
    if growth_bytes is None:
        available = free_bytes(exp.device)
        if available is None:
            return None
        growth_bytes = int(available * CPU_HEADROOM)
    parameter_bytes = sum(p.numel() * p.element_size() for p in exp.model.parameters())
    return now + growth_bytes - OPTIMIZER_STATE_PER_PARAMETER_BYTE * parameter_bytes


def choose_max_micro(exp: Experiment, memory_gb: float | None = None, resident_growth_bytes: int | None = None
                     ) -> MicroBatchChoice:
    """Search this process's largest micro-batch (see the module's docstring); under data parallelism
    every rank searches on its own device and all take the smallest. `resident_growth_bytes` (CPU):
    how much the process may grow, instead of `CPU_HEADROOM` of the available memory."""
    upper = math.ceil(exp.policy.max / exp.world.size)
    lower = 2 if per_example(exp) else 1  # the per-example statistics need two examples
    resident = resident_limit(exp, resident_growth_bytes)
    if memory_gb is not None:
        limit = int(memory_gb * 2**30)
    elif exp.device.type == "cuda":
        free = free_bytes(exp.device)
        limit = None if free is None else int(free * SAFETY)
    else:  # where the resident memory cannot be read, the tensors alone within the headroom
        free = free_bytes(exp.device) if resident is None else None
        limit = None if free is None else int(free * CPU_HEADROOM)
    if limit is None and resident is None:
        upper = min(upper, CPU_DEFAULT_MAX_MICRO)
    gauge = MemoryGauge(exp.device, limit, resident)
    trials: list[tuple[int, int | None]] = []
    resident_peaks: list[int | None] = []

    def fits(size: int) -> bool:
        peak, resident_peak = trial_step_memory(exp, gauge, size) or (None, None)
        trials.append((size, peak))
        resident_peaks.append(resident_peak)
        return peak is not None

    if upper <= lower:  # nothing to choose from
        return MicroBatchChoice(max_micro=upper, limit_bytes=limit, upper=upper, trials=[], resident_limit_bytes=resident)
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
            f"batch_size.max_micro=auto: a step on {lower} example(s) needs more memory than {exp.device} allows "
            f"({MicroBatchChoice(0, limit, upper, trials, resident, resident_peaks).describe()}); "
            "free memory, or set batch_size.max_micro_memory_gb higher, or batch_size.max_micro to a number"
        )
    return MicroBatchChoice(max_micro=chosen, limit_bytes=limit, upper=upper, trials=trials,
                            resident_limit_bytes=resident, resident_peaks=resident_peaks)


def per_example(exp: Experiment) -> bool:
    return isinstance(exp.engine, StatisticsEngine)


def trial_step_peak(exp: Experiment, gauge: MemoryGauge, size: int) -> int | None:
    """The peak bytes of the tensors of the run's most memory-hungry step on one micro-batch of
    `size` examples, None if it ran out of memory."""
    measured = trial_step_memory(exp, gauge, size)
    return None if measured is None else measured[0]


def trial_step_memory(exp: Experiment, gauge: MemoryGauge, size: int) -> tuple[int, int | None] | None:
    """(peak tensor bytes, CPU: peak resident bytes of the process or None) of the run's most
    memory-hungry step on one micro-batch of `size` examples, None if it ran out of memory."""
    indices = torch.arange(size) % exp.data.num_examples
    params = None
    if exp.data.augmentation is not None:
        params = exp.data.augmentation.sample(size, torch.Generator(exp.device).manual_seed(0))
    batch = Batch(indices, params)
    try:
        with gauge.measure() as measured:
            if per_example(exp):  # engine=local's tested step is a plain step with hooks that add scalars
                policy = exp.policy
                gradient_with_statistics(exp.engine, exp.data, batch, size, policy.needs, policy.ip_mode, exp.autocast)
            else:
                accumulate_gradient(exp.model, exp.data, batch, size, exp.autocast)
        return measured.peak_bytes, measured.resident_peak_bytes
    except torch.OutOfMemoryError:
        if per_example(exp):
            exp.engine.reset()
        return None
    finally:
        exp.model.zero_grad(set_to_none=True)
        if exp.device.type == "cuda":
            torch.cuda.empty_cache()
        else:
            release_freed_memory()
