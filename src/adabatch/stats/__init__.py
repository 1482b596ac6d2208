"""Per-example gradient statistics for the adaptive batch-size tests."""
from .base import StatisticsEngine
from .engines import ENGINES, FunctorchEngine, OpacusEngine, PerExampleEngine, build_engine
from .ghost import GhostEngine
from .statistics import IP_MODES, BatchStatistics, batch_statistics
from .sums import GradientSums, Needs
from .tested_step import gradient_with_statistics

__all__ = [
    "ENGINES", "IP_MODES", "BatchStatistics", "FunctorchEngine", "GhostEngine", "GradientSums", "Needs",
    "OpacusEngine", "PerExampleEngine", "StatisticsEngine", "batch_statistics", "build_engine", "gradient_with_statistics",
]
