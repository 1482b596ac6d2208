"""The adaptive policies' rules, on statistics with known values."""
import math

import pytest
import torch

from adabatch.batch_size import build_policy
from adabatch.stats import BatchStatistics


def stats(b, grad_sq_norm=1.0, norm_var=0.0, ip_var=None, orth_var=None, coord_var=None, mean_grad=None):
    return BatchStatistics(b, grad_sq_norm, norm_var, ip_var, orth_var, coord_var, mean_grad)


def norm_policy(population=None, **overrides):
    return build_policy({"name": "norm", "initial": 4, "max": 100, "eta": 0.5, **overrides}, budget=1, population=population)


def test_norm_proposal_is_rounded_up_and_never_shrinks():
    policy = norm_policy()
    # T = V / (eta^2 ||g||^2) = 2.6 / 0.25 = 10.4 -> 11
    decision = policy.decide(step=1, samples=4, batch_size=4, statistics=stats(4, norm_var=2.6))
    assert decision.record["proposal"] == pytest.approx(10.4) and decision.next_size == 11
    assert decision.record["test_lhs"] == pytest.approx(2.6 / 4) and decision.record["test_rhs"] == 0.25
    # a small proposal keeps the current size
    assert policy.decide(step=2, samples=15, batch_size=11, statistics=stats(11, norm_var=0.1)).next_size == 11
    # an exact integer proposal is kept as is
    assert policy.decide(step=3, samples=26, batch_size=11, statistics=stats(11, norm_var=3.0)).next_size == 12


def test_proposals_are_capped_at_max_including_a_vanishing_gradient():
    policy = norm_policy()
    assert policy.decide(step=1, samples=4, batch_size=4, statistics=stats(4, norm_var=1e6)).next_size == 100
    infinite = policy.decide(step=1, samples=4, batch_size=4, statistics=stats(4, grad_sq_norm=0.0, norm_var=1.0))
    assert infinite.record["proposal"] == math.inf and infinite.next_size == 100
    nothing = policy.decide(step=1, samples=4, batch_size=4, statistics=stats(4, grad_sq_norm=0.0, norm_var=0.0))
    assert nothing.next_size == 4


def test_interval_and_stop_at_the_cap():
    policy = norm_policy(interval=3)
    assert [policy.wants_statistics(step, 10) for step in range(1, 8)] == [True, False, False, True, False, False, True]
    assert not policy.wants_statistics(1, 100)
    assert policy.decide(step=2, samples=20, batch_size=10, statistics=None).next_size == 10


def test_monotone_capped_trajectory_over_random_statistics():
    policy = norm_policy(max=500)
    g = torch.Generator().manual_seed(0)
    b, sizes = policy.initial, []
    for step in range(1, 200):
        s = stats(b, grad_sq_norm=float(torch.rand(1, generator=g)) + 1e-3, norm_var=float(torch.rand(1, generator=g)) * 30)
        statistics = s if policy.wants_statistics(step, b) else None
        b = policy.decide(step=step, samples=0, batch_size=b, statistics=statistics).next_size
        sizes.append(b)
    assert sizes == sorted(sizes) and max(sizes) == 500


def test_inner_product_and_augmented_proposals():
    s = stats(10, grad_sq_norm=2.0, norm_var=5.0, ip_var=12.0, orth_var=9.0)
    ip = build_policy({"name": "inner_product", "initial": 4, "max": 1000, "theta": 0.5}, budget=1)
    assert ip.decide(step=1, samples=0, batch_size=10, statistics=s).record["proposal"] == pytest.approx(12 / (0.25 * 4))
    aug = build_policy({"name": "augmented_inner_product", "initial": 4, "max": 1000, "theta": 0.5, "nu": 0.5}, budget=1)
    decision = aug.decide(step=1, samples=0, batch_size=10, statistics=s)
    # ip: 12 / (0.25 * 4) = 12; orth: 9 / (0.25 * 2) = 18
    assert decision.record["proposal"] == pytest.approx(18.0) and decision.next_size == 18
    assert decision.record["test_rhs_orth"] == pytest.approx(0.5) and decision.record["test_lhs_ip"] == pytest.approx(1.2)


