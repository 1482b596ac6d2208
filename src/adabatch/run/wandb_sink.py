"""Weights & Biases logging: online with a key and a reachable server, offline otherwise."""
from __future__ import annotations

import netrc
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

WANDB_MODES = ("auto", "online", "offline", "disabled")


def _server_reachable(url: str, timeout_s: float = 3.0) -> bool:
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _api_key_configured(base_url: str) -> bool:
    """A key in WANDB_API_KEY or in ~/.netrc for the server (where `wandb login` writes it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(urlparse(base_url).hostname) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(requested: str) -> str:
    """`auto`: online when an API key is configured and the server answers, else offline."""
    if requested not in WANDB_MODES:
        raise ValueError(f"logger.mode={requested!r} is unknown; choose one of {', '.join(WANDB_MODES)}")
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    import wandb

    base_url = wandb.Settings().base_url  # honours WANDB_BASE_URL
    if _api_key_configured(base_url) and _server_reachable(base_url):
        return "online"
    return "offline"


class WandbSink:
    def __init__(
        self, cfg: Mapping[str, Any], config: Mapping[str, Any], run_dir: Path, name: str, run_id: str | None = None
    ) -> None:
        """`run_id`: continue that W&B run (a resumed training run) instead of starting one."""
        import wandb

        self.mode = resolve_mode(cfg.get("mode", "auto"))
        self.run = wandb.init(
            project=cfg.get("project", "adabatch"),
            entity=cfg.get("entity"),
            group=cfg.get("group"),
            tags=list(cfg.get("tags") or []),
            name=name,
            dir=str(run_dir),
            config=dict(config),
            mode=self.mode,
            id=run_id,
            resume="allow" if run_id else None,
        )
        self.run.define_metric("samples")
        self.run.define_metric("*", step_metric="samples")

    def log(self, record: Mapping[str, Any]) -> None:
        kind = record.get("kind", "train")
        self.run.log({f"{kind}/{k}" if k not in ("samples", "step") else k: v for k, v in record.items() if k != "kind"})

    def set_summary(self, summary: Mapping[str, Any]) -> None:
        for key, value in summary.items():
            self.run.summary[key] = value

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)
