"""Adaptive batch sizes in your own training loop: your model, your data loader, your optimizer, and
one `AdaptiveBatch.step` per step, which leaves the batch-mean gradient in .grad, runs the policy's
test on the per-example gradients and says how large the next batch is.

    .venv/bin/python examples/own_training_loop.py                       # AdaGrad with the norm test
    .venv/bin/python examples/own_training_loop.py --policy gns --engine opacus --epochs 2

The data are scikit-learn's 8x8 digits (no download); the loader's batch sampler reads the size of
each batch from `adaptive.batch_size` as it draws it.
"""
from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, Sampler, TensorDataset

from adabatch import AdaptiveBatch
from adabatch.stats import ENGINES

POLICIES = {  # the options of configs/batch_size/<name>.yaml
    "norm": {"name": "norm", "initial": 4, "max": 256, "eta": 1.0},
    "gns": {"name": "gns", "initial": 4, "max": 256, "multiple": 1.0, "ema": 0.9},
    "augmented_inner_product": {"name": "augmented_inner_product", "initial": 4, "max": 256, "theta": 1.0, "nu": 1.0},
    "coordinate_norm": {"name": "coordinate_norm", "initial": 4, "max": 256, "eta": 1.0, "quantile": 0.9},
}


def digits() -> tuple[TensorDataset, TensorDataset]:
    """(train, test): 1437 and 360 images, standardized."""
    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    x = (x - x.mean()) / x.std()
    y = torch.tensor(labels)
    return TensorDataset(x[:1437], y[:1437]), TensorDataset(x[1437:], y[1437:])


def small_cnn() -> nn.Module:
    # GroupNorm, not BatchNorm: per-example gradients (and so the tests) are undefined under BatchNorm.
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 10),
    )


class GrowingBatches(Sampler):
    """Each epoch a new permutation, cut into batches of `adaptive.batch_size` read as each batch is
    drawn (so use num_workers=0: a worker's prefetched batches would have the old size). A remainder
    smaller than the current size waits for the next epoch's permutation, as it would with drop_last."""

    def __init__(self, size: int, adaptive: AdaptiveBatch, seed: int) -> None:
        self.size, self.adaptive = size, adaptive
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self):
        order = torch.randperm(self.size, generator=self.generator).tolist()
        start = 0
        while start + self.adaptive.batch_size <= self.size:
            end = start + self.adaptive.batch_size
            yield order[start:end]
            start = end


def accuracy(model: nn.Module, data: TensorDataset) -> float:
    model.eval()
    with torch.no_grad():
        x, y = data.tensors
        correct = (model(x).argmax(1) == y).float().mean().item()
    model.train()
    return correct


def train(policy: str = "norm", engine: str = "ghost", max_micro: int = 64, epochs: int = 3, seed: int = 0) -> list[dict]:
    """Train and return one record per step (the tested ones carry the test's statistics)."""
    torch.manual_seed(seed)
    train_set, test_set = digits()
    model = small_cnn()
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.03)
    adaptive = AdaptiveBatch(model, POLICIES[policy], engine=engine, max_micro=max_micro)
    loader = DataLoader(train_set, batch_sampler=GrowingBatches(len(train_set), adaptive, seed))
    history = []
    for epoch in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            loss, statistics, next_size = adaptive.step(x, y)  # .grad holds the batch-mean gradient
            optimizer.step()
            history.append({"epoch": epoch, "batch_size": len(y), "loss": loss, "next_batch_size": next_size,
                            **(statistics or {})})
        print(f"epoch {epoch}: batch size {adaptive.batch_size}, test accuracy {accuracy(model, test_set):.3f}")
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", choices=POLICIES, default="norm")
    parser.add_argument("--engine", choices=ENGINES, default="ghost")
    parser.add_argument("--max-micro", type=int, default=64, help="largest micro-batch; larger batches accumulate exactly")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    history = train(args.policy, args.engine, args.max_micro, args.epochs)
    tested = [r for r in history if r.get("tested")]
    print(f"{len(history)} steps, {len(tested)} tested; batch size {history[0]['batch_size']} -> {history[-1]['next_batch_size']}")


if __name__ == "__main__":
    main()
