"""Find run directories, load their records, and group them into experiments and methods.

A *method* is a set of runs whose configs are identical except for the seed and for keys that do
not change what is trained (IGNORED_KEYS); an *experiment* is the set of methods sharing an
`experiment_name` (or, when that is null, a dataset and model). Methods keep the order in which
their first run is found, which for a Hydra multirun is the order of the sweep.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from adabatch.config_keys import KEYS_NOT_CHANGING_TRAINING, training_identity
from .headline import Headline, headline_of
from adabatch.run.records import CONFIG_FILE, SUMMARY_FILE, read_metrics, read_summary

# Dotted config keys (a key also covers everything under it) that differ between the seeds of one method.
IGNORED_KEYS = ("seed", *KEYS_NOT_CHANGING_TRAINING)
COMPLETED = "completed"
# Keys never spelled out in a built label: `method` is a label itself, `experiment_name` is shared.
LABEL_EXCLUDED = ("method", "experiment_name")


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]

    @property
    def completed(self) -> bool:
        return self.summary.get("status") == COMPLETED

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    @cached_property
    def train_records(self) -> list[dict[str, Any]]:
        return list(read_metrics(self.path, "train"))

    @cached_property
    def eval_records(self) -> list[dict[str, Any]]:
        return list(read_metrics(self.path, "eval"))


@dataclass
class Method:
    label: str
    config: dict[str, Any]  # the first run's config
    runs: list[Run] = field(default_factory=list)

    @property
    def completed(self) -> list[Run]:
        return [run for run in self.runs if run.completed]

    @property
    def incomplete(self) -> list[Run]:
        return [run for run in self.runs if not run.completed]


@dataclass
class Experiment:
    name: str
    methods: list[Method]

    @property
    def headline(self) -> Headline:
        """What its methods are compared by: test accuracy, or the validation loss of next-token runs."""
        return headline_of([run.summary for method in self.methods for run in method.runs])

    @property
    def slug(self) -> str:
        """The experiment's directory name under the output folder."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.name).strip("_") or "experiment"


def natural_key(path: Path) -> list[Any]:
    """Sort Hydra job directories 0, 1, ..., 10 numerically rather than as strings."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Every directory at or under `paths` that holds both config.yaml and summary.json.

    Directories keep the order of `paths`, then natural order within each; duplicates are dropped.
    """
    found: dict[Path, None] = {}
    for root in map(Path, paths):
        if not root.exists():
            raise FileNotFoundError(f"no such file or directory: {root}")
        candidates = [root, *(summary.parent for summary in root.rglob(SUMMARY_FILE))]
        for run_dir in sorted(candidates, key=natural_key):
            if (run_dir / CONFIG_FILE).is_file() and (run_dir / SUMMARY_FILE).is_file():
                found.setdefault(run_dir.resolve(), None)
    return list(found)


# Config keys added after runs were recorded, with the value that those runs had: a record without the key
# is grouped with the runs that spell it out.
ADDED_KEYS = {"dataset": {"validation": 0}}


def load_run(run_dir: Path) -> Run:
    config = yaml.safe_load((run_dir / CONFIG_FILE).read_text()) or {}
    for section, defaults in ADDED_KEYS.items():
        if isinstance(config.get(section), dict):
            config[section] = {**config[section], **{k: v for k, v in defaults.items() if k not in config[section]}}
    return Run(path=run_dir, config=config, summary=read_summary(run_dir))


def load_runs(paths: Iterable[str | Path]) -> list[Run]:
    return [load_run(run_dir) for run_dir in find_run_dirs(paths)]


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def is_ignored(key: str) -> bool:
    return any(key == ignored or key.startswith(f"{ignored}.") for ignored in IGNORED_KEYS)


def is_label_key(key: str) -> bool:
    return not is_ignored(key) and key not in LABEL_EXCLUDED


def method_key(config: Mapping[str, Any]) -> str:
    identity = training_identity(flatten(config), is_ignored)
    return json.dumps(identity, sort_keys=True, default=str)


def experiment_name(config: Mapping[str, Any]) -> str:
    if config.get("experiment_name"):
        return str(config["experiment_name"])
    dataset = (config.get("dataset") or {}).get("name", "unknown")
    model = (config.get("model") or {}).get("name", "unknown")
    return f"{dataset}_{model}"


