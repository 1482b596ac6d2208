"""Train one configuration: `python src/train.py dataset=... model=... optimizer=... batch_size=...`.

Hydra composes configs/train.yaml with the chosen groups; the run directory (Hydra's output
directory) receives config.yaml, metrics.jsonl, summary.json and model.pt. Under
`torchrun --nproc_per_node=N src/train.py ...` the N ranks train one run with DDP, and rank 0 writes it.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from adabatch.data import DatasetUnavailable
from adabatch.distributed import current_world, join_process_group, leave_process_group
from adabatch.training import train

log = logging.getLogger("adabatch")


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        summary = train(cfg, run_dir, current_world())
    except (ValueError, DatasetUnavailable) as error:
        log.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    log.info(
        "done: %d steps, %d samples, final test acc %.4f, mean batch size %.1f; records in %s",
        summary["steps"], summary["samples"], summary["final_test_acc"], summary["mean_batch_size"], run_dir,
    )
    return summary["best_test_acc"]


if __name__ == "__main__":
    world = join_process_group()  # before Hydra names the run directory, so that all ranks share it
    if not world.is_main:  # rank 0 alone writes the run directory's files
        sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=disabled"]
    try:
        main()
    finally:
        leave_process_group()
