"""The run's dataset from its config group: the config's `_target_` (a source: any function returning an
ArrayDataset), or that of configs/dataset/<name>.yaml."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..components import build, check
from ..errors import ConfigError
from ..run_keys import run_keys
from .sources import ArrayDataset


def dataset_from_config(cfg: Mapping[str, Any], data_dir: str | Path) -> ArrayDataset:
    """Load the dataset; a source with a `data_dir` parameter gets the run's data_dir (where downloads land)."""
    dataset = build("dataset", cfg, **source_arguments(data_dir))
    if not isinstance(dataset, ArrayDataset):
        raise ConfigError(f"dataset={cfg.get('name') or cfg.get('_target_')} returned a {type(dataset).__name__}, "
                          "not an adabatch.data.ArrayDataset (see ArrayDataset.from_arrays)")
    return dataset


def check_dataset_config(cfg: Mapping[str, Any], data_dir: str | Path) -> None:
    """Refuse, before anything is loaded, a dataset config that `dataset_from_config` could not call."""
    check("dataset", cfg, **source_arguments(data_dir))


def source_arguments(data_dir: str | Path) -> dict[str, Any]:
    return {"run_keys": run_keys("dataset"), "offered": {"data_dir": str(data_dir)}}
