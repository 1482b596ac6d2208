"""Components from their config groups, the Hydra way: a group's config names a class or function in
`_target_`, and `hydra.utils.instantiate` calls it with the config's other keys as keyword arguments.

    # configs/model/mynet.yaml, with mypkg on PYTHONPATH
    _target_: mypkg.MyNet     # called as MyNet(input_shape, num_classes, width=64)
    width: 64

Some keys of a group configure the run, not the component (a display `name`, the optimizer's labels,
the dataset's augmentation, the batch size's micro-batching and engine): they are not passed. The run
also offers values a component may take (a policy's `budget`, a dataset source's `data_dir`): each is
passed only to a target that has a parameter of that name.

There is one way to build: by `_target_`. The shipped components are the configs in configs/<group>/,
each naming its `_target_`; no list in the code repeats them. A mapping without `_target_` (the
shorthand of Python callers, `{"name": "norm", "eta": 0.1}`) takes the `_target_` of the shipped config
of that name (configs/batch_size/norm.yaml), and is then built the same way.

Every mistake a config can hold (a target that does not import, a key the target has no parameter for,
a required key left out) is found before the call, and named in one line; the values themselves are
checked by the target (adabatch.checks).
"""
from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import hydra.utils
import yaml
from hydra.errors import InstantiationException

from .errors import ConfigError, one_line

TARGET = "_target_"
HYDRA_KEYS = ("_args_", "_partial_", "_recursive_", "_convert_")  # read by instantiate, not passed on
MISSING = "???"  # OmegaConf's mandatory value, left by OmegaConf.to_container(resolve=True)
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"  # the repository's configs/, next to src/


@functools.cache
def shipped_targets(group: str) -> dict[str, str]:
    """{config name: its `_target_`} of the shipped configs of `group`, configs/<group>/*.yaml."""
    configs = {path.stem: yaml.safe_load(path.read_text()) for path in sorted((CONFIG_DIR / group).glob("*.yaml"))}
    return {name: config[TARGET] for name, config in configs.items() if isinstance(config, dict) and TARGET in config}


def shipped_names(group: str) -> tuple[str, ...]:
    return tuple(shipped_targets(group))


def shipped(group: str, name: str) -> Callable[..., Any]:
    """The class or function that the shipped config configs/<group>/<name>.yaml names."""
    return locate(group, {"name": name})


def build(group: str, config: Mapping[str, Any], *args: Any, run_keys: tuple[str, ...] = ("name",),
          offered: Mapping[str, Any] | None = None) -> Any:
    """Call the target of `config` (the `group` config of the run) with `args`, the config's keys but
    `run_keys`, and those of `offered` it has parameters for. A ValueError the target raises (a value out
    of its range) becomes a ConfigError naming the group; any other error is raised as the target raised it."""
    target, options = check(group, config, *args, run_keys=run_keys, offered=offered)
    try:  # the Hydra way, nested `_target_`s and `_partial_` included
        return hydra.utils.instantiate({TARGET: target_path(group, config), **options}, *args, _convert_="all")
    except Exception as error:
        raised = error.__cause__ if isinstance(error, InstantiationException) and error.__cause__ else error
        if isinstance(raised, ValueError):
            message = one_line(raised)
            raise ConfigError(message if message.startswith(group) else f"{describe(group, config)}: {message}") from raised
        if raised is error:
            raise
        raise raised from None  # what the target raised, not Hydra's wrapper of it


