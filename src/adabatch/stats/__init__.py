"""Per-example gradient statistics for the adaptive batch-size tests."""
from .engines import ENGINES, FunctorchEngine, OpacusEngine, PerExampleEngine, build_engine
from .statistics import IP_MODES, BatchStatistics, batch_statistics
from .sums import GradientSums, Needs
from .tested_step import gradient_with_statistics

__all__ = [
    "ENGINES", "IP_MODES", "BatchStatistics", "FunctorchEngine", "GradientSums", "Needs", "OpacusEngine",
    "PerExampleEngine", "batch_statistics", "build_engine", "gradient_with_statistics",
]
