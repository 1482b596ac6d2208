"""The training loop: draw a batch of the current size, step, ask the policy for the next size."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch.nn.parallel import DistributedDataParallel

from .adaptive_batch import AdaptiveBatch, Diverged
from .batch_size import AdaptiveTest, BatchSizePolicy, build_policy, cap_batch_sizes
from .checkpoint import (
    CHECKPOINT_FILE, how_to_start, load_checkpoint, remove_earlier_run, remove_temporary_files, restore,
    write_checkpoint,
)
from .data import ArrayDataset, TrainingData, build_augmentation, evaluation_batches, plan_layout
from .data.from_config import dataset_from_config
from .data.holdout import hold_out, holdout_record
from .device import autocast, resolve_device
from .distributed import SINGLE_PROCESS, World
from .micro_batch import AUTO, choose_max_micro
from .milestones import crossed, early_evaluation_points, evaluation_due
from .models import model_from_config, normalization_of
from .optim import build_optimizer
from .preemption import PREEMPTED_EXIT_CODE, StopRequest
from .records import read_summary
from .reporting import Reporter
from .run_lock import own_run_directory
from .schedules import Schedule, build_schedule
from .stats import StatisticsEngine, build_engine
from .step import evaluation_totals
from .validation import check_config, check_model, plain


@dataclass
class Experiment:
    """Everything a run is made of, built from the config."""

    world: World
    device: torch.device
    dataset: ArrayDataset
    data: TrainingData
    model: torch.nn.Module
    step_model: torch.nn.Module  # what untested steps run: the model, in DDP across ranks, compiled if asked
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    policy: BatchSizePolicy
    engine: StatisticsEngine | None  # per-example statistics, for the adaptive tests only
    autocast: contextlib.AbstractContextManager
    capped_batch_sizes: dict[str, Any]  # {batch_size key: value asked for} where it exceeded the training set
    held_out: dict[str, Any]  # what the summary records of the validation split ({} without one)


def build_experiment(cfg: DictConfig, world: World = SINGLE_PROCESS) -> Experiment:
    check_config(cfg, world)
    device = resolve_device(cfg.device, world.local_rank)
    torch.manual_seed(cfg.seed)
    with world.main_first():  # rank 0 downloads what is missing; the others then find it
        dataset = dataset_from_config(plain(cfg.dataset), cfg.data_dir)
    validation = cfg.dataset.get("validation", 0)
    held_out = holdout_record(dataset.num_train, validation)
    dataset = hold_out(dataset, validation).to(device)
    data = TrainingData(dataset, build_augmentation(cfg.dataset.augmentation), cfg.seed, device)
    model = model_from_config(plain(cfg.model), dataset.input_shape, dataset.num_classes)
    population = dataset.num_train
    batch_options, capped = cap_batch_sizes(plain(cfg.batch_size), population)  # batches hold distinct examples
    policy = build_policy(batch_options, budget=cfg.train.samples, population=population)
    check_model(model, policy, cfg)
    model = model.to(device)
    engine = None
    if isinstance(policy, AdaptiveTest):
        engine = build_engine(cfg.batch_size.engine, model)  # on the bare model: tested steps reduce their own sums
    step_model = model
    if world.size > 1:
        step_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return Experiment(
        world=world,
        device=device,
        dataset=dataset,
        data=data,
        model=model,
        step_model=torch.compile(step_model) if cfg.train.compile else step_model,
        optimizer=build_optimizer(plain(cfg.optimizer), model.parameters()),
        schedule=build_schedule(plain(cfg.schedule)),
        policy=policy,
        engine=engine,
        autocast=autocast(device, cfg.train.precision),
        capped_batch_sizes=capped,
        held_out=held_out,
    )


def set_learning_rate(optimizer: torch.optim.Optimizer, base_lrs: list[float], factor: float) -> float:
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["lr"] = base * factor
    return optimizer.param_groups[0]["lr"]


def adaptive_batch(exp: Experiment, max_micro: int) -> AdaptiveBatch:
    """The experiment's policy and engine as the public per-step API: the loop steps through it."""
    return AdaptiveBatch(exp.model, exp.policy, exp.engine, max_micro, step_model=exp.step_model,
                         autocast=exp.autocast, world=exp.world)


@dataclass
class LoopState:
    """The loop's counters and settings: with the components' own states, all a checkpoint needs to continue."""

    batch_size: int  # of the next step
    max_micro_auto: dict[str, Any] | None = None  # with batch_size.max_micro=auto, what it chose (MicroBatchChoice)
    step: int = 0
    samples: int = 0
    train_time: float = 0.0  # seconds in training steps, over all the run's processes
    wall_time: float = 0.0   # seconds from start to the last checkpoint, over all the run's processes
    resumes: int = 0


