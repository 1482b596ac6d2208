"""A validation split held out of the training split: `dataset.validation=<n>` takes n training examples
out of training (the stream never draws them; the test split is untouched), and each evaluation also
measures the loss and accuracy on them.

The held-out examples are the same for every run of every seed: the first n of a permutation of the
training split drawn from VALIDATION_SEED, which does not depend on the run's seed. So runs that choose a
setting by validation accuracy compare on one validation set. The run records which examples they are
(`holdout_record`: count, seed and a SHA-256 of the sorted indices).
"""
from __future__ import annotations

import dataclasses
import hashlib

import torch

from ..errors import ConfigError
from .sources import ArrayDataset
from .stream import derive_seed

VALIDATION_SEED = derive_seed(0, 2)  # sub-stream 2 of seed 0: 0 is the epochs' permutations, 1 the augmentation


def held_out_indices(num_train: int, count: int) -> torch.Tensor:
    """The indices (sorted, int64) of the `count` training examples held out of a training split of `num_train`."""
    generator = torch.Generator().manual_seed(VALIDATION_SEED)
    return torch.randperm(num_train, generator=generator)[:count].sort().values


def hold_out(dataset: ArrayDataset, count: int) -> ArrayDataset:
    """`dataset` with `count` training examples moved into its validation split (the dataset itself when 0).
    The training split keeps the other examples in their order; normalization stays the source's."""
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count < dataset.num_train:
        raise ConfigError(f"dataset.validation={count} must be a whole number of training examples from 0 to "
                          f"{dataset.num_train - 1} (the {dataset.name} training split has {dataset.num_train}); "
                          "set dataset.validation=0 to hold none out")
    if count == 0:
        return dataset
    held = held_out_indices(dataset.num_train, count)
    kept = torch.ones(dataset.num_train, dtype=torch.bool)
    kept[held] = False
    return dataclasses.replace(
        dataset,
        train_x=dataset.train_x[kept], train_y=dataset.train_y[kept],
        validation_x=dataset.train_x[held], validation_y=dataset.train_y[held],
    )


def holdout_record(num_train_before: int, count: int) -> dict:
    """What the summary records of the validation split: {} when none is held out."""
    if count == 0:
        return {}
    indices = held_out_indices(num_train_before, count).numpy().astype("<i8")
    return {"validation": {"examples": count, "of_training_examples": num_train_before, "seed": VALIDATION_SEED,
                           "indices_sha256": hashlib.sha256(indices.tobytes()).hexdigest()}}
