"""What a statistics engine does: add a micro-batch's examples to the sums the tests need."""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod

import torch
from torch import nn

from .sums import GradientSums


class StatisticsEngine(ABC):
    """The first phase adds a micro-batch's loss, gradient sum, Σ‖g_i‖² and (when needed) Σg_i⊙g_i;
    once the batch gradient ḡ is known, the second phase adds the inner-product terms ⟨g_i, ḡ⟩.

    When one micro-batch holds every example this process sees, the first phase can keep what the
    second needs (`keep=True`) and `kept_inner_products` adds the terms without another pass;
    otherwise `inner_products` recomputes them a micro-batch at a time.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]

    def state_dict(self) -> dict:
        """What the engine chose during the run that a resumed run must choose alike (the choices
        change roundoff only); none for most engines."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def reset(self) -> None:
        """Forget what an interrupted step left behind (an out-of-memory error in mid-pass)."""
        self._kept = None

    @abstractmethod
    def can_keep(self, world_size: int) -> bool:
        """Whether an unsplit micro-batch can keep its inner-product terms with `world_size` ranks."""

    @abstractmethod
    def first_phase(
        self, x: torch.Tensor, y: torch.Tensor, sums: GradientSums,
        autocast: contextlib.AbstractContextManager | None, keep: bool,
    ) -> torch.Tensor:
        """Add the micro-batch (x, y) to the first-phase sums; return its summed loss.

        May leave anything in p.grad: the caller sets the batch gradient afterwards.
        """

    @abstractmethod
    def kept_inner_products(self, sums: GradientSums, mean_grad: list[torch.Tensor]) -> None:
        """Second phase for the micro-batch the last `first_phase(keep=True)` kept."""

    @abstractmethod
    def inner_products(
        self, x: torch.Tensor, y: torch.Tensor, sums: GradientSums, mean_grad: list[torch.Tensor],
        autocast: contextlib.AbstractContextManager | None,
    ) -> None:
        """Second phase for the micro-batch (x, y), recomputed."""
