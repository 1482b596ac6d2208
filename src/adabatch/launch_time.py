"""`${launch_time:%Y-%m-%d_%H-%M-%S}` in configs (configs/train.yaml names run directories with it):
Hydra's `${now:...}`, but one value for all the ranks of a torchrun launch, rank 0's clock
(distributed.join_process_group agrees on it). Torch-free, so that src/train.py registers it cheaply."""
from __future__ import annotations

import datetime

from omegaconf import OmegaConf

_launch_time: list[datetime.datetime] = []


def set_launch_time(stamp: datetime.datetime) -> None:
    _launch_time[:] = [stamp]


def launch_time(pattern: str) -> str:
    if not _launch_time:  # no launch time agreed on: this process's clock
        _launch_time.append(datetime.datetime.now())
    return _launch_time[0].strftime(pattern)


# Cached like ${now:...}: Hydra copies the cache into the configs it hands to launched jobs.
OmegaConf.register_new_resolver("launch_time", launch_time, replace=True, use_cache=True)
