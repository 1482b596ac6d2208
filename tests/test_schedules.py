import math

import pytest

from adabatch.schedules import build_schedule


def test_constant_is_one_after_warmup():
    schedule = build_schedule({"name": "constant", "warmup_samples": 100})
    assert schedule(0) == pytest.approx(0.01)
    assert schedule(49) == pytest.approx(0.5)
    assert schedule(100) == schedule(10**9) == 1.0


def test_cosine_warms_up_then_decays_to_the_floor():
    schedule = build_schedule({"name": "cosine", "warmup_samples": 1000, "end_samples": 9000, "final_factor": 0.1})
    assert schedule(499) == pytest.approx(0.5)
    assert schedule(1000) == pytest.approx(1.0)
    assert schedule(5000) == pytest.approx(0.1 + 0.9 * 0.5)
    assert schedule(9000) == pytest.approx(0.1)
    assert schedule(20000) == pytest.approx(0.1)
    # strictly decreasing after warmup
    values = [schedule(s) for s in range(1000, 9001, 500)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_linear_decay():
    schedule = build_schedule({"name": "linear", "warmup_samples": 0, "end_samples": 1000, "final_factor": 0.0})
    assert schedule(0) == 1.0
    assert schedule(250) == pytest.approx(0.75)
    assert schedule(1000) == 0.0


def test_multistep_counts_milestones_in_samples():
    schedule = build_schedule({"name": "multistep", "milestones": [100, 300], "gamma": 0.5})
    assert [schedule(s) for s in (0, 99, 100, 299, 300, 10**6)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    with pytest.raises(ValueError, match=r"schedule.milestones=\[300, 100\] must be a list of strictly increasing"):
        build_schedule({"name": "multistep", "milestones": [300, 100], "gamma": 0.5})


def test_unknown_schedule():
    with pytest.raises(ValueError, match="schedule='step' is unknown"):
        build_schedule({"name": "step"})
    assert math.isfinite(build_schedule({"name": "cosine", "end_samples": 10})(5))
