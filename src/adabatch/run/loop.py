"""The training loop: draw a batch of the current size, step, ask the policy for the next size."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from ..adaptive_batch import Diverged
from ..data import evaluation_batches, plan_layout
from ..distributed import SINGLE_PROCESS, World
from ..models import normalization_of
from ..step import evaluation_totals
from ..validation import check_config
from .checkpoint import (
    CHECKPOINT_FILE, how_to_start, load_checkpoint, load_sharded, remove_earlier_run, remove_sharded,
    remove_temporary_files, save_checkpoint, save_sharded,
)
from .experiment import Experiment, build_checked_experiment
from .lock import own_run_directory
from .memory import release_freed_memory
from .micro_batch import AUTO, choose_max_micro
from .milestones import crossed, early_evaluation_points, evaluation_due
from .preemption import PREEMPTED_EXIT_CODE, StopRequest
from .records import read_summary
from .reporting import Reporter


@dataclass
class LoopState:
    """The loop's own clock and settings; the counters are the experiment's (`exp.adaptive`)."""

    max_micro_auto: dict[str, Any] | None = None  # with batch_size.max_micro=auto, what it chose (MicroBatchChoice)
    train_time: float = 0.0  # seconds in training steps, over all the run's processes
    wall_time: float = 0.0   # seconds from start to the last checkpoint, over all the run's processes
    resumes: int = 0


def set_learning_rate(optimizer: torch.optim.Optimizer, base_lrs: list[float], factor: float) -> float:
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["lr"] = base * factor
    return optimizer.param_groups[0]["lr"]


def micro_batch_search(cfg: DictConfig, exp: Experiment, reporter: Reporter) -> dict[str, Any] | None:
    """With batch_size.max_micro=auto, the record of the size found by trying steps; else None."""
    if cfg.batch_size.max_micro != AUTO:
        return None
    choice = choose_max_micro(exp, cfg.batch_size.max_micro_memory_gb)
    reporter.note(choice.describe())
    return choice.record()


def evaluate(cfg: DictConfig, exp: Experiment, split: str, limit: int | None = None,
             model: torch.nn.Module | None = None) -> dict[str, float]:
    """The task's metrics of `model` (the experiment's whole model) on `split` (its first `limit`
    examples), summed over the ranks' shares: "loss" (the mean per example; nats per token for
    next_token) and the task's metric (acc, perplexity)."""
    world = exp.world
    batches = evaluation_batches(exp.dataset, split, evaluation_batch_size(cfg, exp), exp.device, limit, world.rank,
                                 world.size)
    totals = evaluation_totals(model or exp.evaluation_model(), batches, exp.autocast, exp.task)
    world.sum_([totals])
    return exp.task.metrics(totals)


def evaluation_batch_size(cfg: DictConfig, exp: Experiment) -> int:
    """`train.eval_batch_size`; with `batch_size.max_micro=auto` at most the micro-batch the search chose:
    a forward pass of that many examples without gradients fits where their training step did, while
    the configured size (1024 by default) was never tried."""
    if cfg.batch_size.max_micro == AUTO:
        return min(cfg.train.eval_batch_size, exp.adaptive.max_micro)
    return cfg.train.eval_batch_size


def run_evaluation(cfg: DictConfig, exp: Experiment, reporter: Reporter, step: int, samples: int) -> None:
    model = exp.evaluation_model()  # under FSDP: gathered once for every split
    test = evaluate(cfg, exp, "test", model=model)
    train_eval = evaluate(cfg, exp, "train", cfg.train.eval_train_examples, model)
    metric = exp.task.metric
    validation = {}
    if exp.dataset.num_validation:
        held_out = evaluate(cfg, exp, "validation", model=model)
        validation = {"validation_loss": held_out["loss"], f"validation_{metric}": held_out[metric]}
    reporter.evaluation(step=step, samples=samples, **tokens_of(exp, samples),
                        test_loss=test["loss"], **{f"test_{metric}": test[metric]},
                        train_eval_loss=train_eval["loss"], **{f"train_eval_{metric}": train_eval[metric]},
                        **validation)
    if exp.device.type == "cpu":
        release_freed_memory()  # the evaluation's batches, handed back before the next training step


def tokens_of(exp: Experiment, samples: int) -> dict[str, int]:
    """{"tokens": predicted tokens in `samples` examples} for a token dataset; {} for the others (their
    records stay as they were)."""
    per_example = exp.dataset.tokens_per_example
    return {} if per_example is None else {"tokens": samples * per_example}


def train(cfg: DictConfig, run_dir: Path, world: World = SINGLE_PROCESS) -> dict[str, Any]:
    """Train on this process's share of every batch, continuing from the run directory's checkpoint
    when it has one (resume=auto). Rank 0 alone writes the records and the checkpoints, and holds the
    run directory while it runs (RunDirectoryBusy for a second process). Returns the summary; its
    status is "completed", "diverged", "preempted" (a stop signal: checkpointed, to be resumed, no
    summary.json); for a run directory whose run had ended, that run's summary, untouched."""
    check_config(cfg, world)
    with own_run_directory(run_dir, world):
        return _train(cfg, run_dir, world)