def group_runs(runs: Iterable[Run]) -> list[Experiment]:
    """Split runs into experiments, and each experiment into labelled methods (first-seen order)."""
    experiments: dict[str, dict[str, Method]] = {}
    for run in runs:
        methods = experiments.setdefault(experiment_name(run.config), {})
        methods.setdefault(method_key(run.config), Method(label="", config=run.config)).runs.append(run)
    grouped = []
    for name, by_key in experiments.items():
        methods = list(by_key.values())
        for method, label in zip(methods, method_labels([m.config for m in methods])):
            method.label = label
        grouped.append(Experiment(name=name, methods=methods))
    return grouped


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def describe(flat: Mapping[str, Any], keys: list[str]) -> str:
    """Compact text for `keys` of one config: `name` keys by value, others as leaf=value."""
    leaves = [key.rsplit(".", 1)[-1] for key in keys]
    parts = []
    for key, leaf in zip(keys, leaves):
        if key not in flat:
            continue
        if leaf == "name":
            parts.append(format_value(flat[key]))
        else:
            shown = leaf if leaves.count(leaf) == 1 else key  # two differing `lr` keys need their paths
            parts.append(f"{shown}={format_value(flat[key])}")
    return " ".join(parts)


def section_of(key: str) -> str:
    """The section of a dotted key: batch_size.eta -> batch_size; "" for a top-level key."""
    return key.rpartition(".")[0]


def distinguishing_keys(flats: list[dict[str, Any]]) -> list[list[str]]:
    """For each flattened config, the keys that tell it apart from the others, in config order.

    A key of a named section (one with a `name`, such as batch_size) counts only against configs
    with the same name: adam vs adagrad is told by the name alone, not by their default learning
    rates. Other keys count against all configs. A section with a counted key brings its name,
    so that `eta=0.25` reads `norm eta=0.25`.
    """
    ordered = list(dict.fromkeys(key for flat in flats for key in flat if is_label_key(key)))
    position = {key: i for i, key in enumerate(ordered)}
    section_rank: dict[str, int] = {}
    for key in ordered:
        section_rank.setdefault(section_of(key), len(section_rank))

    def rank(key: str) -> tuple[int, bool, int]:
        return section_rank[section_of(key)], not key.endswith(".name"), position[key]

    per_config = []
    for flat in flats:
        keys = []
        for key in ordered:
            name_key = f"{section_of(key)}.name"
            if key not in flat:
                continue
            if key == name_key or name_key not in position:
                peers = flats
            else:
                peers = [other for other in flats if other.get(name_key) == flat.get(name_key)]
            if len({json.dumps(other[key], sort_keys=True, default=str) for other in peers if key in other}) > 1:
                keys.append(key)
        names = {f"{section_of(key)}.name" for key in keys if section_of(key)}
        keys += [key for key in names if key in flat and key not in keys]
        per_config.append(sorted(keys, key=rank))
    return per_config


def method_labels(configs: list[dict[str, Any]]) -> list[str]:
    """One distinct label per config: `method` when set, else what differs from the other configs,
    else `optimizer.name batch_size.name`. A label that several configs share gets the keys that tell those
    configs apart, then a number."""
    flats = [flatten(config) for config in configs]
    fallback_keys = ["optimizer.name", "batch_size.name"]
    described = [
        describe(flat, keys) or describe(flat, fallback_keys) or "run"
        for flat, keys in zip(flats, distinguishing_keys(flats))
    ]
    labels = [str(config["method"]) if config.get("method") else text for config, text in zip(configs, described)]
    for label, count in Counter(labels).items():
        if count < 2:
            continue
        # a label that several configs share gets what tells those configs apart (not all of them)
        indices = [i for i, other in enumerate(labels) if other == label]
        shared_names = {key for key in flats[indices[0]] if key.endswith(".name")
                        and len({json.dumps(flats[i].get(key), default=str) for i in indices}) == 1}
        for i, keys in zip(indices, distinguishing_keys([flats[i] for i in indices])):
            text = describe(flats[i], [key for key in keys if key not in shared_names])
            labels[i] = f"{label} ({text})" if text and text != label else label
    counts, seen = Counter(labels), Counter()
    unique = []
    for label in labels:
        if counts[label] > 1:
            seen[label] += 1
            label = f"{label} #{seen[label]}"
        unique.append(label)
    return unique
