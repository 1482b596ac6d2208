"""Check a composed config once per run, before anything is loaded or written: every rejection is one
line naming the key, the value and what is allowed.

Each value is checked in one place. A component's values are checked by the component itself
(adabatch.checks, called by its constructor): `check_config` builds the cheap components (policy,
schedule, optimizer on a stand-in parameter, augmentation), so their checks run now, and checks that
the model's and the dataset's targets can be called with their keys; the model and the dataset check
their values when they are built (after the data is loaded, still before anything is written).
Checked here are the run's own keys, which no component takes (RUN_SETTINGS: train.*, seed, resume,
...), and the checks that span groups (`check_across_groups`); `check_model` checks the built model
for the run's policy.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from . import checks
from .batch_size import AdaptiveTest, BatchSizePolicy, build_policy
from .data import build_augmentation
from .data.from_config import check_dataset_config
from .device import autocast, resolve_device
from .distributed import World
from .errors import ConfigError
from .models import check_model_config
from .optim import build_optimizer
from .parallel.local_engine import LOCAL, MIN_PARTS
from .schedules import build_schedule
from .stats import ENGINES, build_engine

__all__ = ["ConfigError", "check_config", "check_model", "plain"]

SEED_LIMIT = 2**64  # torch's generators take 64-bit seeds
RESUME_MODES = ("auto", "never", "must")
LOGGERS = ("none", "wandb")  # configs/logger/: what reporting.Reporter logs to besides the run's own files
PARALLEL = ("ddp", "fsdp")  # train.parallel: how the ranks hold the model (a full copy each, or shards)
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}  # train.memory_format
AUTO = "auto"  # batch_size.max_micro=auto (micro_batch.AUTO; not imported, so that the run package may import this)


def at_least_one(key: str, value: Any) -> int:
    return checks.integer(key, value, 1)


def max_micro(key: str, value: Any) -> Any:
    if value != AUTO and not (checks.is_integer(value) and value >= 1):
        checks.refuse(key, value, "an integer >= 1 or auto")
    return value


def memory_gb(key: str, value: Any) -> Any:
    if value is not None and not (checks.is_number(value) and value > 0):
        checks.refuse(key, value, "a number of GiB > 0, or null (the device's free memory)")
    return value


# The run's own keys, which no component's constructor takes: each one's check.
RUN_SETTINGS: dict[str, Callable[[str, Any], Any]] = {
    "seed": lambda key, value: checks.integer(key, value, 0, SEED_LIMIT - 1),
    "resume": lambda key, value: checks.one_of(key, value, RESUME_MODES),
    "logger.name": lambda key, value: checks.one_of(key, value, LOGGERS),
    **{f"train.{key}": at_least_one for key in ("samples", "eval_every", "eval_batch_size", "log_every", "checkpoint_every")},
    "train.eval_first": lambda key, value: checks.optional_integer(key, value, 1, "none"),
    "train.eval_train_examples": lambda key, value: checks.optional_integer(key, value, 1, "all"),
    "train.progress_every_s": lambda key, value: checks.number(key, value, 0, unit="seconds", why="0 gives a line every step"),
    "train.compile": checks.switch,
    "train.save_model": checks.switch,
    "batch_size.max_micro": max_micro,
    "train.parallel": lambda key, value: checks.one_of(key, value, PARALLEL),
    "train.memory_format": lambda key, value: checks.one_of(key, value, tuple(MEMORY_FORMATS)),
    "batch_size.max_micro_memory_gb": memory_gb,
}


def plain(node: DictConfig) -> dict:
    return OmegaConf.to_container(node, resolve=True)


def check_config(cfg: DictConfig, world: World) -> None:
    """Refuse the first bad value of `cfg` (a ConfigError of one line); call it once per run."""
    try:
        _check(cfg, world)
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:
        raise ConfigError(str(error)) from None


def _check(cfg: DictConfig, world: World) -> None:
    for key, check in RUN_SETTINGS.items():
        node = OmegaConf.select(cfg, key, default=None)
        check(key, OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node)
    check_dataset_config(plain(cfg.dataset), cfg.data_dir)
    build_augmentation(cfg.dataset.augmentation)
    device = resolve_device(cfg.device, world.local_rank)
    autocast(device, cfg.train.precision)
    build_schedule(plain(cfg.schedule))
    build_optimizer(plain(cfg.optimizer), [torch.nn.Parameter(torch.zeros(1))])
    policy = build_policy(plain(cfg.batch_size), budget=cfg.train.samples)
    check_model_config(plain(cfg.model))
    check_across_groups(cfg, policy, world)


def check_across_groups(cfg: DictConfig, policy: BatchSizePolicy, world: World) -> None:
    """The checks of one key against another group's: the batch against the ranks, the engine for a test."""
    if policy.initial < world.size:
        raise ConfigError(
            f"batch_size.initial={policy.initial} gives some of the {world.size} ranks no example; "
            f"raise batch_size.initial to at least {world.size} or run fewer processes"
        )
    if isinstance(policy, AdaptiveTest):
        checks.one_of("batch_size.engine", cfg.batch_size.engine, (*ENGINES, LOCAL))
        if cfg.batch_size.engine == LOCAL:
            check_local_parts(cfg, policy, world)
    if cfg.train.parallel == "fsdp":
        check_fsdp(cfg, policy, world)