def _train(cfg: DictConfig, run_dir: Path, world: World) -> dict[str, Any]:
    start = how_to_start(cfg, run_dir)
    if start == "ended":
        return {**read_summary(run_dir), "already_ended": True}
    exp = build_checked_experiment(cfg, world)
    adaptive = exp.adaptive  # the policy, the gradient and statistics of a step, and the counters
    if start == "fresh" and world.is_main:
        remove_earlier_run(run_dir)
    # Read once: an OmegaConf access resolves interpolations each time, which costs more than a small step.
    budget, eval_every = cfg.train.samples, cfg.train.eval_every
    checkpoint_every = cfg.train.checkpoint_every
    early_evaluations = early_evaluation_points(cfg.train.eval_first, eval_every)
    base_lrs = [group["lr"] for group in exp.optimizer.param_groups]
    checkpoint = load_checkpoint(run_dir) if start == "resume" else None
    if world.is_main:
        remove_temporary_files(run_dir)
    reporter = Reporter(cfg, run_dir, normalization_of(exp.model), exp.task, writes=world.is_main,
                        resume=checkpoint["reporter"] if checkpoint else None)
    started = time.perf_counter()
    capped_from = {"batch_size_capped_from": exp.capped_batch_sizes} if exp.capped_batch_sizes else {}
    description = getattr(exp.dataset, "description", None)  # token datasets say what the data was
    data_record = {"data": description()} if description is not None else {}
    if exp.capped_batch_sizes:
        asked = ", ".join(f"batch_size.{key}={value}" for key, value in exp.capped_batch_sizes.items())
        reporter.note(f"{asked} capped at the {exp.dataset.num_train} training examples: a batch holds distinct examples")
    if checkpoint is not None:
        exp.load_state_dict(checkpoint["experiment"])
        if checkpoint.get("sharded"):
            load_sharded(run_dir, checkpoint["sharded"], exp.model, exp.optimizer)
        loop = LoopState(**checkpoint["loop"])
        loop.resumes += 1
    else:
        loop = LoopState(max_micro_auto=micro_batch_search(cfg, exp, reporter))
    if loop.max_micro_auto:
        adaptive.max_micro = loop.max_micro_auto["max_micro"]
    if checkpoint is None:
        run_evaluation(cfg, exp, reporter, 0, 0)
    wall_before = loop.wall_time

    def wall_time() -> float:
        return wall_before + time.perf_counter() - started

    def summary(status: str, **fields: Any) -> dict[str, Any]:
        return reporter.finish(
            status=status, steps=adaptive.steps, samples=adaptive.samples, **tokens_of(exp, adaptive.samples),
            train_time_s=loop.train_time, wall_time_s=wall_time(), world_size=world.size, resumes=loop.resumes,
            **capped_from, **exp.held_out, **fields,
            **({"max_micro_auto": loop.max_micro_auto} if loop.max_micro_auto else {}), **data_record,
        )

    exp.model.train()
    with StopRequest() as stop:
        while adaptive.samples < budget:
            tick = time.perf_counter()
            before = adaptive.samples
            batch = exp.data.draw(adaptive.batch_size)
            lr = set_learning_rate(exp.optimizer, base_lrs, exp.schedule(before))
            exp.optimizer.zero_grad(set_to_none=True)
            try:  # the gradient, the test when the policy asks for one, and the next batch size
                result = adaptive.step_on(exp.data, batch)
            except Diverged as problem:  # the same on every rank: the loss and statistics are all-reduced
                return summary("diverged", model=None, diverged_at_step=adaptive.steps + 1, diverged_because=str(problem))
            exp.optimizer.step()
            loop.train_time += time.perf_counter() - tick
            layout = plan_layout(len(batch), world.size, adaptive.max_micro)
            reporter.training(
                step=adaptive.steps, samples=adaptive.samples, **tokens_of(exp, adaptive.samples), batch_size=len(batch),
                micro_batch_size=layout.micro_batch_size, accumulation=layout.accumulation, lr=lr,
                train_loss=result.loss, time_s=loop.train_time, next_batch_size=result.next_batch_size,
                **(result.statistics or {}),
            )
            if evaluation_due(before, adaptive.samples, eval_every, early_evaluations) or adaptive.samples >= budget:
                run_evaluation(cfg, exp, reporter, adaptive.steps, adaptive.samples)
            stopping = world.any(bool(stop))
            if stopping or (crossed(before, adaptive.samples, checkpoint_every) and adaptive.samples < budget):
                loop.wall_time = wall_time()
                sharded = save_sharded(run_dir, exp.model, exp.optimizer, world, adaptive.steps) if exp.sharded else None
                experiment = exp.state_dict()  # every rank: it gathers their generators
                if world.is_main:
                    save_checkpoint(run_dir, {"experiment": experiment, "loop": dataclasses.asdict(loop),
                                              "reporter": reporter.state_dict(), "sharded": sharded})
                    remove_sharded(run_dir, keep=sharded)
            if stopping:
                reporter.close(exit_code=PREEMPTED_EXIT_CODE)
                return {"status": "preempted", "steps": adaptive.steps, "samples": adaptive.samples}

    result = summary("completed", model=exp.evaluation_model() if cfg.train.save_model else None)
    if world.is_main:
        (run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)  # the run is complete: model.pt and the records remain
        remove_sharded(run_dir)
    return result
