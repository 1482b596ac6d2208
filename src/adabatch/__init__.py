"""Adaptive batch sizes for adaptive gradient methods. `AdaptiveBatch` runs the batch-size tests in
any training loop (see examples/own_training_loop.py); `src/train.py` is the project's own loop."""
from .adaptive_batch import AdaptiveBatch, Diverged, Step

__all__ = ["AdaptiveBatch", "Diverged", "Step"]
