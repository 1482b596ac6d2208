"""A run owns its run directory: an OS lock (flock) on <run_dir>/.lock, which the kernel releases
when the process ends, however it ends (a SIGKILL too), so no lock outlives its holder.

A second process started on a held directory is refused at once and touches nothing. The lock file
says who holds it (pid, host, since when), for the refusal's message only: the flock is the lock.
Torch-free, so that src/train.py can look before it imports torch (`held`).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..distributed import World

LOCK_FILE = ".lock"


class RunDirectoryBusy(ConfigError):
    """Another process holds the run directory; the message is one line naming it."""


def holder_of(path: Path) -> str:
    try:
        return path.read_text().strip() or "another process"
    except OSError:
        return "another process"


def busy(run_dir: Path) -> RunDirectoryBusy:
    return RunDirectoryBusy(
        f"{run_dir} is in use by {holder_of(run_dir / LOCK_FILE)}; a run directory holds one run at a time: "
        "wait for that run to end (or stop it), or use another hydra.run.dir"
    )


def held(run_dir: Path) -> bool:
    """Whether another process holds `run_dir` now: its lock taken and let go at once (nothing is
    created). A look only: own_run_directory's lock decides who runs."""
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # lets go of the lock, if it was taken here
    return False


def _acquire(path: Path) -> int | None:
    """The lock file's descriptor, locked; None when another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            return fd
        os.close(fd)  # the holder removed this file as it released it: lock the one now in its place


@contextlib.contextmanager
def own_run_directory(run_dir: Path, world: World) -> Iterator[None]:
    """Hold `run_dir` for the block (rank 0 holds it for all the ranks of a run), or raise
    RunDirectoryBusy on every rank, before anything is written."""
    fd = None
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = _acquire(run_dir / LOCK_FILE)
    if world.any(world.is_main and fd is None):
        raise busy(run_dir)
    try:
        if fd is not None:
            os.ftruncate(fd, 0)
            started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} (started {started})\n".encode())
        yield
    finally:
        if fd is not None:
            # Removed while still held, so that a process locking it meanwhile sees another inode and retries.
            (run_dir / LOCK_FILE).unlink(missing_ok=True)
            os.close(fd)
