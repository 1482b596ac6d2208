"""A seeded, resumable, endless stream of example indices."""

from __future__ import annotations

import numpy as np
import torch


def derive_seed(seed: int, *key: int) -> int:
    """A 64-bit seed for the sub-stream `key` of `seed`; distinct keys give unrelated seeds."""
    sequence = np.random.SeedSequence(seed, spawn_key=key)
    return int(sequence.generate_state(1, dtype=np.uint64)[0])


_PERMUTATION_KEY = 0  # derive_seed(seed, 0, epoch) seeds the permutation of each epoch


class IndexStream:
    """Endless stream of example indices.

    Epoch e is a permutation of range(n) drawn from a generator seeded by (seed, e),
    so the position (epoch, offset) is all the state needed to resume.
    """

    def __init__(self, num_examples: int, seed: int) -> None:
        if num_examples < 1:
            raise ValueError(f"num_examples must be positive, got {num_examples}")
        self.num_examples = num_examples
        self.seed = seed
        self.epoch = 0
        self.offset = 0
        self._permutation: torch.Tensor | None = None
        self._permutation_epoch = -1

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of the examples in `epoch` (int64, CPU)."""
        if epoch != self._permutation_epoch:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, _PERMUTATION_KEY, epoch))
            self._permutation = torch.randperm(self.num_examples, generator=generator)
            self._permutation_epoch = epoch
        return self._permutation

    def take(self, count: int) -> torch.Tensor:
        """The next `count` indices, continuing into following epochs as needed."""
        if count < 0:
            raise ValueError(f"count must be non-negative, got {count}")
        chunks = []
        while count > 0:
            end = min(self.offset + count, self.num_examples)
            chunks.append(self.permutation(self.epoch)[self.offset : end])
            count -= end - self.offset
            self.offset = end
            if self.offset == self.num_examples:
                self.epoch += 1
                self.offset = 0
        if not chunks:
            return torch.empty(0, dtype=torch.int64)
        return torch.cat(chunks)

    def state_dict(self) -> dict:
        return {"num_examples": self.num_examples, "seed": self.seed, "epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict) -> None:
        if (state["num_examples"], state["seed"]) != (self.num_examples, self.seed):
            raise ValueError(
                f"state is for a stream of {state['num_examples']} examples with seed {state['seed']}, "
                f"not {self.num_examples} with seed {self.seed}"
            )
        self.epoch = state["epoch"]
        self.offset = state["offset"]
