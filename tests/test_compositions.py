"""Every experiment composes with every batch-size policy (`experiment=<e> batch_size=<b>`, no method):
the experiment's knobs of one policy (the quickstart's eta) reach that policy alone."""
import pytest
from helpers import CONFIG_DIR, compose
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from adabatch.batch_size import build_policy
from adabatch.run_keys import complete_config

EXPERIMENTS = sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml"))
BATCH_SIZES = sorted(path.stem for path in (CONFIG_DIR / "batch_size").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_each_experiment_composes_with_each_batch_size_policy(experiment):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):  # once for the experiment's 8 compositions
        configs = {b: hydra_compose("train", [f"experiment={experiment}", f"batch_size={b}"]) for b in BATCH_SIZES}
    for batch_size, cfg in configs.items():
        complete_config(cfg, {"batch_size": batch_size})
        options = OmegaConf.to_container(cfg.batch_size, resolve=True)
        policy = build_policy(options, budget=cfg.train.samples, population=60000)
        assert options["name"] == batch_size and policy.initial == options["initial"], (experiment, batch_size)


def test_the_quickstarts_eta_reaches_the_norm_test_only():
    assert compose("experiment=quickstart").batch_size.eta == 1.0  # make run: the norm test at eta = 1
    assert compose("batch_size=norm").batch_size.eta == 0.1  # the norm test's own default elsewhere
    assert compose("experiment=quickstart", "batch_size=norm", "batch_size.eta=0.5").batch_size.eta == 0.5
    assert "eta" not in compose("experiment=quickstart", "batch_size=inner_product").batch_size
    quickstart_ip = compose("experiment=quickstart", "batch_size=inner_product").batch_size
    assert (quickstart_ip.initial, quickstart_ip.max) == (4, 512)  # the knobs every policy has still apply
