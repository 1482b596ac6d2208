"""Components from their configs (`_target_` and hydra.utils.instantiate): each shipped config names its
component, a name is a shipped config's `_target_`, and every mistake a config can hold is one line
naming the key."""
from __future__ import annotations

import pytest
import torch
import yaml
from helpers import CONFIG_DIR

from adabatch.batch_size import Constant, build_policy
from adabatch.components import Parameters, build, get_object, shipped, shipped_names
from adabatch.data.sources import DatasetUnavailable
from adabatch.errors import ConfigError

GROUPS = ("dataset", "model", "optimizer", "schedule", "batch_size")  # built from `_target_`; logger is not


@pytest.mark.parametrize("group", GROUPS)
def test_each_shipped_config_names_its_component_by_target(group):
    configs = {path.stem: yaml.safe_load(path.read_text()) for path in sorted((CONFIG_DIR / group).glob("*.yaml"))}
    assert shipped_names(group) == tuple(configs) and len(configs) >= 4
    for stem, config in configs.items():
        assert config["name"] == stem  # records, tables and run directories call it by its file's name
        target = get_object(config["_target_"])
        assert callable(target) and shipped(group, stem) is target  # a name stands for its config's target


class Base:
    def __init__(self, initial, max, interval=1, population=None):  # noqa: A002
        self.initial, self.max, self.interval, self.population = initial, max, interval, population


class Forwarding(Base):
    def __init__(self, initial, max, eta, **options):  # noqa: A002
        super().__init__(initial, max, **options)
        self.eta = eta


def test_parameters_follow_options_passed_on_to_the_base_class():
    parameters = Parameters(Forwarding)
    assert parameters.named == ["initial", "max", "eta", "interval", "population"] and not parameters.any_keyword
    assert Parameters(dict).any_keyword  # no signature Python can read: any keyword goes


def build_test_policy(**config):
    return build("batch_size", {"_target_": f"{__name__}.Forwarding", **config},
                 offered={"population": 60, "budget": 1000})


def test_offered_values_go_to_the_parameters_that_take_them():
    policy = build_test_policy(initial=2, max=8, eta=0.5, interval=3)
    assert (policy.initial, policy.max, policy.eta, policy.interval, policy.population) == (2, 8, 0.5, 3, 60)


@pytest.mark.parametrize("config, message", [
    ({"initial": 2, "max": 8}, "batch_size.eta is required by tests.test_components.Forwarding"),
    ({"initial": 2, "max": 8, "eta": 1, "theta": 2},
     "batch_size.theta is not a parameter of tests.test_components.Forwarding (batch_size=tests.test_components."
     "Forwarding); its parameters are initial, max, eta, interval"),
    ({"initial": 2, "max": 8, "eta": "???"}, "batch_size.eta is required by batch_size=tests.test_components.Forwarding"),
])
def test_config_mistakes_are_one_line_naming_the_key(config, message):
    with pytest.raises(ConfigError) as info:
        build_test_policy(**config)
    assert message.replace("tests.test_components", __name__) in str(info.value) and "\n" not in str(info.value)


def test_nested_targets_are_instantiated_too():
    """hydra.utils.instantiate builds a component's own components: here a model's activation."""
    model = build("model", {"_target_": "torch.nn.Sequential", "_args_": [{"_target_": "torch.nn.Tanh"}]})
    assert isinstance(model[0], torch.nn.Tanh)


def test_a_value_error_of_the_target_names_the_group_and_other_errors_pass_unchanged(tmp_path):
    with pytest.raises(ConfigError, match=r"^optimizer=adagrad: Invalid learning rate: -1"):
        build("optimizer", {"name": "adagrad", "lr": -1}, [torch.nn.Parameter(torch.ones(1))])
    with pytest.raises(ConfigError, match=r"^batch_size.eta=0 must be a number > 0"):  # a message naming its key is kept
        build_policy({"name": "norm", "initial": 4, "max": 8, "eta": 0}, budget=1)
    with pytest.raises(DatasetUnavailable):  # not wrapped in Hydra's InstantiationException
        build("dataset", {"_target_": "adabatch.data.sources.mnist", "download": False},
              offered={"data_dir": str(tmp_path)})


def test_a_config_without_target_names_a_shipped_config():
    assert isinstance(build_policy({"name": "constant", "initial": 3}, budget=1), Constant)
    with pytest.raises(ConfigError, match="batch_size='norm_test' is unknown; choose one of augmented_inner_product, "
                                          "constant, .*, or name your"):
        build_policy({"name": "norm_test", "initial": 3}, budget=1)

