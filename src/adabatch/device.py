"""Device choice and numeric precision."""
from __future__ import annotations

import contextlib

import torch

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The device of this process; a data-parallel rank gets the GPU of its local rank."""
    if name not in DEVICES:
        raise ValueError(f"device={name!r} is unknown; choose one of {', '.join(DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA device is visible; use device=auto or device=cpu")
    return torch.device("cuda", local_rank) if name == "cuda" else torch.device("cpu")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; fp32 runs without autocast."""
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision={precision!r} is unknown; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if device.type != "cuda":
        raise ValueError("train.precision=bf16 is for CUDA runs; use train.precision=fp32 on the CPU")
    return torch.autocast("cuda", dtype=torch.bfloat16)