def check_local_parts(cfg: DictConfig, policy: BatchSizePolicy, world: World) -> None:
    """engine=local needs two parts in every tested step. A test's batches hold at least two examples
    (its policy checks batch_size.initial), so `parts` >= 2 gives two parts in one process too."""
    checks.integer("batch_size.parts", cfg.batch_size.get("parts", MIN_PARTS), MIN_PARTS,
                   why="the test from local gradients compares at least two parts of the batch")


def check_fsdp(cfg: DictConfig, policy: BatchSizePolicy, world: World) -> None:
    """FSDP shards the model over the ranks: torchrun, and for a test only the norm test or gns from parts."""
    if world.size < 2:
        raise ConfigError("train.parallel=fsdp shards the model over the ranks of a torchrun launch, and this is one "
                          "process; launch with torchrun --nproc_per_node=2 (or more), or use train.parallel=ddp")
    if cfg.train.memory_format != "contiguous":
        raise ConfigError(f"train.memory_format={cfg.train.memory_format} is not offered with train.parallel=fsdp (not "
                          "tested with sharded weights); use train.memory_format=contiguous")
    if cfg.batch_size.max_micro == AUTO:
        raise ConfigError("batch_size.max_micro=auto is not offered with train.parallel=fsdp (its trial steps would "
                          "differ across ranks); set batch_size.max_micro to a number")
    if not isinstance(policy, AdaptiveTest):
        return
    if cfg.batch_size.engine != LOCAL:
        raise ConfigError(f"batch_size.engine={cfg.batch_size.engine} forms per-example gradients of the full model, "
                          "which train.parallel=fsdp does not hold; use batch_size.engine=local, or train.parallel=ddp")
    if policy.needs.coordinates or policy.needs.inner_products:
        raise ConfigError(f"batch_size={cfg.batch_size.name} from local gradients under train.parallel=fsdp would hold "
                          "unsharded gradient copies on every rank; use batch_size=norm or gns, or train.parallel=ddp")


def check_model(model: torch.nn.Module, policy: BatchSizePolicy, cfg: DictConfig) -> None:
    """What the built model must be for the run's policy: per-example gradients for a test."""
    if not isinstance(policy, AdaptiveTest) or cfg.batch_size.engine == LOCAL:  # parts need no per-example gradient
        return
    refuse_batch_norm(model, cfg)
    refuse_dropout_under_vmap(model, cfg)
    if cfg.batch_size.engine == "ghost":
        try:
            build_engine("ghost", model)  # names any layer it has no rule for
        except ValueError as error:
            raise ConfigError(str(error)) from None


def refuse_batch_norm(model: torch.nn.Module, cfg: DictConfig) -> None:
    """BatchNorm mixes the examples of a batch, so per-example gradients (and the tests) are undefined."""
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        fix = (f"(model.norm={cfg.model.norm}); use model.norm=group (the default) or model.norm=none" if "norm" in cfg.model
               else f"(model={cfg.model.name} has BatchNorm layers); use GroupNorm or LayerNorm instead")
        raise ConfigError(f"batch_size={cfg.batch_size.name} needs per-example gradients, which BatchNorm does not have {fix}")


def refuse_dropout_under_vmap(model: torch.nn.Module, cfg: DictConfig) -> None:
    """torch.func's vmap cannot draw the masks of a batched forward, so the tested step would not be the
    step it tests; the other engines replay each micro-batch's masks."""
    if cfg.batch_size.engine == "functorch" and any(
        isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()
    ):
        raise ConfigError(
            f"batch_size.engine=functorch cannot run a model with dropout (model.dropout={cfg.model.get('dropout')}): "
            "vmap draws other masks than the step; use batch_size.engine=ghost or opacus, or model.dropout=0"
        )

