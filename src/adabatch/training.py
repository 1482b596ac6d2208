"""The training loop: draw a batch of the current size, step, ask the policy for the next size."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

from .batch_size import AdaptiveTest, BatchSizePolicy, build_policy
from .data import ArrayDataset, Batch, TrainingData, build_augmentation, evaluation_batches, load_dataset, plan_layout
from .device import autocast, resolve_device
from .distributed import SINGLE_PROCESS, World
from .models import build_model
from .optim import build_optimizer
from .reporting import Reporter
from .schedules import Schedule, build_schedule
from .stats import PerExampleEngine, build_engine, gradient_with_statistics
from .step import accumulate_gradient, evaluation_totals

MODEL_KEYS_NOT_OPTIONS = ("name", "norm")


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
    engine: PerExampleEngine | None  # per-example gradients, for the adaptive tests only
    autocast: contextlib.AbstractContextManager


def plain(node: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True)


def build_experiment(cfg: DictConfig, world: World = SINGLE_PROCESS) -> Experiment:
    device = resolve_device(cfg.device, world.local_rank)
    torch.manual_seed(cfg.seed)
    with world.main_first():  # rank 0 downloads what is missing; the others then find it
        dataset = load_dataset(cfg.dataset.name, cfg.data_dir, download=cfg.dataset.download).to(device)
    data = TrainingData(dataset, build_augmentation(cfg.dataset.augmentation), cfg.seed, device)
    options = {k: v for k, v in plain(cfg.model).items() if k not in MODEL_KEYS_NOT_OPTIONS}
    model = build_model(cfg.model.name, dataset.input_shape, dataset.num_classes, norm=cfg.model.norm, **options)
    model = model.to(device)
    policy = build_policy(plain(cfg.batch_size), budget=cfg.train.samples)
    if policy.initial < world.size:
        raise ValueError(
            f"batch_size.initial={policy.initial} gives some of the {world.size} ranks no example; "
            f"raise batch_size.initial to at least {world.size} or run fewer processes"
        )
    engine = None
    if isinstance(policy, AdaptiveTest):
        refuse_batch_norm(model, cfg)
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
    )


def refuse_batch_norm(model: torch.nn.Module, cfg: DictConfig) -> None:
    """BatchNorm mixes the examples of a batch, so per-example gradients (and the tests) are undefined."""
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ValueError(
            f"batch_size={cfg.batch_size.name} needs per-example gradients, which BatchNorm does not have "
            f"(model.norm={cfg.model.norm}); use model.norm=group (the default) or model.norm=none"
        )


def set_learning_rate(optimizer: torch.optim.Optimizer, base_lrs: list[float], factor: float) -> float:
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["lr"] = base * factor
    return optimizer.param_groups[0]["lr"]


def batch_gradient(exp: Experiment, batch: Batch, max_micro: int, tested: bool) -> tuple[torch.Tensor, Any]:
    """Leave the global batch's mean gradient in .grad on every rank; return (its mean loss, test
    statistics or None)."""
    if tested:
        loss, statistics = gradient_with_statistics(
            exp.engine, exp.data, batch, max_micro, exp.policy.needs, exp.policy.ip_mode, exp.autocast, exp.world
        )
    else:
        loss, statistics = accumulate_gradient(exp.step_model, exp.data, batch, max_micro, exp.autocast, exp.world), None
    exp.world.sum_([loss])
    return loss, statistics


def train(cfg: DictConfig, run_dir: Path, world: World = SINGLE_PROCESS) -> dict[str, Any]:
    """Train on this process's share of every batch; rank 0 alone writes the records."""
    exp = build_experiment(cfg, world)
    budget, eval_every, max_micro = cfg.train.samples, cfg.train.eval_every, cfg.batch_size.max_micro
    base_lrs = [group["lr"] for group in exp.optimizer.param_groups]
    reporter = Reporter(cfg, run_dir, writes=world.is_main)
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
        reporter.evaluation(step=step, samples=samples, test_loss=test_loss, test_acc=test_acc,
                            train_eval_loss=train_eval_loss, train_eval_acc=train_eval_acc)

    step, samples, train_time = 0, 0, 0.0
    batch_size = exp.policy.initial
    next_eval = eval_every
    run_evaluation(step, samples)
    exp.model.train()
    while samples < budget:
        tick = time.perf_counter()
        batch = exp.data.draw(batch_size)
        lr = set_learning_rate(exp.optimizer, base_lrs, exp.schedule(samples))
        exp.optimizer.zero_grad(set_to_none=True)
        tested = exp.policy.wants_statistics(step + 1, batch_size)
        loss, statistics = batch_gradient(exp, batch, max_micro, tested)
        exp.optimizer.step()
        step, samples = step + 1, samples + len(batch)
        decision = exp.policy.decide(step=step, samples=samples, batch_size=batch_size, statistics=statistics)
        next_size = world.agree(decision.next_size)
        train_loss = loss.item()  # also waits for the device, so time_s is honest
        train_time += time.perf_counter() - tick
        layout = plan_layout(batch_size, world.size, max_micro)
        reporter.training(
            step=step, samples=samples, batch_size=batch_size, micro_batch_size=layout.micro_batch_size,
            accumulation=layout.accumulation, lr=lr, train_loss=train_loss, time_s=train_time,
            next_batch_size=next_size, **decision.record,
        )
        batch_size = next_size
        if samples >= next_eval or samples >= budget:
            run_evaluation(step, samples)
            while next_eval <= samples:
                next_eval += eval_every

    return reporter.finish(
        status="completed", steps=step, samples=samples, train_time_s=train_time,
        wall_time_s=time.perf_counter() - started, world_size=world.size, model=exp.model if cfg.train.save_model else None,
    )
