"""The keys of a component's config that configure the run, not the component: its display `name`,
the optimizer's labels in figures, the dataset's augmentation, the batch size's micro-batching and
statistics engine. Building a component leaves them out (`components.build`), and a user's config
may leave them out too: `complete_config` gives them their defaults."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, open_dict

NAME = object()  # the default of a label: the component's name

RUN_KEYS: dict[str, dict[str, Any]] = {
    "dataset": {"name": NAME, "augmentation": "none", "validation": 0},
    "model": {"name": NAME},
    "optimizer": {"name": NAME, "label": NAME, "tested_label": NAME},
    "schedule": {"name": NAME},
    "batch_size": {"name": NAME, "max_micro": 1024, "max_micro_memory_gb": None, "engine": "ghost",
                   "parts": 2},
}


def run_keys(group: str) -> tuple[str, ...]:
    return tuple(RUN_KEYS[group])


def complete_config(cfg: DictConfig, choices: Mapping[str, str | None]) -> None:
    """Give each component config the run keys it leaves out; a missing `name` is the name of its
    config file (`choices`, Hydra's runtime.choices), which records, tables and figures then show."""
    with open_dict(cfg):
        for group, defaults in RUN_KEYS.items():
            node = cfg[group]
            if node.get("name") is None:
                node.name = choices.get(group) or node.get("_target_", group)
            for key, default in defaults.items():
                if key not in node:
                    node[key] = node.name if default is NAME else default
