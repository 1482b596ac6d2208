"""The gradient-noise-scale policy (batch_size=gns): its moving averages and proposals against a
brute-force float64 loop over examples, over several steps, for every engine and split; the monotone
cap; its state across a checkpoint; its records in a run."""
import math
import os
import signal

import pytest
import torch
from helpers import compose, per_example_gradients, tiny_problem

from adabatch.batch_size import build_policy
from adabatch.run_keys import run_keys
from adabatch.batch_size.noise_scale import NoiseScale
from adabatch.run.records import RunRecords, read_metrics, read_summary
from adabatch.stats import BatchStatistics, Needs, build_engine, gradient_with_statistics
from adabatch.run.loop import train

MULTIPLE, EMA = 1.5, 0.6


def gns_policy(**overrides) -> NoiseScale:
    return build_policy({"name": "gns", "initial": 4, "max": 500, "multiple": MULTIPLE, "ema": EMA, **overrides}, budget=1)


def stats(b, grad_sq_norm, norm_var):
    return BatchStatistics(b, grad_sq_norm, norm_var)


def smoothed(estimates: list[float], ema: float) -> float:
    """The bias-corrected moving average after len(estimates) updates, as a weighted sum."""
    k = len(estimates)
    weights = [(1 - ema) * ema ** (k - 1 - j) for j in range(k)]
    return sum(w * x for w, x in zip(weights, estimates)) / (1 - ema**k)


def expected_next(b: int, noise: list[float], signal: list[float], maximum: int, multiple=MULTIPLE, ema=EMA):
    """(proposal, next size) from the definitions: T = multiple * avg tr(Sigma) / avg ||G||^2 when the
    latter is positive (else no proposal), next = min(max, ceil(max(b, T)))."""
    noise_avg, signal_avg = smoothed(noise, ema), smoothed(signal, ema)
    if signal_avg <= 0:
        return 0.0, b
    proposal = multiple * noise_avg / signal_avg
    return proposal, maximum if proposal >= maximum else min(maximum, math.ceil(max(b, proposal)))


@pytest.mark.parametrize("engine_name, splits", [("ghost", 1), ("ghost", 3), ("opacus", 2), ("functorch", 3)])
def test_noise_scale_matches_brute_force_over_several_steps(engine_name, splits):
    """Up to six tested steps of a float64 CNN, each batch of the size the policy chose, with an SGD step in
    between: every step's estimates, averages, proposal and next size as the brute force has them."""
    model, data, _ = tiny_problem("cnn")
    engine = build_engine(engine_name, model)
    policy = gns_policy(initial=6, max=24, multiple=4.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    assert policy.needs == Needs()  # only the norm test's sums: every engine supports it
    b, noise, signal, sizes = policy.initial, [], [], []
    for step in range(1, 7):
        batch = data.draw(b)
        g = per_example_gradients(model, data, batch)  # at the iterate the tested step sees
        gbar = g.mean(0)
        trace = ((g - gbar) ** 2).sum() / (b - 1)
        noise.append(float(trace))
        signal.append(float(gbar @ gbar - trace / b))
        optimizer.zero_grad(set_to_none=True)
        _, s = gradient_with_statistics(engine, data, batch, math.ceil(b / splits), policy.needs)
        assert policy.wants_statistics(step, b)
        decision = policy.decide(step=step, samples=0, batch_size=b, statistics=s)
        proposal, next_size = expected_next(b, noise, signal, policy.max, multiple=4.0)
        record = decision.record
        assert record["grad_sq_est"] == pytest.approx(signal[-1], rel=1e-9)
        assert record["norm_var_avg"] == pytest.approx(smoothed(noise, EMA), rel=1e-9)
        assert record["grad_sq_est_avg"] == pytest.approx(smoothed(signal, EMA), rel=1e-9)
        assert record["proposal"] == pytest.approx(proposal, rel=1e-9) and decision.next_size == next_size
        optimizer.step()
        b = decision.next_size
        sizes.append(b)
        if b == policy.max:
            break
    assert sizes == sorted(sizes) and sizes[-1] == policy.max and len(noise) >= 3
    assert min(signal) < 0 < max(signal)  # the steps cover a negative single-batch estimate


def test_the_averages_are_bias_corrected_and_ema_zero_is_one_batch():
    first = gns_policy(ema=0.9).decide(step=1, samples=0, batch_size=10, statistics=stats(10, 2.0, 5.0))
    # the first average is the first estimate: ||G||^2 = 2 - 5/10 = 1.5, B_simple = 5 / 1.5
    assert first.record["grad_sq_est_avg"] == pytest.approx(1.5) and first.record["norm_var_avg"] == pytest.approx(5.0)
    assert first.record["noise_scale"] == pytest.approx(5 / 1.5)
    assert first.record["proposal"] == pytest.approx(MULTIPLE * 5 / 1.5)
    assert first.record["test_lhs"] == pytest.approx(5.0 / 10) and first.record["test_rhs"] == pytest.approx(1.5 / MULTIPLE)
    memoryless = gns_policy(ema=0)
    memoryless.decide(step=1, samples=0, batch_size=10, statistics=stats(10, 2.0, 5.0))
    second = memoryless.decide(step=2, samples=0, batch_size=10, statistics=stats(10, 3.0, 1.0))
    assert second.record["noise_scale"] == pytest.approx(1.0 / (3.0 - 0.1))


def test_no_growth_while_the_averaged_signal_is_not_positive():
    policy = gns_policy(max=1000)
    noise, signal = [], []
    for step, (g2, v) in enumerate([(0.1, 4.0), (0.5, 4.0), (3.0, 2.0)], start=1):  # ||G||^2 estimates -0.3, 0.1, 2.8
        decision = policy.decide(step=step, samples=0, batch_size=10, statistics=stats(10, g2, v))
        noise.append(v)
        signal.append(g2 - v / 10)
        proposal, next_size = expected_next(10, noise, signal, 1000)
        assert decision.record["proposal"] == pytest.approx(proposal) and decision.next_size == next_size
        assert (decision.record["noise_scale"] is None) == (smoothed(signal, EMA) <= 0)
    assert [signal_avg > 0 for signal_avg in (smoothed(signal[:k], EMA) for k in (1, 2, 3))] == [False, False, True]


def test_monotone_and_capped_over_random_statistics():
    policy = gns_policy(max=300, ema=0.5)
    g = torch.Generator().manual_seed(0)
    b, sizes, tested = policy.initial, [], 0
    for step in range(1, 300):
        s = None
        if policy.wants_statistics(step, b):
            # a variance, and an estimate of ||G||^2 that is sometimes negative but positive on average
            variance, signal = float(torch.rand(1, generator=g)) * 200, float(torch.rand(1, generator=g)) * 2 - 0.5
            s = stats(b, signal + variance / b, variance)
            tested += 1
        b = policy.decide(step=step, samples=0, batch_size=b, statistics=s).next_size
        sizes.append(b)
    assert sizes == sorted(sizes) and sizes[-1] == 300 and max(sizes) == 300
    assert policy.updates == tested and not policy.wants_statistics(len(sizes) + 1, 300)  # testing stopped at the cap


def test_the_averages_survive_a_checkpoint():
    sequence = [stats(8, 1.0 + k, 3.0 + 2 * k) for k in range(6)]
    uninterrupted = gns_policy()
    expected = [uninterrupted.decide(step=k + 1, samples=0, batch_size=8, statistics=s) for k, s in enumerate(sequence)]
    first = gns_policy()
    for k, s in enumerate(sequence[:3]):
        first.decide(step=k + 1, samples=0, batch_size=8, statistics=s)
    resumed = gns_policy()
    resumed.load_state_dict(first.state_dict())
    assert [resumed.decide(step=k + 4, samples=0, batch_size=8, statistics=s) for k, s in enumerate(sequence[3:])] == expected[3:]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"multiple": 0}, "batch_size.multiple=0 must be a number > 0"),
        ({"multiple": "x"}, "batch_size.multiple=x must be a number > 0"),
        ({"ema": 1.0}, r"batch_size.ema=1.0 must be a number in \[0, 1\)"),
        ({"ema": -0.1}, r"batch_size.ema=-0.1 must be a number in \[0, 1\)"),
        ({"ema": True}, r"batch_size.ema=True must be a number in \[0, 1\)"),
        ({"initial": 1}, "batch_size.initial=1 must be an integer >= 2"),
        ({"eta": 0.5}, "batch_size.eta is not a parameter of adabatch.batch_size.noise_scale.NoiseScale"),
    ],
)
def test_bad_parameters_name_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        gns_policy(**overrides)


