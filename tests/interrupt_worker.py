"""Train one run for tests/test_resume.py, and interrupt this very process at a chosen point.

    python tests/interrupt_worker.py RUN_DIR KIND N [OVERRIDES...]

KIND is where the N-th event of this process ends it:
    none              train to the end
    after-record      SIGKILL right after the N-th training record is written (between checkpoints)
    mid-record        SIGKILL halfway through writing the N-th training record
    mid-checkpoint    SIGKILL halfway through writing the N-th checkpoint file
    term              SIGTERM after the N-th training record: the run checkpoints and exits 75
"""
from __future__ import annotations

import io
import json
import os
import signal
import sys
from pathlib import Path

from helpers import compose

from adabatch.run import checkpoint as checkpoint_module
from adabatch.run.preemption import PREEMPTED_EXIT_CODE
from adabatch.run.records import RunRecords
from adabatch.run.loop import train


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def interrupt(kind: str, n: int) -> None:
    count = {"records": 0, "checkpoints": 0}
    append, write_atomic = RunRecords.append, checkpoint_module.write_atomic

    def counted_append(self, record):
        if record["kind"] != "train" or kind not in ("after-record", "mid-record", "term"):
            return append(self, record)
        count["records"] += 1
        if count["records"] == n and kind == "mid-record":
            line = json.dumps(record) + "\n"
            self._metrics.write(line[: len(line) // 2])
            self._metrics.flush()
            die()
        append(self, record)
        if count["records"] == n:
            os.kill(os.getpid(), signal.SIGKILL if kind == "after-record" else signal.SIGTERM)

    def counted_write_atomic(path, content):
        if kind == "mid-checkpoint":
            count["checkpoints"] += 1
            if count["checkpoints"] == n:
                def half_then_die(f):
                    buffer = io.BytesIO()
                    content(buffer)
                    f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                    f.flush()
                    os.fsync(f.fileno())
                    die()

                return write_atomic(path, half_then_die)
        return write_atomic(path, content)

    RunRecords.append = counted_append
    checkpoint_module.write_atomic = counted_write_atomic  # what save_checkpoint writes through


if __name__ == "__main__":
    run_dir, kind, n, *overrides = sys.argv[1:]
    interrupt(kind, int(n))
    summary = train(compose(*overrides), Path(run_dir))
    sys.exit(PREEMPTED_EXIT_CODE if summary["status"] == "preempted" else 0)
