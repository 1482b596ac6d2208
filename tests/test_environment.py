"""environment.yml (conda, GPU nodes) must describe the environment that requirements.lock pins."""
import importlib.util
import re

from helpers import ROOT

spec = importlib.util.spec_from_file_location("write_environment", ROOT / "scripts" / "write_environment.py")
write_environment = importlib.util.module_from_spec(spec)
spec.loader.exec_module(write_environment)


def test_environment_yml_is_generated_from_the_lock():
    assert (ROOT / "environment.yml").read_text() == write_environment.render(), "run `make environment`"


def test_every_dependency_is_pinned_in_both_files():
    lock = write_environment.locked_versions((ROOT / "requirements.lock").read_text())
    conda = dict(re.findall(r"^\s+- ([a-z0-9\-]+)==(\S+)$", (ROOT / "environment.yml").read_text(), re.M))
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for name in write_environment.direct_requirements(pyproject):
        assert name in lock, f"{name} is in pyproject.toml but not in requirements.lock: run `make lock`"
        assert conda.get(name) == lock[name], f"{name}: environment.yml {conda.get(name)} != lock {lock[name]}"
    assert lock["torch"] and lock["opacus"]


def test_installed_versions_match_the_lock():
    from importlib.metadata import version

    lock = write_environment.locked_versions((ROOT / "requirements.lock").read_text())
    for name in ("torch", "torchvision", "opacus", "hydra-core", "wandb"):
        assert version(name).split("+")[0] == lock[name], f"{name}: run `make install`"
