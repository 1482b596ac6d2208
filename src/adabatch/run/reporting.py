"""Where a run's records go: its own files (the source of truth), W&B if asked, and the console."""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..tasks import Task
from .progress import Progress
from .records import RunRecords


class Reporter:
    """`writes=False` (data-parallel ranks other than 0) keeps the summary and writes nothing.
    `resume` (a checkpoint's reporter state) continues the records where the checkpoint left them.
    `normalization`: what the model normalizes with (models.normalization_of), for the summary. `task`:
    what the evaluations report (`test_<task.metric>`) and which of its values is best."""

    def __init__(
        self, cfg: DictConfig, run_dir: Path, normalization: str, task: Task, writes: bool = True,
        resume: dict | None = None,
    ) -> None:
        config = OmegaConf.to_container(cfg, resolve=True)
        resume = resume or {}
        self.records = self.progress = self.wandb = None
        if writes:
            self.records = RunRecords(run_dir, resume_at=resume.get("metrics_bytes"))
            if not resume:
                self.records.write_config(config)
            self.progress = Progress(cfg.train.samples, every_s=cfg.train.progress_every_s)
        if writes and cfg.logger.name == "wandb":
            from .wandb_sink import WandbSink

            self.wandb = WandbSink(cfg.logger, config, run_dir, name=run_dir.name, run_id=resume.get("wandb_id"))
        self.log_every = cfg.train.log_every
        self.norm_policy = normalization
        self.task = task
        self.last_train: dict[str, Any] | None = resume.get("last_train")
        self.unrecorded_train: dict[str, Any] | None = resume.get("unrecorded_train")  # the last step, if skipped
        self.evals: list[dict[str, Any]] = resume.get("evals", [])

    def state_dict(self) -> dict[str, Any]:
        return {
            "metrics_bytes": self.records.metrics_position() if self.records is not None else None,
            "last_train": self.last_train,
            "unrecorded_train": self.unrecorded_train,
            "evals": self.evals,
            "wandb_id": self.wandb.run.id if self.wandb is not None else None,
        }

    def _emit(self, record: dict[str, Any]) -> None:
        if self.records is not None:
            self.records.append(record)
        if self.wandb is not None:
            self.wandb.log(record)

    def training(self, **fields: Any) -> None:
        record = {"kind": "train", **fields}
        previous, self.last_train = self.last_train, record
        if record.get("tested") or record["step"] % self.log_every == 0 or self.changes_size(record, previous):
            self._emit(record)
            self.unrecorded_train = None
        else:
            self.unrecorded_train = record
        if self.progress is not None:
            self.progress.update(record)

    @staticmethod
    def changes_size(record: dict[str, Any], previous: dict[str, Any] | None) -> bool:
        """Whether `record` is the first step, the first at its batch size or the last before another: always
        on record (with every tested step), so that a run's batch sizes, and the samples before each size
        (analysis.tables.samples_before_the_cap), are exact whatever train.log_every."""
        return (previous is None or record["batch_size"] != previous["batch_size"]
                or record["next_batch_size"] != record["batch_size"])

    def note(self, message: str) -> None:
        """A line for the log (and the console), not for the records."""
        if self.progress is not None:
            self.progress.note(message)

    def evaluation(self, **fields: Any) -> None:
        record = {"kind": "eval", **fields}
        self.evals.append(record)
        self._emit(record)
        if self.progress is not None:
            metric = self.task.metric
            self.progress.note(
                f"eval at step {record['step']} ({record['samples']} samples): "
                f"test loss {record['test_loss']:.4f}, test {metric} {record[f'test_{metric}']:.4f}"
            )

    def finish(
        self, *, status: str, steps: int, samples: int, model: torch.nn.Module | None, **fields: Any
    ) -> dict[str, Any]:
        """Write model.pt (the final weights, unless `model` is None), summary.json (and the W&B
        summary); return the summary."""
        if self.unrecorded_train is not None:
            self._emit(self.unrecorded_train)  # the last step is always on record
        final = self.evals[-1] if self.evals else {}
        metric = f"test_{self.task.metric}"  # classification: test_acc
        summary = {
            "status": status,
            "steps": steps,
            "samples": samples,
            **fields,
            "final_test_loss": final.get("test_loss"),
            f"final_{metric}": final.get(metric),
            f"best_{metric}": self.task.best([e[metric] for e in self.evals]),
            "final_train_loss": final.get("train_eval_loss"),
            "best_train_loss": min((e["train_eval_loss"] for e in self.evals), default=None),
            **self.validation_summary(final),
            "final_batch_size": self.last_train["batch_size"] if self.last_train else None,
            "mean_batch_size": samples / steps if steps else None,
            "norm_policy": self.norm_policy,
            "torch": torch.__version__,
            "python": platform.python_version(),
        }
        if self.records is not None:
            if model is not None:
                self.records.write_model(model.state_dict())
            self.records.write_summary(summary)
        if self.wandb is not None:
            self.wandb.set_summary(summary)
        self.close(exit_code=0)
        return summary

    def validation_summary(self, final: dict[str, Any]) -> dict[str, Any]:
        """The validation split's final and best metric (accuracy, perplexity) and final loss; {} for a run
        without one."""
        metric = f"validation_{self.task.metric}"
        if metric not in final:
            return {}
        return {
            "final_validation_loss": final["validation_loss"],
            f"final_{metric}": final[metric],
            f"best_{metric}": self.task.best([e[metric] for e in self.evals if metric in e]),
        }

    def close(self, exit_code: int = 0) -> None:
        """Close the records (without a summary when the run stops early: it will be resumed)."""
        if self.records is not None:
            self.records.close()
            self.progress.close()
        if self.wandb is not None:
            self.wandb.finish(exit_code)
