"""How much memory a step takes: the peak of the bytes it allocates beyond what was live before it.

On CUDA the caching allocator keeps the count (`torch.cuda.max_memory_allocated`) and a step past the
device's memory raises `torch.OutOfMemoryError`. The CPU allocator keeps no count, so on the CPU
`TensorMemory` counts the storages of the tensors the step's operations create while they live. It
can also stand in for a smaller device: past its `limit` it raises `torch.OutOfMemoryError` as CUDA
would, which makes the automatic micro-batch search deterministic and testable without a GPU.

Live tensors are not all a CPU process holds: kernels' own workspaces (im2col columns of a
convolution), the C allocator's freed-but-kept pages and first-use caches never appear as tensors,
and a ResNet-50's process grew well past its counted tensors until the kernel killed it. So on Linux
the CPU gauge also watches the process's resident memory (RSS, /proc/self/statm, and its peak,
VmHWM, reset through /proc/self/clear_refs): after every operation of the step, and its peak after
the step, against `resident_limit` (bytes of the whole process), raising `torch.OutOfMemoryError`
before the machine runs out.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..device import synchronize


_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int | None:
    """The process's resident memory now (None where /proc/self/statm cannot be read)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return None


def peak_resident_bytes() -> int | None:
    """The process's peak resident memory (VmHWM) since it started or since `reset_peak_resident`."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return None


def release_freed_memory() -> None:
    """Hand the C allocator's freed pages back to the system (glibc's malloc_trim), so that what one
    trial step freed does not count as resident in the next; nothing elsewhere."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_resident() -> bool:
    """Set VmHWM to the resident memory now (Linux 4.0+); False where it cannot be reset."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


class ResidentWatch:
    """Raises `torch.OutOfMemoryError` when the process's resident memory passes `limit` bytes: read
    with one pread of /proc/self/statm (about 10 us), cheap enough after every operation of a step."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._statm = os.open("/proc/self/statm", os.O_RDONLY)

    def check(self) -> None:
        resident = int(os.pread(self._statm, 128, 0).split()[1]) * _PAGE_BYTES
        if resident > self.limit:
            raise torch.OutOfMemoryError(f"the process holds {resident} bytes resident, past the {self.limit} allowed")

    def close(self) -> None:
        os.close(self._statm)


@dataclass
class Measurement:
    peak_bytes: int = 0  # the step's peak above what was allocated when it started
    resident_peak_bytes: int | None = None  # CPU: the process's peak resident memory during the step (None: not read)


class TensorMemory(TorchDispatchMode):
    """Counts the bytes of the tensor storages created under it while they are alive (any device).

    The count follows storages, not tensors: views share their base's storage and count once. Tensors
    that existed before the mode (the weights, the dataset) are not counted. A storage's Python object
    lives as long as the storage (torch preserves it), so a weak reference's callback says when it is freed.
    """

    def __init__(self, limit_bytes: int | None = None, resident: ResidentWatch | None = None) -> None:
        super().__init__()
        self.limit_bytes = limit_bytes
        self.resident = resident  # the process's resident memory, checked after every operation
        self._live: dict[int, tuple[weakref.ref, int]] = {}  # data pointer -> (the storage, weakly; its bytes)
        self.current = 0  # bytes of the counted storages alive now
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self._count(leaf)
        if self.resident is not None:
            self.resident.check()
        return out

    def live_bytes(self) -> int:
        return self.current

    def _count(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key, size = storage.data_ptr(), storage.nbytes()
        if size == 0:
            return
        if key in self._live:
            ref, _ = self._live[key]
            if ref() is not None:  # counted already
                return
            self._freed(key, ref)  # an address freed and reused before its callback ran
        self._live[key] = (weakref.ref(storage, functools.partial(self._freed, key)), size)
        self.current += size
        if self.current <= self.peak:
            return
        self.peak = self.current
        if self.limit_bytes is not None and self.current > self.limit_bytes:
            self._live.clear()
            raise torch.OutOfMemoryError(
                f"the step needs more than the {self.limit_bytes} bytes this measurement allows (simulated device memory)"
            )

    def _freed(self, key: int, ref: weakref.ref) -> None:
        entry = self._live.get(key)
        if entry is not None and entry[0] is ref:  # not a later storage at the same address
            del self._live[key]
            self.current -= entry[1]


class MemoryGauge:
    """Measures a block's peak memory on one device; past `limit_bytes` the block is out of memory,
    and on the CPU also past `resident_limit` bytes resident in the whole process."""

    def __init__(self, device: torch.device, limit_bytes: int | None = None, resident_limit: int | None = None) -> None:
        self.device = device
        self.limit_bytes = limit_bytes  # stand in for a device with this much memory for steps
        self.resident_limit = resident_limit if device.type == "cpu" else None

    @contextlib.contextmanager
    def measure(self) -> Iterator[Measurement]:
        result = Measurement()
        if self.device.type == "cuda":
            synchronize(self.device)
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            yield result
            synchronize(self.device)
            result.peak_bytes = torch.cuda.max_memory_allocated(self.device) - before
            if self.limit_bytes is not None and result.peak_bytes > self.limit_bytes:
                raise torch.OutOfMemoryError(f"the step took {result.peak_bytes} bytes, above the {self.limit_bytes} allowed")
        else:
            watching = self.resident_limit is not None and resident_bytes() is not None
            resident = ResidentWatch(self.resident_limit) if watching else None
            peak_readable = reset_peak_resident()
            counter = TensorMemory(self.limit_bytes, resident)
            try:
                with counter:
                    yield result
            finally:
                result.peak_bytes = counter.peak
                result.resident_peak_bytes = peak_resident_bytes() if peak_readable else None
                if resident is not None:
                    resident.close()
            if watching and result.resident_peak_bytes is not None and result.resident_peak_bytes > self.resident_limit:
                raise torch.OutOfMemoryError(
                    f"the process's resident memory peaked at {result.resident_peak_bytes} bytes, past the {self.resident_limit} allowed"
                )

def free_bytes(device: torch.device) -> int | None:
    """The memory a step could allocate on `device` now (None where it cannot be read)."""
    if device.type == "cuda":  # free on the device, and held by torch's cache but unused
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return torch.cuda.mem_get_info(device)[0] + cached
    return _available_ram()


def _available_ram() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
