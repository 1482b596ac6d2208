"""SIGTERM and SIGUSR1 (what SLURM sends before preemption or the time limit): finish the step,
checkpoint, and exit with PREEMPTED_EXIT_CODE so that the job script requeues the run."""
from __future__ import annotations

import signal
from types import FrameType

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL in sysexits.h: "try again later"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopRequest:
    """Set by a stop signal while installed; the training loop checks it after every step."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def __bool__(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum

    def __enter__(self) -> StopRequest:
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
