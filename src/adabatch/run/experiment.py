"""A run's experiment: the components built from the config, and ONE state_dict for all of them."""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig
from torch.nn.parallel import DistributedDataParallel

from ..adaptive_batch import AdaptiveBatch
from ..batch_size import AdaptiveTest, BatchSizePolicy, build_policy, cap_batch_sizes
from ..data import ArrayDataset, TrainingData, build_augmentation, check_text_model
from ..data.from_config import dataset_from_config
from ..data.holdout import hold_out, holdout_record
from ..device import autocast, resolve_device
from ..distributed import SINGLE_PROCESS, World
from ..models import model_from_config
from ..optim import build_optimizer
from ..parallel.local_engine import LOCAL, LocalStatistics
from ..random_state import rng_state, set_rng_state
from ..schedules import Schedule, build_schedule
from ..stats import StatisticsEngine, build_engine
from ..tasks import Task, task_of
from ..validation import MEMORY_FORMATS, check_config, check_model, plain


@dataclass
class Experiment:
    """Everything a run is made of, built from the config. `adaptive` owns the batch-size policy, its
    statistics engine and the run's counters (steps, samples, the next batch size)."""

    world: World
    device: torch.device
    dataset: ArrayDataset
    data: TrainingData
    model: torch.nn.Module
    step_model: torch.nn.Module  # what untested steps run: the model, in DDP across ranks, compiled if asked
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    adaptive: AdaptiveBatch
    autocast: contextlib.AbstractContextManager
    capped_batch_sizes: dict[str, Any]  # {batch_size key: value asked for} where it exceeded the training set
    held_out: dict[str, Any]  # what the summary records of the validation split ({} without one)
    task: Task  # what the examples are for (the dataset's): the loss of every step, and what evaluation reports
    full_model: torch.nn.Module | None = None  # train.parallel=fsdp: an unsharded copy, for evaluation and model.pt

    @property
    def sharded(self) -> bool:
        return self.full_model is not None

    def evaluation_model(self) -> torch.nn.Module:
        """The whole model on every rank: the model itself, or under FSDP the unsharded copy loaded
        with the full state dict (every rank calls it: it gathers the shards)."""
        if self.full_model is None:
            return self.model
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True))
        self.full_model.load_state_dict(state)
        return self.full_model

    @property
    def policy(self) -> BatchSizePolicy:
        return self.adaptive.policy

    @property
    def engine(self) -> StatisticsEngine | LocalStatistics | None:  # the adaptive tests' statistics
        return self.adaptive.engine

    def state_dict(self) -> dict[str, Any] | None:
        """What the components need to continue exactly where they are: the weights, the optimizer,
        the data stream, the policy with the counters, and every rank's random generators and engine
        choices (dropout draws and ghost_measured's forms differ across ranks). Every rank calls it
        (it gathers); rank 0 gets the state, the others None. Under FSDP the model and the optimizer
        are None: every rank saves its shards (run.checkpoint.save_sharded)."""
        adaptive = self.adaptive.state_dict()
        rng = self.world.gather(rng_state())
        engines = self.world.gather(adaptive.pop("engine"))
        if not self.world.is_main:
            return None
        return {
            "model": None if self.sharded else self.model.state_dict(),
            "optimizer": None if self.sharded else self.optimizer.state_dict(),
            "data": self.data.state_dict(),
            "adaptive": {**adaptive, "engine": engines},
            "rng": rng,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """On every rank; a run resumed on more ranks than it had gives the new ones rank 0's share."""
        rank = self.world.rank if self.world.rank < len(state["rng"]) else 0
        if state["model"] is not None:  # None: FSDP's shards, loaded by load_sharded
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.data.load_state_dict(state["data"])
        adaptive = state["adaptive"]
        self.adaptive.load_state_dict({**adaptive, "engine": adaptive["engine"][rank]})
        set_rng_state(state["rng"][rank])


def build_experiment(cfg: DictConfig, world: World = SINGLE_PROCESS) -> Experiment:
    """The experiment of `cfg`, after checking it (`train` checks once, before it takes the run directory)."""
    check_config(cfg, world)
    return build_checked_experiment(cfg, world)


def build_checked_experiment(cfg: DictConfig, world: World) -> Experiment:
    device = resolve_device(cfg.device, world.local_rank)
    torch.manual_seed(cfg.seed)
    with world.main_first():  # rank 0 downloads what is missing; the others then find it
        dataset = dataset_from_config(plain(cfg.dataset), cfg.data_dir)
    validation = cfg.dataset.get("validation", 0)
    held_out = holdout_record(dataset.num_train, validation)
    dataset = hold_out(dataset, validation).to(device)
    data = TrainingData(dataset, build_augmentation(cfg.dataset.augmentation), cfg.seed, device)
    model = model_from_config(plain(cfg.model), dataset.input_shape, dataset.num_classes)
    check_text_model(dataset, model, cfg.model.get("name") or cfg.model["_target_"])
    task = task_of(dataset)
    population = dataset.num_train
    batch_options, capped = cap_batch_sizes(plain(cfg.batch_size), population)  # batches hold distinct examples
    policy = build_policy(batch_options, budget=cfg.train.samples, population=population)
    check_model(model, policy, cfg)
    model = model.to(device, memory_format=MEMORY_FORMATS[cfg.train.memory_format])
    full_model = None
    if cfg.train.parallel == "fsdp":  # before the optimizer and the engine: both hold the shards
        from ..parallel.fsdp import block_types, shard_model  # torch's FSDP: seconds of imports, paid where used

        full_model = copy.deepcopy(model)
        model = shard_model(model, world, block_types(model))
    engine = None
    if isinstance(policy, AdaptiveTest):  # on the bare model: tested steps reduce their own sums
        engine = (cfg.batch_size.engine if cfg.batch_size.engine == LOCAL
                  else build_engine(cfg.batch_size.engine, model, loss=task.loss))
    step_model = model
    if world.size > 1 and full_model is None:
        step_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    step_model = torch.compile(step_model) if cfg.train.compile else step_model
    precision = autocast(device, cfg.train.precision)
    max_micro = cfg.batch_size.max_micro  # "auto": the loop's search sets adaptive.max_micro
    return Experiment(
        world=world,
        device=device,
        dataset=dataset,
        data=data,
        model=model,
        step_model=step_model,
        optimizer=build_optimizer(plain(cfg.optimizer), model.parameters()),
        schedule=build_schedule(plain(cfg.schedule)),
        adaptive=AdaptiveBatch(model, policy, engine, None if max_micro == "auto" else max_micro,
                               step_model=step_model, autocast=precision, world=world, task=task,
                               parts=cfg.batch_size.get("parts", 2)),
        autocast=precision,
        capped_batch_sizes=capped,
        held_out=held_out,
        task=task,
        full_model=full_model,
    )
