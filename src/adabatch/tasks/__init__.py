"""Tasks: the loss a step backpropagates and what an evaluation reports, chosen by the dataset (its
`task`: "classification" for images and labels, "next_token" for token windows).

    task = task_of(dataset)
    loss = task.loss(model(x), y)                  # summed over examples: its gradient is sum_i g_i
    totals = task.evaluation_totals(model(x), y)   # add over batches and ranks, then task.metrics(totals)
"""
from __future__ import annotations

from adabatch.tasks.base import Task
from adabatch.tasks.classification import Classification
from adabatch.tasks.next_token import NextToken

TASKS: dict[str, Task] = {task.name: task for task in (Classification(), NextToken())}


def task_of(dataset) -> Task:
    """The task a dataset declares (ArrayDataset.task)."""
    if dataset.task not in TASKS:
        raise ValueError(f"dataset {dataset.name} declares task {dataset.task!r}; the tasks are {', '.join(TASKS)}")
    return TASKS[dataset.task]


__all__ = ["TASKS", "Classification", "NextToken", "Task", "task_of"]