def check(group: str, config: Mapping[str, Any], *args: Any, run_keys: tuple[str, ...] = ("name",),
          offered: Mapping[str, Any] | None = None) -> tuple[Callable[..., Any], dict[str, Any]]:
    """What `build` would call, and with which keyword arguments, without calling it; or a ConfigError."""
    target = locate(group, config)
    options = {key: value for key, value in config.items() if key not in run_keys and key != TARGET}
    hydra_keys = {key: options.pop(key) for key in HYDRA_KEYS if key in options}
    for key, value in options.items():
        if isinstance(value, str) and value == MISSING:
            raise ConfigError(f"{group}.{key} is required by {describe(group, config)}: add {group}.{key}=<value> "
                              "to the command line or to its config")
    parameters = Parameters(target)
    options.update({key: value for key, value in (offered or {}).items() if key in parameters.named})
    positional = (*args, *hydra_keys.get("_args_", ()))
    unknown = [key for key in options if key not in parameters.named and not parameters.any_keyword]
    if unknown:
        settable = [key for key in parameters.named[len(positional):] if key not in (offered or {})]
        raise ConfigError(f"{group}.{unknown[0]} is not a parameter of {path_of(target)} ({describe(group, config)}); "
                          f"its parameters are {', '.join(settable) or 'none'}")
    if parameters.signature is not None and not parameters.any_keyword:
        bind = parameters.signature.bind_partial if hydra_keys.get("_partial_") else parameters.signature.bind
        try:
            bind(*positional, **options)
        except TypeError as error:
            missing = str(error).partition("missing a required argument: ")[2].strip("'")
            if missing:
                raise ConfigError(f"{group}.{missing} is required by {path_of(target)} ({describe(group, config)}): "
                                  f"add {group}.{missing}=<value> to the command line or to its config") from None
            raise ConfigError(f"{describe(group, config)}: {path_of(target)} cannot be called so ({error})") from None
    return target, {**options, **hydra_keys}


def target_path(group: str, config: Mapping[str, Any]) -> str | Callable[..., Any]:
    """The `_target_` of `config`, else that of the shipped config it names."""
    if TARGET in config:
        return config[TARGET]
    targets, name = shipped_targets(group), config.get("name")
    if name not in targets:
        where = "" if CONFIG_DIR.is_dir() else f" (no {CONFIG_DIR}: the shipped configs are read from the repository)"
        raise ConfigError(f"{group}={name!r} is unknown{where}; choose one of {', '.join(targets)}, "
                          f"or name your own class or function in {group}._target_")
    return targets[name]


def locate(group: str, config: Mapping[str, Any]) -> Callable[..., Any]:
    """The class or function of `config`: its `_target_`, else that of the shipped config it names."""
    path = target_path(group, config)
    targets, name = shipped_targets(group), config.get("name")
    try:
        target = get_object(path) if isinstance(path, str) else path
    except Exception as error:  # Hydra's message for a missing module or attribute spans several lines
        reason = one_line(error.__cause__ or error)
        raise ConfigError(f"{group}._target_={path} cannot be imported ({reason}); give the dotted path of a class "
                          "or function, and put its package on PYTHONPATH (or install it)") from None
    if not callable(target):
        raise ConfigError(f"{group}._target_={path} is a {type(target).__name__}, not a class or function")
    if TARGET in config and name in targets and get_object(targets[name]) is not target:
        # `name` labels a component, it does not choose one
        raise ConfigError(f"{group}.name={name} is the name of the shipped {path_of(get_object(targets[name]))}, not "
                          f"of {group}._target_={path}; choose a component with {group}=<config name>, and give your "
                          "own a name of its own")
    return target


def get_object(path: str) -> Any:
    """hydra.utils.get_object, without the log line it writes (into the run's train.log) before raising."""
    logger = logging.getLogger("hydra.utils")
    disabled, logger.disabled = logger.disabled, True
    try:
        return hydra.utils.get_object(path)
    finally:
        logger.disabled = disabled


class Parameters:
    """The parameters a target takes by keyword. A class whose __init__ passes **options on to its base
    class takes the base's parameters too (the pattern of the shipped policies); `signature` is None when
    Python cannot tell (then any keyword is taken)."""

    KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)

    def __init__(self, target: Callable[..., Any]) -> None:
        try:
            self.signature: inspect.Signature | None = inspect.signature(target)
        except (TypeError, ValueError):  # some builtins have no signature
            self.signature, self.named, self.any_keyword = None, [], True
            return
        self.named = [p.name for p in self.signature.parameters.values() if p.kind in self.KINDS]
        self.any_keyword = self.takes_any(self.signature)
        bases = [c for c in target.__mro__[1:] if "__init__" in vars(c)] if inspect.isclass(target) else []
        for base in bases:
            if not self.any_keyword or base is object:
                break
            inherited = inspect.signature(base.__init__)
            self.named += [p.name for p in list(inherited.parameters.values())[1:]
                           if p.kind in self.KINDS and p.name not in self.named]
            self.any_keyword = self.takes_any(inherited)

    @staticmethod
    def takes_any(signature: inspect.Signature) -> bool:
        return any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())


def describe(group: str, config: Mapping[str, Any]) -> str:
    return f"{group}={config.get('name') or config.get(TARGET)}"


def path_of(target: Callable[..., Any]) -> str:
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"