def test_coordinate_rule_is_the_max_and_the_quantile_variant_is_robust():
    var = [torch.tensor([1.0, 0.0, 4.0, 2.0], dtype=torch.float64)]
    mean = [torch.tensor([1.0, 0.0, 1.0, 1e-3], dtype=torch.float64)]  # coordinate 1: no variance, no gradient
    s = stats(10, coord_var=var, mean_grad=mean)
    exact = build_policy({"name": "coordinate_norm", "initial": 4, "max": 10**9, "eta": 1.0}, budget=1)
    decision = exact.decide(step=1, samples=0, batch_size=10, statistics=s)
    assert decision.record["proposal"] == pytest.approx(2.0 / 1e-6) and decision.record["coordinate"] == 3
    robust = build_policy({"name": "coordinate_norm", "initial": 4, "max": 10**9, "eta": 1.0, "quantile": 0.75}, budget=1)
    # proposals per coordinate: 1, 0, 4, 2e6 -> the 3rd smallest of 4 is 4
    assert robust.decide(step=1, samples=0, batch_size=10, statistics=s).record["proposal"] == pytest.approx(4.0)


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"name": "norm", "initial": 1, "max": 8, "eta": 0.1}, "batch_size.initial=1 must be an integer >= 2"),
        ({"name": "norm", "initial": 4, "max": 8, "eta": 0.0}, "batch_size.eta=0.0 must be a number > 0"),
        ({"name": "inner_product", "initial": 4, "max": 8, "theta": -1}, "batch_size.theta=-1"),
        ({"name": "augmented_inner_product", "initial": 4, "max": 8, "theta": 1, "nu": 0}, "batch_size.nu=0"),
        ({"name": "norm", "initial": 4, "max": 8, "eta": 0.1, "interval": 0}, "batch_size.interval=0"),
        ({"name": "norm", "initial": 4, "max": 8, "eta": 0.1, "ip_mode": "local"}, "batch_size.ip_mode='local'"),
        ({"name": "coordinate_norm", "initial": 4, "max": 8, "eta": 0.1, "quantile": 0}, "batch_size.quantile=0"),
        ({"name": "norm", "initial": 4, "max": 8}, "batch_size.eta is required by adabatch.batch_size.adaptive.NormTest"),
    ],
)
def test_bad_test_parameters_name_the_key(cfg, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        build_policy(cfg, budget=1)


@pytest.mark.parametrize("variance", [0.3, 2.6, 7.0, 40.0, 1e6])
def test_finite_population_proposal_is_the_smallest_size_passing_the_corrected_test(variance):
    population, eta = 50, 0.5
    policy = norm_policy(max=population, finite_population=True, population=population)
    plain_proposal = norm_policy(max=population).decide(
        step=1, samples=4, batch_size=4, statistics=stats(4, norm_var=variance)).record["proposal"]
    decision = policy.decide(step=1, samples=4, batch_size=4, statistics=stats(4, norm_var=variance))
    # brute force: (N - b) / (N - 1) * V / b <= eta^2 ||gbar||^2, over every size the batch may grow to
    passing = [b for b in range(4, population + 1) if (population - b) / (population - 1) * variance / b <= eta**2]
    assert decision.next_size == passing[0]
    assert decision.record["proposal"] <= plain_proposal


def test_finite_population_caps_an_infinite_proposal_at_the_population_and_is_off_by_default():
    policy = norm_policy(max=1000, finite_population=True, population=30)
    vanishing = stats(4, grad_sq_norm=0.0, norm_var=1.0)
    assert policy.decide(step=1, samples=4, batch_size=4, statistics=vanishing).record["proposal"] == 30
    assert norm_policy(population=30).finite_population is False
    with pytest.raises(ValueError, match="finite_population=true needs the training set's size"):
        norm_policy(finite_population=True).decide(step=1, samples=4, batch_size=4, statistics=stats(4, norm_var=1.0))
    with pytest.raises(ValueError, match="batch_size.finite_population=yes must be true or false"):
        norm_policy(finite_population="yes")
