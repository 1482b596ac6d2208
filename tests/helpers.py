"""Shared test helpers: compose the project's real Hydra config; small float64 problems."""
from __future__ import annotations

from pathlib import Path

import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig

from adabatch.data import ArrayDataset, Batch, TrainingData, build_augmentation
from adabatch.models import build_model

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


BATCH = 14
MODELS = {  # key: (model name, input shape, options, augmentation)
    "mlp": ("mlp", (1, 6, 6), {"hidden": [9]}, "none"),
    "cnn": ("cnn", (1, 8, 8), {}, "none"),
    "resnet18_gn": ("resnet18", (3, 8, 8), {"width": 4, "groups": 2}, "crop_flip"),
    "vit": ("vit", (3, 8, 8), {"dim": 8, "depth": 2, "heads": 2, "patch": 4}, "vit"),
}
# The models whose weights train.memory_format=channels_last lays out otherwise: the same, channels last.
CHANNELS_LAST_MODELS = {f"{key}_channels_last": MODELS[key] for key in ("cnn", "resnet18_gn")}


def random_dataset(shape, n=40, classes=5, seed=0) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    images = lambda count: torch.randint(0, 256, (count, *shape), generator=g, dtype=torch.uint8)  # noqa: E731
    labels = lambda count: torch.randint(0, classes, (count,), generator=g)  # noqa: E731
    c = shape[0]
    return ArrayDataset("random", images(n), labels(n), images(8), labels(8), classes, 255.0, (0.5,) * c, (0.25,) * c)


def tiny_problem(model_key: str, seed: int = 0, batch_size: int = BATCH) -> tuple[Float64, TrainingData, Batch]:
    """A small float64 model from MODELS or CHANNELS_LAST_MODELS, its random data, and the first batch of the stream."""
    name, shape, options, augmentation = {**MODELS, **CHANNELS_LAST_MODELS}[model_key]
    dataset = random_dataset(shape)
    data = TrainingData(dataset, build_augmentation(augmentation), seed=seed, device=torch.device("cpu"))
    torch.manual_seed(seed)
    model = Float64(build_model(name, shape, dataset.num_classes, norm="group", **options))
    if model_key.endswith("_channels_last"):
        model = model.to(memory_format=torch.channels_last)
    return model, data, data.draw(batch_size)


def per_example_gradients(model: torch.nn.Module, data: TrainingData, batch: Batch) -> torch.Tensor:
    """(b, d) float64: each example's gradient, one backward per example, the trainable parameters
    flattened and concatenated in order. Leaves the last example's gradient in .grad."""
    x, y = data.examples(batch)
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(len(y)):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        rows.append(torch.cat([p.grad.flatten() for p in params]).double())
    return torch.stack(rows)
