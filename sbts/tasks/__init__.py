"""Tasks: what the model's per-step outputs mean, how they are trained, evaluated and reported.

Each task is a ``sbts.tasks.base.Task`` subclass in its own module, named in ``sbts.registry``.
"""

from __future__ import annotations

from pathlib import Path

from sbts.registry import task_class, task_names
from sbts.tasks.base import Task
from sbts.tasks.runs import TrainedRun, read_run_config


def get_task(name: str) -> Task:
    """The registered task ``name``, ready to train, evaluate, reload and export runs."""
    return task_class(name)()


def task_of_run(run_dir: str | Path) -> Task:
    """The task of a saved run (read from its config.json)."""
    return get_task(read_run_config(run_dir).task)


def load_trained_run(run_dir: str | Path, checkpoint: str = "best") -> TrainedRun:
    """A saved run's trained model and inference facts, whatever its task."""
    return task_of_run(run_dir).load_trained(run_dir, checkpoint)


__all__ = ["Task", "get_task", "load_trained_run", "task_names", "task_of_run"]
