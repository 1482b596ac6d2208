"""A run's own records, the source of truth for every figure and table.

    <run_dir>/config.yaml    the resolved config
    <run_dir>/metrics.jsonl  one JSON object per line; "kind" is "train" or "eval"
    <run_dir>/summary.json   written at the end (atomically)
    <run_dir>/model.pt       the final model's state_dict (torch.save), written just before the summary
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import torch
import yaml

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
MODEL_FILE = "model.pt"


def write_atomic(path: Path, content: str | Callable[[IO[bytes]], None]) -> None:
    """Write `content` (text, or a function writing to a binary file) to a temporary file in the same
    directory, fsync, then rename over `path`: readers see the old file or the new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(content, str):
                f.write(content.encode())
            else:
                content(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunRecords:
    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._metrics = None

    def write_config(self, config: Mapping[str, Any]) -> None:
        write_atomic(self.run_dir / CONFIG_FILE, yaml.safe_dump(dict(config), sort_keys=False))

    def append(self, record: Mapping[str, Any]) -> None:
        if self._metrics is None:  # a run starts its records afresh, also when it reuses a directory
            self._metrics = open(self.run_dir / METRICS_FILE, "w")
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()

    def write_model(self, state_dict: Mapping[str, Any]) -> None:
        write_atomic(self.run_dir / MODEL_FILE, lambda f: torch.save(dict(state_dict), f))

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        write_atomic(self.run_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None


def read_metrics(run_dir: str | Path, kind: str | None = None) -> Iterator[dict[str, Any]]:
    with open(Path(run_dir) / METRICS_FILE) as f:
        for line in f:
            record = json.loads(line)
            if kind is None or record.get("kind") == kind:
                yield record


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / SUMMARY_FILE).read_text())
