"""A seeded, resumable, endless stream of example indices, drawn in batches without replacement."""

from __future__ import annotations

import numpy as np
import torch


def derive_seed(seed: int, *key: int) -> int:
    """A 64-bit seed for the sub-stream `key` of `seed`; distinct keys give unrelated seeds."""
    sequence = np.random.SeedSequence(seed, spawn_key=key)
    return int(sequence.generate_state(1, dtype=np.uint64)[0])


_PERMUTATION_KEY = 0  # derive_seed(seed, 0, epoch) seeds the permutation of each epoch


class IndexStream:
    """Endless stream of example indices, taken a batch at a time; every batch holds distinct examples.

    Epoch e is a permutation of range(n) drawn from a generator seeded by (seed, e). A batch takes the
    next indices of the current epoch. One that runs past the epoch's end continues with the first
    indices of the next epoch that it does not already hold; the ones it passed over come next in that
    epoch, in their order. So every epoch still visits each example once, a batch of n is always a
    permutation of the examples, and where no batch meets its own examples again the stream is the
    plain sequence of permutations.

    State: (epoch, offset, head), head being the indices that the batch entering the epoch took from
    it; the epoch's order is head, then the rest of its permutation in order.
    """

    def __init__(self, num_examples: int, seed: int) -> None:
        if num_examples < 1:
            raise ValueError(f"num_examples must be positive, got {num_examples}")
        self.num_examples = num_examples
        self.seed = seed
        self.epoch = 0
        self.offset = 0
        self.head = torch.empty(0, dtype=torch.int64)
        self._order: torch.Tensor | None = None  # the current epoch's order, made from (epoch, head)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The permutation drawn for `epoch` (int64, CPU), before any batch entering it reorders it."""
        generator = torch.Generator().manual_seed(derive_seed(self.seed, _PERMUTATION_KEY, epoch))
        return torch.randperm(self.num_examples, generator=generator)

    def order(self) -> torch.Tensor:
        """The order of the examples in the current epoch."""
        if self._order is None:
            permutation = self.permutation(self.epoch)
            if len(self.head):
                permutation = torch.cat([self.head, permutation[~torch.isin(permutation, self.head)]])
            self._order = permutation
        return self._order

    def _enter_epoch(self, epoch: int, head: torch.Tensor) -> None:
        self.epoch, self.offset, self.head, self._order = epoch, len(head), head, None

    def take(self, count: int) -> torch.Tensor:
        """The next batch: `count` distinct indices (at most the number of examples)."""
        if not 0 <= count <= self.num_examples:
            raise ValueError(
                f"a batch of {count} examples cannot be drawn without replacement from {self.num_examples}; "
                f"use a batch size between 0 and {self.num_examples}"
            )
        end = min(self.offset + count, self.num_examples)
        batch = self.order()[self.offset : end]
        self.offset = end
        missing = count - len(batch)
        if self.offset == self.num_examples:
            if missing == 0:
                self._enter_epoch(self.epoch + 1, self.head[:0])
            else:
                following = self.permutation(self.epoch + 1)
                head = following[~torch.isin(following, batch)][:missing]
                self._enter_epoch(self.epoch + 1, head)
                batch = torch.cat([batch, head])
        return batch

    def state_dict(self) -> dict:
        return {
            "num_examples": self.num_examples, "seed": self.seed, "epoch": self.epoch, "offset": self.offset,
            "head": self.head.tolist(),
        }

    def load_state_dict(self, state: dict) -> None:
        if (state["num_examples"], state["seed"]) != (self.num_examples, self.seed):
            raise ValueError(
                f"state is for a stream of {state['num_examples']} examples with seed {state['seed']}, "
                f"not {self.num_examples} with seed {self.seed}"
            )
        self._enter_epoch(state["epoch"], torch.tensor(state.get("head", []), dtype=torch.int64))
        self.offset = state["offset"]
