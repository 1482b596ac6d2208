"""The paper's adaptive tests: after a step, propose the batch size at which the test would hold.

Each test compares a variance term (left side, already divided by b) with a multiple of the batch
gradient's size (right side); its proposal T is the batch size that balances them, and the next size
is min(max, ceil(max(b, T))). Testing runs every `interval` steps and stops once b reaches `max`.

The paper treats the batch's variance as if the population were infinite. With
`finite_population=True` the variance term of a batch of b' drawn without replacement from the N
training examples carries the factor (N - b') / (N - 1), and the proposal becomes the smallest b'
that satisfies the corrected test: T N / (N - 1 + T), at most N.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ..checks import integer, number, one_of, positive, switch
from ..stats import BatchStatistics, Needs
from ..stats.statistics import IP_MODES
from .base import BatchSizePolicy, Decision, grow


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, with 0 when there is no variance and inf when the gradient vanishes."""
    if numerator <= 0:
        return 0.0
    return numerator / denominator if denominator > 0 else math.inf


class AdaptiveTest(BatchSizePolicy):
    needs = Needs()

    def __init__(
        self,
        initial: int,
        max: int,  # noqa: A002
        interval: int = 1,
        ip_mode: str = "global",
        finite_population: bool = False,
        population: int | None = None,
    ) -> None:
        super().__init__(initial, max)
        integer("batch_size.initial", initial, 2, why="the tests need a sample variance")
        self.interval = integer("batch_size.interval", interval, 1)
        self.ip_mode = one_of("batch_size.ip_mode", ip_mode, IP_MODES)
        self.finite_population = switch("batch_size.finite_population", finite_population)
        self.population = population

    def wants_statistics(self, step: int, batch_size: int) -> bool:
        return batch_size < self.max and (step - 1) % self.interval == 0

    def decide(self, *, step, samples, batch_size, statistics: BatchStatistics | None = None) -> Decision:
        if statistics is None:
            return Decision(batch_size)
        proposal, sides = self.propose(statistics)
        if self.finite_population:
            if self.population is None:
                raise ValueError("batch_size.finite_population=true needs the training set's size: pass population")
            proposal = finite_population_proposal(proposal, self.population)
        record = {"tested": True, "proposal": proposal, **statistic_fields(statistics), **sides}
        return Decision(grow(batch_size, proposal, self.max), record)

    def propose(self, s: BatchStatistics) -> tuple[float, dict[str, float]]:
        raise NotImplementedError


def finite_population_proposal(proposal: float, population: int) -> float:
    """The smallest b' with (N - b') / (N - 1) * V / b' <= rhs, given T = V / rhs: T N / (N - 1 + T)."""
    if math.isinf(proposal):
        return float(population)
    return proposal * population / (population - 1 + proposal) if population > 1 else float(population)


def statistic_fields(s: BatchStatistics) -> dict[str, Any]:
    fields = {"grad_sq_norm": s.grad_sq_norm, "norm_var": s.norm_var}
    if s.ip_var is not None:
        fields.update(ip_var=s.ip_var, orth_var=s.orth_var)
    return fields


class NormTest(AdaptiveTest):
    """Norm test (Byrd et al. 2012): V / b <= eta^2 ||gbar||^2."""

    def __init__(self, initial: int, max: int, eta: float, **options) -> None:  # noqa: A002
        super().__init__(initial, max, **options)
        self.eta = positive("batch_size.eta", eta)

    def propose(self, s):
        rhs = self.eta**2 * s.grad_sq_norm
        return ratio(s.norm_var, rhs), {"test_lhs": s.norm_var / s.batch_size, "test_rhs": rhs}


class InnerProductTest(AdaptiveTest):
    """Inner-product test (Bollapragada et al. 2018): V_ip / b <= theta^2 ||gbar||^4."""

    needs = Needs(inner_products=True)

    def __init__(self, initial: int, max: int, theta: float, **options) -> None:  # noqa: A002
        super().__init__(initial, max, **options)
        self.theta = positive("batch_size.theta", theta)

    def propose(self, s):
        rhs = self.theta**2 * s.grad_sq_norm**2
        return ratio(s.ip_var, rhs), {"test_lhs": s.ip_var / s.batch_size, "test_rhs": rhs}


class AugmentedInnerProductTest(AdaptiveTest):
    """Inner-product test plus the orthogonality test V_orth / b <= nu^2 ||gbar||^2; the larger proposal."""

    needs = Needs(inner_products=True)

    def __init__(self, initial: int, max: int, theta: float, nu: float, **options) -> None:  # noqa: A002
        super().__init__(initial, max, **options)
        self.theta = positive("batch_size.theta", theta)
        self.nu = positive("batch_size.nu", nu)

    def propose(self, s):
        rhs_ip = self.theta**2 * s.grad_sq_norm**2
        rhs_orth = self.nu**2 * s.grad_sq_norm
        proposal = max(ratio(s.ip_var, rhs_ip), ratio(s.orth_var, rhs_orth))
        return proposal, {
            "test_lhs_ip": s.ip_var / s.batch_size, "test_rhs_ip": rhs_ip,
            "test_lhs_orth": s.orth_var / s.batch_size, "test_rhs_orth": rhs_orth,
        }


class CoordinateNormTest(AdaptiveTest):
    """Coordinate-wise norm test (AdAdaGrad): V_j / b <= eta^2 gbar_j^2 for every coordinate j.

    The paper's rule takes the max over coordinates (`quantile=1.0`, the default). A quantile q < 1
    is a robust variant, not the paper's rule: the proposal is the q-quantile of the per-coordinate
    proposals, so a few coordinates with gbar_j ~ 0 cannot force the batch to the cap.
    """

    needs = Needs(coordinates=True)

    def __init__(self, initial: int, max: int, eta: float, quantile: float = 1.0, **options) -> None:  # noqa: A002
        super().__init__(initial, max, **options)
        self.eta = positive("batch_size.eta", eta)
        self.quantile = number("batch_size.quantile", quantile, 0, 1, low_open=True, why="1.0 is the paper's max rule")

    def propose(self, s):
        var = torch.cat([v.flatten() for v in s.coord_var])
        rhs = self.eta**2 * torch.cat([m.flatten() for m in s.mean_grad]).pow(2)
        proposals = torch.where(var <= 0, 0.0, var / rhs)  # var > 0 with gbar_j = 0 gives inf
        k = max(1, math.ceil(self.quantile * proposals.numel()))
        proposal, j = torch.kthvalue(proposals.cpu(), k)
        j = int(j)
        return float(proposal), {
            "test_lhs": float(var[j]) / s.batch_size, "test_rhs": float(rhs[j]), "coordinate": j,
        }
