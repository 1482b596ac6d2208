"""Sums over examples from which every test statistic follows exactly.

Counts, sum_i g_i, sum_i ||g_i||^2 and sum_i g_i*g_i are additive: micro-batches (and data-parallel
ranks) combine by summation, which gives the exact full-batch statistic. The inner-product sums need
the final batch gradient, so they are added in a second phase, once that gradient is known.
Sums are kept in float64 whatever the model's dtype, except that the model-sized sums (sum_i g_i and
sum_i g_i*g_i) keep a first contribution as it comes until `first_phase`: an unsplit batch then holds
no float64 copy of the model while its activations are alive (converting one contribution is exact).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def squared_norms(tensors: list[torch.Tensor | None], device: torch.device | str = "cpu") -> torch.Tensor:
    """float64 ||t||^2 of each tensor (0, on `device`, for None), in one call over the list and every element
    squared in float64: exact to float64 rounding for float32 tensors, where t.pow(2).sum(dtype=torch.float64)
    rounds each square to float32."""
    present = [t for t in tensors if t is not None]
    norms = iter(torch.foreach.norm(present, dtype=torch.float64) if present else ())
    return torch.stack([torch.zeros((), dtype=torch.float64, device=device) if t is None else next(norms)
                        for t in tensors]).square_()


@dataclass(frozen=True)
class Needs:
    """Which sums a test needs beyond the norm test's."""

    inner_products: bool = False
    coordinates: bool = False


class GradientSums:
    def __init__(self, params: list[torch.Tensor], needs: Needs) -> None:
        self.needs = needs
        self.count = 0
        self.params = params
        num_tensors = len(params)
        device = params[0].device
        self.grad: list[torch.Tensor | None] = [None] * num_tensors  # sum_i g_i
        self.sq_norm = torch.zeros(num_tensors, dtype=torch.float64, device=device)  # per tensor t: sum_i ||g_i^t||^2
        self.coord_sq: list[torch.Tensor | None] | None = [None] * num_tensors if needs.coordinates else None  # sum_i g_i*g_i
        # Second phase, per tensor t: sum_i <g_i^t, gbar^t>^2, and globally sum_i <g_i, gbar>^2.
        self.ip_sq = torch.zeros(num_tensors, dtype=torch.float64, device=device)
        self.global_ip_sq = torch.zeros((), dtype=torch.float64, device=device)

    def add_examples(self, per_example: list[torch.Tensor]) -> None:
        """First phase: add a micro-batch of per-example gradients [(n, *p.shape) per parameter]."""
        self.count += per_example[0].shape[0]
        for t, g in enumerate(per_example):
            flat = g.flatten(1)
            add(self.grad, t, g.sum(0, dtype=torch.float64))
            self.sq_norm[t] += flat.pow(2).sum(dtype=torch.float64)
            if self.coord_sq is not None:
                add(self.coord_sq, t, g.pow(2).sum(0, dtype=torch.float64))

    def first_phase(self) -> list[torch.Tensor]:
        """The float64 sums to all-reduce across ranks before the batch gradient is known."""
        self.grad = self._as_float64(self.grad)
        if self.coord_sq is not None:
            self.coord_sq = self._as_float64(self.coord_sq)
        return [*self.grad, self.sq_norm, *(self.coord_sq or [])]

    def _as_float64(self, sums: list[torch.Tensor | None]) -> list[torch.Tensor]:
        return [torch.zeros_like(p, dtype=torch.float64) if s is None else s.double() for s, p in zip(sums, self.params)]

    def second_phase(self) -> list[torch.Tensor]:
        return [self.ip_sq, self.global_ip_sq]

    def take_mean_gradient(self) -> list[torch.Tensor]:
        """gbar, divided in place from sum_i g_i (as large as the model in float64): the sums no longer
        hold sum_i g_i afterwards, so take it once, after the first phase."""
        mean_grad, self.grad = self.grad, None
        torch.foreach.div_(mean_grad, self.count)
        return mean_grad

    def add_inner_products(self, per_example: list[torch.Tensor], mean_grad: list[torch.Tensor]) -> None:
        """Second phase: add the <g_i^t, gbar^t> terms of a micro-batch's per-example gradients, given
        the whole batch's gbar."""
        self.add_inner_product_terms(
            torch.stack([g.flatten(1).double() @ m.flatten() for g, m in zip(per_example, mean_grad)], dim=1)
        )

    def add_inner_product_terms(self, per_tensor: torch.Tensor) -> None:
        """Second phase, from (n, T) float64: <g_i^t, gbar^t> for each example i and parameter tensor t."""
        self.ip_sq += per_tensor.pow(2).sum(0)
        self.global_ip_sq += per_tensor.sum(1).pow(2).sum()


def add(sums: list[torch.Tensor | None], t: int, value: torch.Tensor) -> None:
    """sums[t] += value, in float64 from the second value on (see the module docstring)."""
    current = sums[t]
    if current is None:
        sums[t] = value
    elif current.dtype == torch.float64:
        current += value
    else:
        sums[t] = current.double().add_(value)