def test_the_config_group_has_the_loop_keys_and_builds():
    cfg = compose("batch_size=gns")
    assert set(run_keys("batch_size")) <= set(cfg.batch_size)
    policy = build_policy(dict(cfg.batch_size), budget=1)
    assert isinstance(policy, NoiseScale) and policy.multiple == cfg.batch_size.multiple and policy.ema == cfg.batch_size.ema


TINY_GNS = ("device=cpu", "batch_size=gns", "batch_size.initial=8", "batch_size.max=64", "batch_size.max_micro=16",
            "batch_size.engine=functorch", "train.samples=1200", "train.eval_every=600", "train.checkpoint_every=200",
            "train.eval_train_examples=200", "train.progress_every_s=600")
TIMES = ("time_s", "train_time_s", "wall_time_s", "resumes")


def without_times(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMES}


def test_a_run_records_the_averages_and_resumes_them_exactly(tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    assert train(compose(*TINY_GNS), reference)["status"] == "completed"
    records = list(read_metrics(reference, "train"))
    tested = [r for r in records if r.get("tested")]
    assert tested and all({"proposal", "grad_sq_norm", "norm_var", "grad_sq_est", "norm_var_avg", "grad_sq_est_avg",
                           "noise_scale", "test_lhs", "test_rhs"} <= r.keys() for r in tested)
    sizes = [r["batch_size"] for r in records]
    assert sizes == sorted(sizes)

    append, count = RunRecords.append, {"train": 0}

    def stop_after_the_third_step(self, record):  # what SLURM does before preemption, mid-run
        append(self, record)
        if record["kind"] == "train":
            count["train"] += 1
            if count["train"] == 3:
                os.kill(os.getpid(), signal.SIGTERM)

    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(RunRecords, "append", stop_after_the_third_step)
        assert train(compose(*TINY_GNS), run_dir)["status"] == "preempted"
    assert train(compose(*TINY_GNS), run_dir)["status"] == "completed"
    assert [without_times(r) for r in read_metrics(run_dir)] == [without_times(r) for r in read_metrics(reference)]
    assert without_times(read_summary(run_dir)) == without_times(read_summary(reference))
