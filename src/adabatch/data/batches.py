"""Turning streamed indices into normalized, augmented (x, y) batches on the device."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

from adabatch.data.augment import Augmentation
from adabatch.data.sources import ArrayDataset
from adabatch.data.stream import IndexStream, derive_seed

_AUGMENTATION_KEY = 1  # derive_seed(seed, 1) seeds the augmentation generator
# The train split is normalized once, up front, when its float32 copy takes at most this many bytes:
# gathering a batch of floats then costs a fraction of gathering bytes and normalizing them each step.
NORMALIZED_TRAIN_SPLIT_MAX_BYTES = 2**31


def _even_bounds(total: int, parts: int) -> list[tuple[int, int]]:
    """`parts` consecutive [start, end) ranges covering range(total), sizes differing by at most 1 (larger first)."""
    base, extra = divmod(total, parts)
    bounds, start = [], 0
    for part in range(parts):
        end = start + base + (1 if part < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


@dataclass
class Batch:
    indices: torch.Tensor  # (b,) int64
    aug_params: torch.Tensor | None  # (b, k), or None without augmentation

    def __len__(self) -> int:
        return len(self.indices)

    def _slice(self, start: int, end: int) -> Batch:
        params = None if self.aug_params is None else self.aug_params[start:end]
        return Batch(self.indices[start:end], params)

    def split(self, max_size: int) -> list[Batch]:
        """Consecutive micro-batches of at most `max_size` examples, as few and as even as possible."""
        if max_size < 1:
            raise ValueError(f"max_size must be positive, got {max_size}")
        return self.split_into(-(-len(self) // max_size))

    def split_into(self, parts: int) -> list[Batch]:
        """`parts` consecutive micro-batches as even as possible, leaving out empty ones."""
        if len(self) == 0:
            return []
        return [self._slice(start, end) for start, end in _even_bounds(len(self), parts) if end > start]

    def shard(self, rank: int, world_size: int) -> Batch:
        """The contiguous part of this batch for data-parallel `rank` of `world_size`."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        return self._slice(*_even_bounds(len(self), world_size)[rank])

    def local_micro_batches(self, rank: int, world_size: int, max_micro: int) -> list[Batch]:
        """The micro-batches `rank` runs: its even share of the batch, split into as many
        micro-batches as every other rank (fewer only if its share is smaller than that count)."""
        layout = plan_layout(len(self), world_size, max_micro)
        return self.shard(rank, world_size).split_into(layout.accumulation)


@dataclass(frozen=True)
class Layout:
    """How a batch is spread: each of `world_size` ranks runs `accumulation` micro-batches of at
    most `micro_batch_size` examples (<= max_micro), all sizes within one example of each other."""

    world_size: int
    accumulation: int
    micro_batch_size: int


def plan_layout(batch_size: int, world_size: int, max_micro: int) -> Layout:
    if max_micro < 1:
        raise ValueError(f"batch_size.max_micro={max_micro} must be >= 1")
    accumulation = max(1, -(-batch_size // (world_size * max_micro)))
    return Layout(world_size, accumulation, -(-batch_size // (world_size * accumulation)))


@functools.lru_cache(maxsize=16)
def _channel_tensor(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """(1, C, 1, 1) float32 on `device`, made once: normalize runs for every micro-batch."""
    return torch.tensor(values, dtype=torch.float32, device=device).view(1, -1, 1, 1)


def normalize(x_uint8: torch.Tensor, dataset: ArrayDataset) -> torch.Tensor:
    """float32 (x / max_value - mean) / std, per channel; a dataset of token ids (not pixels) unchanged."""
    if not dataset.pixels:
        return x_uint8
    mean = _channel_tensor(dataset.mean, x_uint8.device)
    std = _channel_tensor(dataset.std, x_uint8.device)
    return (x_uint8.float() / dataset.max_value - mean) / std


class Examples(Protocol):
    """Where a step reads a batch's examples: `TrainingData`, or a caller's own tensors."""

    def examples(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]: ...


class TrainingData:
    """The train split on the device, a seeded index stream, and the augmentation."""

    def __init__(
        self,
        dataset: ArrayDataset,
        augmentation: Augmentation | None,
        seed: int,
        device: torch.device | str,
    ) -> None:
        self.device = torch.device(device)
        self.dataset = dataset
        self.augmentation = augmentation
        self.train_x = dataset.train_x.to(self.device)
        self.normalized = self.train_x.numel() * 4 <= NORMALIZED_TRAIN_SPLIT_MAX_BYTES
        if self.normalized:
            self.train_x = normalize(self.train_x, dataset)  # element by element: the floats a batch would get
        self.train_y = dataset.train_y.to(self.device)
        self.stream = IndexStream(len(dataset.train_y), seed)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(derive_seed(seed, _AUGMENTATION_KEY))

    @property
    def num_examples(self) -> int:
        return self.stream.num_examples

    def draw(self, batch_size: int) -> Batch:
        """The next `batch_size` examples of the stream, with their augmentation parameters."""
        indices = self.stream.take(batch_size)
        params = None if self.augmentation is None else self.augmentation.sample(batch_size, self.generator)
        return Batch(indices, params)

    def examples(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) on the device: x normalized float32, augmented with the batch's parameters."""
        indices = batch.indices.to(self.device)
        x = self.train_x.index_select(0, indices)
        if not self.normalized:
            x = normalize(x, self.dataset)
        if self.augmentation is not None:
            x = self.augmentation.apply(x, batch.aug_params)
        return x, self.train_y[indices]

    def state_dict(self) -> dict:
        return {"stream": self.stream.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state["stream"])
        self.generator.set_state(state["generator"])


def evaluation_batches(
    dataset: ArrayDataset,
    split: str,
    batch_size: int,
    device: torch.device | str,
    limit: int | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The first `limit` examples (all by default) of the "train", "validation" or "test" split, in
    order, normalized, without augmentation; under data parallelism, `rank`'s contiguous share of them."""
    images, labels = {
        "train": (dataset.train_x, dataset.train_y),
        "validation": (dataset.validation_x, dataset.validation_y),
        "test": (dataset.test_x, dataset.test_y),
    }[split]
    total = len(labels) if limit is None else min(limit, len(labels))
    first, end = _even_bounds(total, world_size)[rank]
    for start in range(first, end, batch_size):
        stop = min(start + batch_size, end)
        yield normalize(images[start:stop].to(device), dataset), labels[start:stop].to(device)