def micro_batch_search(cfg: DictConfig, exp: Experiment, reporter: Reporter) -> dict[str, Any] | None:
    """With batch_size.max_micro=auto, the record of the size found by trying steps; else None."""
    if cfg.batch_size.max_micro != AUTO:
        return None
    choice = choose_max_micro(exp, cfg.batch_size.max_micro_memory_gb)
    reporter.note(choice.describe())
    return choice.record()


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
    exp = build_experiment(cfg, world)
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
    reporter = Reporter(cfg, run_dir, normalization_of(exp.model), writes=world.is_main,
                        resume=checkpoint["reporter"] if checkpoint else None)
    started = time.perf_counter()

    def run_evaluation(step: int, samples: int) -> None:
        def on(split: str, limit: int | None = None) -> tuple[float, float]:
            batches = evaluation_batches(
                exp.dataset, split, cfg.train.eval_batch_size, exp.device, limit, world.rank, world.size
            )
            totals = evaluation_totals(exp.model, batches, exp.autocast)
            world.sum_([totals])
            loss_sum, correct, count = totals.tolist()
            return loss_sum / count, correct / count

        test_loss, test_acc = on("test")
        train_eval_loss, train_eval_acc = on("train", cfg.train.eval_train_examples)
        validation = dict(zip(("validation_loss", "validation_acc"), on("validation"))) if exp.dataset.num_validation else {}
        reporter.evaluation(step=step, samples=samples, test_loss=test_loss, test_acc=test_acc,
                            train_eval_loss=train_eval_loss, train_eval_acc=train_eval_acc, **validation)

    def summary(status: str, **fields: Any) -> dict[str, Any]:
        return reporter.finish(
            status=status, steps=loop.step, samples=loop.samples, train_time_s=loop.train_time,
            wall_time_s=wall_time(), world_size=world.size, resumes=loop.resumes, **capped_from, **exp.held_out, **fields,
            **({"max_micro_auto": loop.max_micro_auto} if loop.max_micro_auto else {}),
        )

    capped_from = {"batch_size_capped_from": exp.capped_batch_sizes} if exp.capped_batch_sizes else {}
    if exp.capped_batch_sizes:
        asked = ", ".join(f"batch_size.{key}={value}" for key, value in exp.capped_batch_sizes.items())
        reporter.note(f"{asked} capped at the {exp.dataset.num_train} training examples: a batch holds distinct examples")
    if checkpoint is not None:
        restore(exp, checkpoint)
        loop = LoopState(**checkpoint["loop"])
        loop.resumes += 1
    else:
        loop = LoopState(exp.policy.initial, max_micro_auto=micro_batch_search(cfg, exp, reporter))
        run_evaluation(0, 0)
    max_micro = loop.max_micro_auto["max_micro"] if loop.max_micro_auto else cfg.batch_size.max_micro
    adaptive = adaptive_batch(exp, max_micro)
    wall_before = loop.wall_time

    def wall_time() -> float:
        return wall_before + time.perf_counter() - started

    exp.model.train()
    with StopRequest() as stop:
        while loop.samples < budget:
            tick = time.perf_counter()
            batch_size = loop.batch_size
            batch = exp.data.draw(batch_size)
            lr = set_learning_rate(exp.optimizer, base_lrs, exp.schedule(loop.samples))
            exp.optimizer.zero_grad(set_to_none=True)
            try:  # the gradient, the test when the policy asks for one, and the next batch size
                result = adaptive.step_on(exp.data, batch, loop.step + 1, loop.samples)
            except Diverged as problem:  # the same on every rank: the loss and statistics are all-reduced
                return summary("diverged", model=None, diverged_at_step=loop.step + 1, diverged_because=str(problem))
            exp.optimizer.step()
            before = loop.samples
            loop.step, loop.samples = loop.step + 1, loop.samples + len(batch)
            loop.batch_size = result.next_batch_size
            loop.train_time += time.perf_counter() - tick
            layout = plan_layout(batch_size, world.size, max_micro)
            reporter.training(
                step=loop.step, samples=loop.samples, batch_size=batch_size,
                micro_batch_size=layout.micro_batch_size, accumulation=layout.accumulation, lr=lr,
                train_loss=result.loss, time_s=loop.train_time, next_batch_size=loop.batch_size,
                **(result.statistics or {}),
            )
            if evaluation_due(before, loop.samples, eval_every, early_evaluations) or loop.samples >= budget:
                run_evaluation(loop.step, loop.samples)
            stopping = world.any(bool(stop))
            if stopping or (crossed(before, loop.samples, checkpoint_every) and loop.samples < budget):
                loop.wall_time = wall_time()
                write_checkpoint(exp, loop, reporter, run_dir)
            if stopping:
                reporter.close(exit_code=PREEMPTED_EXIT_CODE)
                return {"status": "preempted", "steps": loop.step, "samples": loop.samples}

    result = summary("completed", model=exp.model if cfg.train.save_model else None)
    if world.is_main:
        (run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)  # the run is complete: model.pt and the records remain
    return result
