"""A run's own records, the source of truth for every figure and table.

    <run_dir>/config.yaml    the resolved config
    <run_dir>/metrics.jsonl  one JSON object per line; "kind" is "train" or "eval"
    <run_dir>/summary.json   written at the end (atomically)
    <run_dir>/model.pt       the final model's state_dict (torch.save), written just before the summary

A finished run's metrics.jsonl may be kept gzipped as metrics.jsonl.gz (how results/ commits them);
readers take either.
"""
from __future__ import annotations

import gzip
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
PACKED_METRICS_FILE = METRICS_FILE + ".gz"


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
    """`resume_at` (bytes of metrics.jsonl that a checkpoint covers) continues a run's records: what
    was written after that point is cut off, and will be written again by the resumed run."""

    def __init__(self, run_dir: str | Path, resume_at: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        metrics = self.run_dir / METRICS_FILE
        if resume_at is None:
            self._metrics = open(metrics, "w")  # a fresh run starts its records afresh
        else:
            if not metrics.exists() or metrics.stat().st_size < resume_at:
                raise RuntimeError(f"{metrics} is shorter than its checkpoint says ({resume_at} bytes): it was altered")
            self._metrics = open(metrics, "r+")
            self._metrics.truncate(resume_at)
            self._metrics.seek(resume_at)

    def write_config(self, config: Mapping[str, Any]) -> None:
        write_atomic(self.run_dir / CONFIG_FILE, yaml.safe_dump(dict(config), sort_keys=False))

    def append(self, record: Mapping[str, Any]) -> None:
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()

    def metrics_position(self) -> int:
        """Bytes of metrics.jsonl written so far, synced to disk: where a checkpoint's records end."""
        self._metrics.flush()
        os.fsync(self._metrics.fileno())
        return self._metrics.tell()

    def write_model(self, state_dict: Mapping[str, Any]) -> None:
        write_atomic(self.run_dir / MODEL_FILE, lambda f: torch.save(dict(state_dict), f))

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        write_atomic(self.run_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")

    def close(self) -> None:
        self._metrics.close()


def read_metrics(run_dir: str | Path, kind: str | None = None) -> Iterator[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    packed = path.with_name(PACKED_METRICS_FILE)
    with (gzip.open(packed, "rt") if packed.exists() and not path.exists() else open(path)) as f:
        for line in f:
            record = json.loads(line)
            if kind is None or record.get("kind") == kind:
                yield record


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / SUMMARY_FILE).read_text())


def pack_metrics(run_dir: str | Path) -> Path:
    """Gzip a finished run's metrics.jsonl into metrics.jsonl.gz (no name or time in the header, so the
    same records always give the same bytes) and remove the original."""
    path = Path(run_dir) / METRICS_FILE
    packed = path.with_name(PACKED_METRICS_FILE)
    with open(path, "rb") as source, open(packed, "wb") as raw, gzip.GzipFile(
        filename="", fileobj=raw, mode="wb", compresslevel=9, mtime=0
    ) as target:
        target.write(source.read())
    path.unlink()
    return packed
