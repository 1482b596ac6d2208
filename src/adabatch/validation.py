"""Check a composed config before anything is loaded or written: every rejection is one line naming
the key, the value and what is allowed.

`check_config` builds the cheap components (policy, schedule, optimizer on a stand-in parameter) and
checks that the model's and the dataset's targets can be called with their keys, so it rejects what
building the run would reject, only earlier. The model's shapes come from the data: `check_model`
checks the built model, after the data is loaded and before anything is written.
"""
from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from .batch_size import POLICY_CLASSES, AdaptiveTest, BatchSizePolicy, build_policy
from .config_ranges import check_ranges
from .data import AUGMENTATIONS, SHIPPED_SOURCES
from .data.from_config import check_dataset_config
from .device import autocast, resolve_device
from .distributed import World
from .errors import ConfigError
from .models import MODELS, check_model_config
from .optim import SHIPPED_OPTIMIZERS, build_optimizer
from .schedules import SHIPPED_SCHEDULES, build_schedule
from .stats import ENGINES, build_engine

__all__ = ["ConfigError", "check_config", "check_model", "plain"]

RESUME_MODES = ("auto", "never", "must")
LOGGERS = ("none", "wandb")  # configs/logger/: what reporting.Reporter logs to besides the run's own files
SHIPPED_NAMES = {"dataset": SHIPPED_SOURCES, "model": MODELS, "optimizer": SHIPPED_OPTIMIZERS,
                 "schedule": SHIPPED_SCHEDULES, "batch_size": POLICY_CLASSES}  # whose keys config_ranges knows


def plain(node: DictConfig) -> dict:
    return OmegaConf.to_container(node, resolve=True)


def check_config(cfg: DictConfig, world: World) -> None:
    try:
        _check(cfg, world)
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:
        raise ConfigError(str(error)) from None


def _check(cfg: DictConfig, world: World) -> None:
    train = cfg.train
    for key in ("samples", "eval_every", "eval_batch_size", "log_every", "checkpoint_every"):
        at_least(f"train.{key}", train[key], 1)
    if train.eval_first is not None:
        at_least("train.eval_first", train.eval_first, 1)
    check_ranges(cfg, SHIPPED_NAMES)
    choice("resume", cfg.resume, RESUME_MODES)
    choice("logger.name", cfg.logger.get("name"), LOGGERS)
    if cfg.batch_size.max_micro != "auto":
        at_least("batch_size.max_micro", cfg.batch_size.max_micro, 1, alternative="or auto")
    memory_gb = cfg.batch_size.max_micro_memory_gb
    if memory_gb is not None and (isinstance(memory_gb, bool) or not isinstance(memory_gb, (int, float)) or memory_gb <= 0):
        raise ConfigError(f"batch_size.max_micro_memory_gb={memory_gb} must be a number of GiB > 0, "
                          "or null (the device's free memory)")

    check_dataset_config(plain(cfg.dataset), cfg.data_dir)
    choice("dataset.augmentation", cfg.dataset.augmentation, AUGMENTATIONS)
    device = resolve_device(cfg.device, world.local_rank)
    autocast(device, train.precision)
    build_schedule(plain(cfg.schedule))
    build_optimizer(plain(cfg.optimizer), [torch.nn.Parameter(torch.zeros(1))])
    policy = build_policy(plain(cfg.batch_size), budget=train.samples)
    if policy.initial < world.size:
        raise ConfigError(
            f"batch_size.initial={policy.initial} gives some of the {world.size} ranks no example; "
            f"raise batch_size.initial to at least {world.size} or run fewer processes"
        )
    check_model_config(plain(cfg.model))
    if isinstance(policy, AdaptiveTest):
        choice("batch_size.engine", cfg.batch_size.engine, ENGINES)


def check_model(model: torch.nn.Module, policy: BatchSizePolicy, cfg: DictConfig) -> None:
    """What the built model must be for the run's policy: per-example gradients for a test."""
    if not isinstance(policy, AdaptiveTest):
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


def at_least(key: str, value, minimum: int, alternative: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{key}={value} must be an integer >= {minimum}{' ' + alternative if alternative else ''}")


def choice(key: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is unknown; choose one of {', '.join(allowed)}")
