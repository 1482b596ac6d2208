"""Where a suite of runs stands: done, part-way or not started, train time so far and to go.

    python scripts/suite_status.py RUN_DIR [RUN_DIR ...]      (make suite-status SUITE=<name> lists a suite's)
"""
from __future__ import annotations

import signal
import sys

from adabatch.analysis.suite_status import report, suite_states


def main(argv: list[str] | None = None) -> int:
    run_dirs = sys.argv[1:] if argv is None else argv
    if not run_dirs or run_dirs[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr if not run_dirs else sys.stdout)
        return 2 if not run_dirs else 0
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the listing quietly
    print(report(suite_states(run_dirs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
