"""Adaptive batch sizes in any training loop: one call per step gives the batch gradient, the test's
statistics and the next batch size.

    adaptive = AdaptiveBatch(model, {"name": "norm", "initial": 8, "max": 512, "eta": 0.5}, max_micro=64)
    x, y = next_batch(adaptive.batch_size)
    optimizer.zero_grad()
    loss, statistics, next_size = adaptive.step(x, y)   # the batch-mean gradient is in .grad
    optimizer.step()

The CLI's loop (`src/adabatch/run/loop.py`) runs every step through `step_on`, the same call on the
project's own data stream; `step` hands it the caller's tensors. Either way this object owns the
counters (`steps`, `samples`, the next `batch_size`) and `state_dict` holds all a restart needs.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from .batch_size import AdaptiveTest, BatchSizePolicy, build_policy
from .data import Batch, Examples
from .distributed import SINGLE_PROCESS, World
from .parallel.local_engine import LOCAL, PER_EXAMPLE_SOURCE, LocalStatistics
from .stats import BatchStatistics, StatisticsEngine, build_engine, gradient_with_statistics
from .step import accumulate_gradient
from .tasks import TASKS, Task


class Step(NamedTuple):
    loss: float  # the batch's mean loss (the task's: cross-entropy per example, or per sequence of tokens)
    statistics: dict[str, Any] | None  # a tested step's statistics and decision, as the CLI records them; else None
    next_batch_size: int


class Diverged(ArithmeticError):
    """A non-finite loss or test statistic: the gradient is left in .grad, nothing else has changed."""


@dataclass
class Tensors:
    """A caller's batch as the examples the statistics engines read: micro-batch `part` is x[part.indices]."""

    x: torch.Tensor
    y: torch.Tensor

    def examples(self, part: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[part.indices], self.y[part.indices]

    def whole(self) -> Batch:
        return Batch(torch.arange(len(self.y), device=self.y.device), None)


class AdaptiveBatch:
    """A batch-size policy and the statistics engine its test reads, for one model.

    `policy`: a `configs/batch_size` mapping ({"name": "norm", "initial": 8, "max": 512, "eta": 0.5};
    its loop keys, such as engine and max_micro, are ignored: they are arguments here) or a built
    `BatchSizePolicy`. `engine`: "ghost", "opacus", "functorch" (per-example statistics), "local"
    (from the gradients of the batch's parts: ranks x micro-batches, at least `parts` of them), or a
    built engine (used only by policies that test). `max_micro`: the largest micro-batch (None:
    the whole batch at once); the statistics are exact however the batch is split. `task`: what the
    examples are for ("classification", the default: the cross-entropy of (n, classes) logits;
    "next_token": each sequence's mean token cross-entropy; or a built `Task`); its loss is the step's and
    the engine's (a built engine keeps its own). The training loop's own options:
    `step_model` runs the untested steps (the model wrapped in DDP or compiled), `autocast` and
    `world` (data parallelism: every rank passes the same global batch and steps on its share).
    `budget` (samples in the whole run) is for `stagewise`, `population` (training examples) for the
    tests' `finite_population`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        policy: Mapping[str, Any] | BatchSizePolicy,
        engine: str | StatisticsEngine | None = "ghost",
        max_micro: int | None = None,
        *,
        step_model: torch.nn.Module | None = None,
        autocast: contextlib.AbstractContextManager | None = None,
        world: World = SINGLE_PROCESS,
        budget: int | None = None,
        population: int | None = None,
        task: str | Task = "classification",
        parts: int = 2,
    ) -> None:
        if not isinstance(policy, BatchSizePolicy):
            if policy.get("name") == "stagewise" and budget is None:
                raise ValueError("batch_size=stagewise divides the run's samples into stages: pass budget")
            policy = build_policy(policy, budget=budget or 0, population=population)
        self.policy = policy
        self.task = TASKS[task] if isinstance(task, str) else task
        self.engine: StatisticsEngine | LocalStatistics | None = None
        if isinstance(policy, AdaptiveTest):
            if engine == LOCAL:
                self.engine = LocalStatistics(model, policy.needs, parts, loss=self.task.loss)
            else:
                self.engine = build_engine(engine, model, loss=self.task.loss) if isinstance(engine, str) else engine
        self.max_micro = max_micro
        self.step_model = model if step_model is None else step_model
        self.autocast = autocast
        self.world = world
        self.batch_size = policy.initial  # of the next step
        self.steps = 0
        self.samples = 0

    def step(self, x: torch.Tensor, y: torch.Tensor) -> Step:
        """One step on the batch (x, y): leaves the batch-mean gradient in .grad for the optimizer,
        returns (mean loss, statistics or None, the next batch's size). Raises `Diverged` when the loss
        or a statistic is not finite."""
        data = Tensors(x, y)
        return self.step_on(data, data.whole())

    def step_on(self, data: Examples, batch: Batch) -> Step:
        """`step` on examples `batch` of `data` (the run's next batch): the counters advance past it,
        unless it diverged."""
        step, samples = self.steps + 1, self.samples + len(batch)
        tested = self.policy.wants_statistics(step, len(batch))
        loss, statistics = self.gradient(data, batch, tested)
        problem = divergence(loss, statistics)
        if problem is not None:
            raise Diverged(problem)
        decision = self.policy.decide(step=step, samples=samples, batch_size=len(batch), statistics=statistics)
        record = {**decision.record, **self.statistics_source()} if tested else None
        result = Step(loss, record, self.world.agree(decision.next_size))
        self.steps, self.samples, self.batch_size = step, samples, result.next_batch_size
        return result

    def gradient(self, data: Examples, batch: Batch, tested: bool) -> tuple[float, BatchStatistics | None]:
        """Leave the batch-mean gradient in .grad on every rank; return (the batch's mean loss, its
        statistics when `tested`, identical on every rank)."""
        max_micro = len(batch) if self.max_micro is None else self.max_micro
        if tested and isinstance(self.engine, LocalStatistics):  # the loss comes summed over ranks with the sums
            loss, statistics = self.engine.tested_step(self.step_model, data, batch, max_micro, self.policy.ip_mode,
                                                       self.autocast, self.world)
            return loss.item(), statistics
        statistics = None
        if tested:
            policy = self.policy
            loss, statistics = gradient_with_statistics(
                self.engine, data, batch, max_micro, policy.needs, policy.ip_mode, self.autocast, self.world
            )
        else:
            loss = accumulate_gradient(self.step_model, data, batch, max_micro, self.autocast, self.world, self.task.loss)
        self.world.sum_([loss])
        return loss.item(), statistics  # .item() also waits for the device, so step timings are honest

    def statistics_source(self) -> dict[str, Any]:
        """What a tested step's record says of where its statistics came from: the batch's M parts, or
        its examples."""
        if isinstance(self.engine, LocalStatistics):
            return self.engine.record()
        return {"statistics_source": PER_EXAMPLE_SOURCE}

    def state_dict(self) -> dict[str, Any]:
        """What `step` needs to continue after a restart: the policy's memory, the counters and the
        engine's choices (ghost_measured's forms; this process's own under data parallelism)."""
        return {"policy": self.policy.state_dict(), "batch_size": self.batch_size, "steps": self.steps,
                "samples": self.samples, "engine": self.engine.state_dict() if self.engine else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.batch_size, self.steps, self.samples = state["batch_size"], state["steps"], state["samples"]
        if self.engine is not None:
            self.engine.load_state_dict(state.get("engine", {}))


def divergence(loss: float, statistics: BatchStatistics | None) -> str | None:
    if not math.isfinite(loss):
        return f"the training loss is {loss}"
    if statistics is not None and not statistics.is_finite():
        return "a test statistic is not finite"
    return None
