"""src/train.py's Hydra entry point, run in this process as `python src/train.py <overrides>` would."""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
from collections.abc import Iterator

import pytest
from helpers import ROOT

spec = importlib.util.spec_from_file_location("train_cli", ROOT / "src" / "train.py")
train_cli = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_cli)
train_cli.main.__wrapped__.__module__ = "__main__"  # so Hydra finds configs/ next to src/, as when run as a script


@contextlib.contextmanager
def command_line(overrides: list[str]) -> Iterator[None]:
    """sys.argv as the command line gives it; afterwards argv and the root logger as they were."""
    argv, root = sys.argv, logging.getLogger()
    handlers, level = root.handlers[:], root.level
    sys.argv = ["train.py", *overrides]
    try:
        yield
    finally:
        sys.argv = argv
        # Hydra pointed the root logger at the run's train.log, whose directory may be gone (a rejected run):
        # a later test's first log line would fail to create it. A real process exits here.
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:], root.level = handlers, level


def train(overrides: list[str]) -> None:
    """A run that must succeed."""
    with command_line(overrides):
        train_cli.main()


def refused(overrides: list[str], capsys) -> tuple[int, str]:
    """A run that must exit: (its exit code, its stderr)."""
    with command_line(overrides), pytest.raises(SystemExit) as exit_info:
        train_cli.main()
    return exit_info.value.code, capsys.readouterr().err
