"""Train one configuration: `python src/train.py dataset=... model=... optimizer=... batch_size=...`.

Hydra composes configs/train.yaml with the chosen groups; the run directory (Hydra's output
directory) receives config.yaml, metrics.jsonl and summary.json.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from adabatch.data import DatasetUnavailable
from adabatch.training import train

log = logging.getLogger("adabatch")


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        summary = train(cfg, run_dir)
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
    main()
