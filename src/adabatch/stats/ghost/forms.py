"""The forms a ghost rule can take for a dense layer's weight, and the policy that chooses among them.

The policy's defaults were tuned on one CPU; docs/ghost-engine.md says why each value, measured how.
The engine is given a policy (`GhostEngine(model, policy=FormPolicy(...))`): tests force each form
through one, and the engine ghost_measured times the two forms instead of counting.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch


class Form(enum.Enum):
    OUTER = "outer"                # one position: ||g_i||² = ||delta_i||² ||a_i||²
    GRAM = "gram"                  # <A_i A_iᵀ, D_i D_iᵀ>, a chunk of examples at a time
    FORMED = "formed"              # per-example gradients, a chunk at a time, dropped after their sums
    FORMED_KEPT = "formed, kept"   # per-example gradients kept until the inner products

    @property
    def measured_as(self) -> str:
        """What ghost_measured records in its state (checkpoints): "gram" or "formed"."""
        return "formed" if self in (Form.FORMED, Form.FORMED_KEPT) else self.value

    @property
    def is_formed(self) -> bool:
        return self in (Form.FORMED, Form.FORMED_KEPT)


@dataclass(frozen=True)
class FormPolicy:
    """How the ghost rules choose forms and how much memory they hold (docs/ghost-engine.md)."""

    # Form a dense layer's per-example gradients where the Gram form would take at least this many
    # multiply-adds per element of them; else the Gram form.
    form_ratio: float = 25
    # A Gram-form chunk stays within the layer's own input and output gradient, and at least this.
    min_chunk_elements: int = 1 << 22
    # What a formed layer holds at once stays within this share of the elements of all layer inputs of
    # the pass, and at least min_transient_elements.
    transient_share: float = 1 / 16
    min_transient_elements: int = 1 << 20
    # With inner products in the same pass, a formed layer keeps all its per-example gradients where
    # they fit in keep_factor times its budget (else it applies the layer once more).
    keep_factor: float = 2
    # A convolution forms its per-example gradients as one grouped convolution (rather than patches and
    # a batched matmul) from this many input channels, when it has more than this many output positions
    # per output channel, and a kernel larger than 1x1.
    grouped_conv_min_channels: int = 8
    grouped_conv_positions_per_output: int = 4
    # A Gram-form convolution's input Gram matrices from channel products at pairs of padded positions
    # when that costs at most this many times the multiply-adds of Gram matrices from patches.
    gram_by_offsets_cost: float = 1.0
    # ghost_measured: each form timed this many times, taking turns, on the layer's first pass.
    measured_rounds: int = 3

    def transient_budget(self, input_elements: int) -> int:
        """The elements a formed layer may hold at once, given those of all layer inputs of the pass."""
        return max(self.min_transient_elements, int(input_elements * self.transient_share))


class Workspace:
    """Memory in which the formed layers of one pass write their per-example gradients, one layer after
    another (fresh pages cost more than the arithmetic on the CPU: docs/ghost-engine.md). It grows to
    the largest that a layer takes, and is released with the pass."""

    def __init__(self) -> None:
        self.memory: torch.Tensor | None = None

    def take(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """An uninitialized tensor of `shape` with the dtype and device of `like`."""
        elements, memory = math.prod(shape), self.memory
        if memory is None or memory.numel() < elements or memory.dtype != like.dtype or memory.device != like.device:
            self.memory = memory = None  # released before the larger one is allocated
            self.memory = memory = torch.empty(elements, dtype=like.dtype, device=like.device)
        return memory[:elements].view(shape)
