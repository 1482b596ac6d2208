"""Adaptive batch sizes for adaptive gradient methods. `AdaptiveBatch` runs the batch-size tests in
any training loop (see examples/own_training_loop.py); `src/train.py` is the project's own loop.

The names below load on first use, so that importing a torch-free module of the package (errors,
run_keys, run.lock) does not import torch: src/train.py refuses a busy run directory before it does."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["AdaptiveBatch", "Diverged", "Step"]

if TYPE_CHECKING:
    from .adaptive_batch import AdaptiveBatch, Diverged, Step


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import adaptive_batch

        return getattr(adaptive_batch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
