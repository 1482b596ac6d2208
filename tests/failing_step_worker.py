"""`python src/train.py OVERRIDES...` whose N-th training step raises a ValueError, as a bug deep in a
run would; for tests/test_cli.py.

    python tests/failing_step_worker.py N [OVERRIDES...]
"""
from __future__ import annotations

import runpy
import sys

from helpers import ROOT

from adabatch.run.reporting import Reporter

if __name__ == "__main__":
    n, overrides = int(sys.argv[1]), sys.argv[2:]
    record_step = Reporter.training

    def failing_step(self, **fields):
        if fields["step"] == n:
            raise ValueError(f"a bug at step {n}")
        record_step(self, **fields)

    Reporter.training = failing_step
    sys.argv = [str(ROOT / "src" / "train.py"), *overrides]
    runpy.run_path(sys.argv[0], run_name="__main__")
