"""Shared test helpers: compose the project's real Hydra config."""
from __future__ import annotations

from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
import torch
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "configs"


def compose(*overrides: str) -> DictConfig:
    """configs/train.yaml with `overrides`, as `python src/train.py <overrides>` would see it."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose("train", overrides=list(overrides))


class Float64(torch.nn.Module):
    """Runs the wrapped model in float64, so that splits can be compared to the last digits."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model.double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.double())
