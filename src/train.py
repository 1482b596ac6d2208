"""Train one configuration: `python src/train.py dataset=... model=... optimizer=... batch_size=...`.

Hydra composes configs/train.yaml with the chosen groups; the run directory (Hydra's output
directory) receives config.yaml, metrics.jsonl, checkpoint.pt while it runs, then summary.json and
model.pt. Rerunning the same command in the same run directory resumes it from its checkpoint.
Under `torchrun --nproc_per_node=N src/train.py ...` the N ranks train one run with DDP, and rank 0
writes it.

Exit codes: 0 (completed, or diverged: see summary.json), 2 (a bad config, missing data, or a run
directory that another process holds: one line on stderr, nothing written), 75 (stopped by
SIGTERM/SIGUSR1 after a checkpoint: run it again to resume); 1 for any other error (a traceback).
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import adabatch.launch_time  # noqa: F401  (the resolver that configs/train.yaml names run directories with)
from adabatch.errors import ConfigError, DatasetUnavailable
from adabatch.run.lock import busy, held
from adabatch.run.preemption import PREEMPTED_EXIT_CODE
from adabatch.run_keys import complete_config

log = logging.getLogger("adabatch")


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    complete_config(cfg, HydraConfig.get().runtime.choices)
    try:
        if launched_alone() and held(run_dir):  # refused before torch's imports: a second, not several
            raise busy(run_dir)
        from adabatch.distributed import current_world
        from adabatch.run.loop import train

        summary = train(cfg, run_dir, current_world())
    except (ConfigError, DatasetUnavailable) as error:  # raised before anything is written; any other error is a bug
        remove_if_empty(run_dir)
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    status = summary["status"]
    if summary.get("already_ended"):
        log.info("nothing to do: %s holds an ended run (status %s); resume=never starts it afresh", run_dir, status)
    elif status == "preempted":
        log.warning("stopped by a signal at step %d after a checkpoint; run the same command to resume", summary["steps"])
        sys.exit(PREEMPTED_EXIT_CODE)
    elif status == "diverged":
        log.warning("diverged at step %d: %s; summary.json says status: diverged, the last checkpoint is kept in %s",
                    summary["diverged_at_step"], summary["diverged_because"], run_dir)
    else:
        metric = headline_metric(summary)
        log.info("done: %d steps, %d samples, final test %s %.4f, mean batch size %.1f; records in %s",
                 summary["steps"], summary["samples"], metric, summary[f"final_test_{metric}"],
                 summary["mean_batch_size"], run_dir)
    return summary.get(f"best_test_{headline_metric(summary)}")


def headline_metric(summary: dict) -> str:
    """The task's metric the summary reports (acc for classification, perplexity for next_token): what a
    sweeper optimizes (maximize accuracy, minimize perplexity)."""
    return next((key.removeprefix("best_test_") for key in summary if key.startswith("best_test_")), "acc")


def remove_if_empty(run_dir: Path) -> None:
    """Hydra creates the run directory before the config is checked; a rejected run leaves none."""
    try:
        run_dir.rmdir()
    except OSError:  # not empty (an earlier run's records, untouched) or already gone
        pass


def launched_alone() -> bool:
    """A plain `python` launch, not one of torchrun's ranks."""
    return int(os.environ.get("WORLD_SIZE", 1)) == 1


if __name__ == "__main__":
    if launched_alone():
        main()
    else:
        from adabatch.distributed import join_process_group, run_as_rank

        world = join_process_group()  # before Hydra names the run directory, so that all ranks share it
        if not world.is_main:  # rank 0 alone writes the run directory's files
            sys.argv += ["hydra/job_logging=disabled"]
        run_as_rank(main)
