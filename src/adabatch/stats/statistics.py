"""The tests' statistics from the sums (paper-notes section 2), all unbiased (divide by b - 1)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from .sums import GradientSums, Needs, squared_norms


class Sums(Protocol):
    """What the statistics read from the sums: `GradientSums` per example, `stats.local.PartSums` per part."""

    needs: Needs
    sq_norm: torch.Tensor
    ip_sq: torch.Tensor
    global_ip_sq: torch.Tensor
    coord_sq: list[torch.Tensor] | None

IP_MODES = ("global", "per_tensor")


@dataclass(frozen=True)
class BatchStatistics:
    batch_size: int
    grad_sq_norm: float                 # ||gbar||^2
    norm_var: float                     # V = sum_i ||g_i - gbar||^2 / (b-1)
    ip_var: float | None = None         # V_ip: sample variance of <g_i, gbar>
    orth_var: float | None = None       # V_orth: sum_i ||r_i||^2 / (b-1), r_i = g_i - <g_i,gbar>/||gbar||^2 gbar
    coord_var: list[torch.Tensor] | None = None   # V_j per coordinate, shaped like the parameters
    mean_grad: list[torch.Tensor] | None = None   # gbar, shaped like the parameters (for the coordinate test)

    def is_finite(self) -> bool:
        scalars = (self.grad_sq_norm, self.norm_var, self.ip_var, self.orth_var)
        if not all(math.isfinite(v) for v in scalars if v is not None):
            return False
        return self.coord_var is None or all(bool(torch.isfinite(v).all()) for v in self.coord_var)


def batch_statistics(sums: GradientSums, ip_mode: str = "global",
                     mean_grad: list[torch.Tensor] | None = None) -> BatchStatistics:
    """`ip_mode="per_tensor"` reproduces the authors' code: inner products and projections per
    parameter tensor, variances summed over tensors (cross-tensor terms dropped). `mean_grad`:
    `sums.take_mean_gradient()` when the caller has taken it already. The per-coordinate variances are
    made in place from the sums' sum_i g_i*g_i (as large as the model): take the statistics once."""
    check_ip_mode(ip_mode)
    b = sums.count
    if b < 2:
        raise ValueError(f"the batch-size tests need at least 2 examples per batch, got {b}; raise batch_size.initial")
    mean_grad = sums.take_mean_gradient() if mean_grad is None else mean_grad
    tensor_sq = squared_norms(mean_grad)  # ||gbar^t||^2
    return closing_statistics(sums, b, b - 1, tensor_sq, mean_grad, ip_mode)


def check_ip_mode(ip_mode: str) -> None:
    if ip_mode not in IP_MODES:
        raise ValueError(f"batch_size.ip_mode={ip_mode!r} is unknown; choose one of {', '.join(IP_MODES)}")


def closing_statistics(sums: Sums, b: int, dof: int, tensor_sq: torch.Tensor,
                       mean_grad: list[torch.Tensor] | None, ip_mode: str) -> BatchStatistics:
    """The statistics from float64 sums over b examples in dof + 1 units: per example (`GradientSums`,
    dof = b - 1) or per part (`PartSums`, dof = M - 1, each part weighted by its size). Both hold, per
    parameter tensor t, sq_norm = sum ||g^t||^2, ip_sq = sum <g^t, gbar^t>^2, global_ip_sq = sum <g, gbar>^2
    and coord_sq = sum g*g, which becomes the per-coordinate variances in place (take the statistics once);
    tensor_sq = ||gbar^t||^2."""
    sq_norm = sums.sq_norm
    grad_sq = tensor_sq.sum()
    norm_var = (sq_norm.sum() - b * grad_sq) / dof

    ip_var = orth_var = None
    if sums.needs.inner_products:
        ip_sq, global_ip_sq = sums.ip_sq, sums.global_ip_sq
        if ip_mode == "global":
            ip_var = (global_ip_sq - b * grad_sq**2) / dof
            orth_var = (sq_norm.sum() - global_ip_sq / grad_sq) / dof
        else:
            live = tensor_sq > 0  # a tensor with gbar^t = 0 has no direction to project on
            ip_var = (ip_sq - b * tensor_sq**2).sum() / dof
            orth_var = (sq_norm[live] - ip_sq[live] / tensor_sq[live]).sum() / dof
        ip_var, orth_var = ip_var.item(), orth_var.item()

    coord_var = None
    if sums.coord_sq is not None:
        mean_grad = [m.double() for m in mean_grad]
        coord_var = [sq.addcmul_(m, m, value=-b).div_(dof) for sq, m in zip(sums.coord_sq, mean_grad)]
        sums.coord_sq = None

    return BatchStatistics(
        batch_size=b,
        grad_sq_norm=grad_sq.item(),
        norm_var=norm_var.item(),
        ip_var=ip_var,
        orth_var=orth_var,
        coord_var=coord_var,
        mean_grad=mean_grad if coord_var is not None else None,
    )
