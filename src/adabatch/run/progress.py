"""Progress on the console: a bar on a terminal, plain periodic lines otherwise (SLURM logs)."""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("adabatch")


def describe(record: Mapping[str, Any]) -> str:
    parts = [f"step {record['step']}", f"batch {record['batch_size']}", f"loss {record['train_loss']:.4f}"]
    parts.append(f"lr {record['lr']:.3g}")
    return " | ".join(parts)


class Progress:
    def __init__(self, total_samples: int, every_s: float = 30.0, interactive: bool | None = None) -> None:
        self.total = total_samples
        self.every_s = every_s
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self._last_line = -float("inf")
        self._bar = None
        if self.interactive:
            from tqdm import tqdm

            self._bar = tqdm(total=total_samples, unit="sample", unit_scale=True, dynamic_ncols=True)

    def update(self, record: Mapping[str, Any]) -> None:
        if self._bar is not None:
            self._bar.n = min(record["samples"], self.total)
            self._bar.set_postfix_str(describe(record), refresh=True)
            return
        now = time.monotonic()
        if now - self._last_line >= self.every_s:
            self._last_line = now
            percent = 100.0 * record["samples"] / self.total
            log.info("samples %d/%d (%.0f%%) | %s", record["samples"], self.total, percent, describe(record))

    def note(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(message)
        else:
            log.info(message)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
