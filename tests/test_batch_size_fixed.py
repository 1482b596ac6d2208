import pytest

from adabatch.batch_size import build_policy, cap_batch_sizes, grow
from adabatch.batch_size.fixed import doubling


def sizes(policy, steps, samples_per_step=None):
    b, samples, out = policy.initial, 0, []
    for step in range(1, steps + 1):
        out.append(b)
        samples += samples_per_step or b
        b = policy.decide(step=step, samples=samples, batch_size=b).next_size
    return out


def test_grow_rounds_up_never_shrinks_and_caps():
    assert grow(8, 10.2, 100) == 11
    assert grow(8, 3.0, 100) == 8
    assert grow(8, 1e9, 100) == 100
    assert grow(8, float("inf"), 100) == 100
    with pytest.raises(ValueError, match="NaN"):
        grow(8, float("nan"), 100)


def test_constant():
    assert sizes(build_policy({"name": "constant", "initial": 16, "max": 16, "max_micro": 4}, 100), 5) == [16] * 5


def test_linear_ramp_adds_the_increment_up_to_max():
    policy = build_policy({"name": "linear_ramp", "initial": 4, "max": 13, "increment": 3, "max_micro": 8}, 100)
    assert sizes(policy, 6) == [4, 7, 10, 13, 13, 13]


def test_stagewise_spends_equal_shares_of_the_budget():
    policy = build_policy({"name": "stagewise", "initial": 2, "max": 8, "stages": [2, 4, 8], "max_micro": 8}, budget=30)
    # 10 samples per stage: the size changes once 10 and 20 samples are done
    assert sizes(policy, 12, samples_per_step=5) == [2, 2, 4, 4, 8, 8, 8, 8, 8, 8, 8, 8]


def test_stagewise_with_boundaries_doubles_at_fixed_sample_counts():
    """OLMo-core's batch-size warmup: each stage from the step that reaches its boundary on, whatever the budget."""
    policy = build_policy({"name": "stagewise", "initial": 2, "max": 8, "stages": [2, 4, 8], "boundaries": [6, 20],
                           "max_micro": 8}, budget=1000)
    # samples after each step: 2, 4, 6 (-> 4), 10, 14, 18, 22 (-> 8), 30, ...
    assert sizes(policy, 9) == [2, 2, 2, 4, 4, 4, 4, 8, 8]


def test_stagewise_default_stages_double_up_to_max():
    assert doubling(32, 300) == [32, 64, 128, 256, 300]
    assert doubling(8, 64) == [8, 16, 32, 64]


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"name": "constant", "initial": 0}, "batch_size.initial=0"),
        ({"name": "linear_ramp", "initial": 64, "max": 32, "increment": 1}, "batch_size.max=32 is below"),
        ({"name": "linear_ramp", "initial": 8, "max": 32, "increment": 0}, "batch_size.increment=0"),
        ({"name": "stagewise", "initial": 8, "max": 32, "stages": [8, 64]}, "batch_size.stages"),
        ({"name": "stagewise", "initial": 8, "max": 32, "stages": [8, 16, 32], "boundaries": [10]},
         "batch_size.boundaries=[10]"),
        ({"name": "stagewise", "initial": 8, "max": 32, "stages": [8, 16, 32], "boundaries": [20, 10]},
         "batch_size.boundaries=[20, 10]"),
        ({"name": "stagewise", "initial": 8, "max": 32, "stages": [8, 16, 32], "boundaries": [0, 10]},
         "batch_size.boundaries=[0, 10]"),
        ({"name": "norm_test", "initial": 8}, "batch_size='norm_test' is unknown"),
        ({"name": "constant", "initial": 8, "eta": 0.1}, "batch_size.eta is not a parameter of adabatch.batch_size.fixed.Constant"),
    ],
)
def test_bad_policy_configs_name_the_key(cfg, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        build_policy(cfg, budget=100)


def test_batch_sizes_above_the_training_set_are_capped_and_what_was_asked_is_returned():
    options, asked = cap_batch_sizes({"name": "stagewise", "initial": 4, "max": 5000, "stages": [4, 1000, 5000]}, 1437)
    assert (options["initial"], options["max"], options["stages"]) == (4, 1437, [4, 1000, 1437])
    assert asked == {"max": 5000, "stages": [4, 1000, 5000]}
    assert build_policy(options, budget=100).stages == [4, 1000, 1437]
    unchanged = {"name": "constant", "initial": 32, "max": 32}
    assert cap_batch_sizes(unchanged, 32) == (unchanged, {})
