"""Train one run for the resume tests in a forked copy of the test process, interrupted at a chosen point.

    exit_code = interrupt_worker.run(run_dir, kind, n, overrides)

KIND is where the N-th event of the child ends it:
    none              train to the end
    after-record      SIGKILL right after the N-th training record is written (between checkpoints)
    mid-record        SIGKILL halfway through writing the N-th training record
    mid-checkpoint    SIGKILL halfway through writing the N-th checkpoint file
    term              SIGTERM after the N-th training record: the run checkpoints and exits 75
It returns the child's exit code (-9 when SIGKILLed). The child is forked from multiprocessing's fork
server, which imported this module once: it starts with the imports done (seconds of torch each, most of
these tests' time), and from a process that never trained, so no thread pool of a test is forked with it
(forking the test process itself hangs where an earlier test ran torch on several threads).
tests/test_resume.py stops and resumes the CLI in fresh processes too.
"""
from __future__ import annotations

import io
import json
import multiprocessing
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


def _train(run_dir: str, kind: str, n: int, overrides: list[str]) -> None:
    interrupt(kind, n)
    summary = train(compose(*overrides), Path(run_dir))
    sys.exit(PREEMPTED_EXIT_CODE if summary["status"] == "preempted" else 0)


FORK_SERVER = multiprocessing.get_context("forkserver")
FORK_SERVER.set_forkserver_preload(["torch._dynamo", "interrupt_worker"])  # torch.optim imports dynamo on first use


def run(run_dir, kind: str = "none", n: int = 0, overrides=(), timeout_s: float = 300) -> int:
    child = FORK_SERVER.Process(target=_train, args=(str(run_dir), kind, n, list(overrides)))
    child.start()
    child.join(timeout_s)
    if child.exitcode is None:
        child.kill()
        child.join()
        raise TimeoutError(f"the {kind} run in {run_dir} took over {timeout_s} s")
    return child.exitcode
