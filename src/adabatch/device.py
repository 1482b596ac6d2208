"""Device choice and numeric precision."""
from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

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
    """fp32 runs without autocast; bf16 is torch's autocast to bfloat16 on the device's type, CUDA or
    CPU alike (matmuls and convolutions in bf16, reductions and the loss in float32). The tests'
    statistics stay float64 sums either way (stats/sums.py)."""
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision={precision!r} is unknown; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU): before reading a clock or a memory count."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


VECTOR_EXTENSIONS = ("sse4_2", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def describe(device: torch.device) -> str:
    """The machine a measurement ran on: the GPU's name, or the CPU's model, cores and vector extensions
    (timings and their ratios change with them)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name, flags = platform.processor() or "unknown CPU", set()
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
    vector = [f for f in VECTOR_EXTENSIONS if f in flags]
    return f"{name} ({os.cpu_count()} cores; vector extensions: {' '.join(vector) or 'none listed'})"
