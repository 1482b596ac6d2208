"""Check a composed config before anything is loaded or written: every rejection is one line naming
the key, the value and what is allowed.

The checks build the cheap components (policy, schedule, optimizer on a stand-in parameter, the model
on the meta device), so they reject exactly what building the run would reject, only earlier.
"""
from __future__ import annotations

import re

import torch
from omegaconf import DictConfig, OmegaConf

from .batch_size import AdaptiveTest, build_policy
from .config_ranges import check_ranges
from .data import AUGMENTATIONS, DATASET_SHAPES, DATASETS
from .device import autocast, resolve_device
from .distributed import World
from .models import build_model
from .optim import build_optimizer
from .schedules import build_schedule
from .stats import ENGINES, build_engine

RESUME_MODES = ("auto", "never", "must")
MODEL_KEYS_NOT_OPTIONS = ("name", "norm")


class ConfigError(ValueError):
    """A config that cannot run; the message is one line."""


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
    check_ranges(cfg)
    choice("resume", cfg.resume, RESUME_MODES)
    if cfg.batch_size.max_micro != "auto":
        at_least("batch_size.max_micro", cfg.batch_size.max_micro, 1, alternative="or auto")
    memory_gb = cfg.batch_size.max_micro_memory_gb
    if memory_gb is not None and (isinstance(memory_gb, bool) or not isinstance(memory_gb, (int, float)) or memory_gb <= 0):
        raise ConfigError(f"batch_size.max_micro_memory_gb={memory_gb} must be a number of GiB > 0, "
                          "or null (the device's free memory)")

    choice("dataset", cfg.dataset.name, DATASETS)
    choice("dataset.augmentation", cfg.dataset.augmentation, AUGMENTATIONS)
    device = resolve_device(cfg.device, world.local_rank)
    autocast(device, train.precision)
    build_schedule(plain(cfg.schedule))
    try:
        build_optimizer(plain(cfg.optimizer), [torch.nn.Parameter(torch.zeros(1))])
    except (ValueError, TypeError) as error:  # torch's own messages name the value but not the key
        message = re.sub(r"\w+\.__init__\(\) ", "", str(error))
        raise ConfigError(message if message.startswith("optimizer") else f"optimizer={cfg.optimizer.name}: {message}") from None
    policy = build_policy(plain(cfg.batch_size), budget=train.samples)
    if policy.initial < world.size:
        raise ConfigError(
            f"batch_size.initial={policy.initial} gives some of the {world.size} ranks no example; "
            f"raise batch_size.initial to at least {world.size} or run fewer processes"
        )
    shape, classes = DATASET_SHAPES[cfg.dataset.name]
    options = {k: v for k, v in plain(cfg.model).items() if k not in MODEL_KEYS_NOT_OPTIONS}
    with torch.device("meta"):  # the model's structure without its memory
        model = build_model(cfg.model.name, shape, classes, norm=cfg.model.norm, **options)
    if isinstance(policy, AdaptiveTest):
        choice("batch_size.engine", cfg.batch_size.engine, ENGINES)
        refuse_batch_norm(model, cfg)
        refuse_dropout_under_vmap(model, cfg)
        if cfg.batch_size.engine == "ghost":
            build_engine("ghost", model)  # names any layer it has no rule for


def refuse_batch_norm(model: torch.nn.Module, cfg: DictConfig) -> None:
    """BatchNorm mixes the examples of a batch, so per-example gradients (and the tests) are undefined."""
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ConfigError(
            f"batch_size={cfg.batch_size.name} needs per-example gradients, which BatchNorm does not have "
            f"(model.norm={cfg.model.norm}); use model.norm=group (the default) or model.norm=none"
        )


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
