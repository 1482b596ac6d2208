"""The process's random generators (torch's, and CUDA's once in use): saved and set again, for a
checkpoint, for trial steps that must leave the run as it was, and for a second pass that must draw
the first pass's dropout masks."""
from __future__ import annotations

from typing import Any

import torch


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state_all(state["cuda"])
