"""Tasks: what the model's per-step outputs mean, how they are trained, evaluated and reported."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from sbts.errors import ConfigError

if TYPE_CHECKING:
    from sbts.tasks.runs import TrainedRun

TASK_NAMES = ("classification", "anomaly", "forecasting")  # the paper's three
LAST_STEP_TASKS = ("anomaly", "forecasting")  # tasks that read only the last step's output


def get_task(name: str) -> ModuleType:
    """The module implementing a task's ``train_run``, ``evaluate_run`` and ``load_trained``."""
    if name == "classification":
        from sbts.tasks import classification
        return classification
    if name == "anomaly":
        from sbts.tasks import anomaly
        return anomaly
    if name == "forecasting":
        from sbts.tasks import forecasting
        return forecasting
    raise ConfigError(f"unknown task {name!r}; available: {', '.join(TASK_NAMES)}")


def load_trained_run(run_dir: str | Path, checkpoint: str = "best") -> TrainedRun:
    """A saved run's trained model and inference facts, whatever its task (read from its config.json)."""
    from sbts.training.checkpoint import read_json

    config = read_json(Path(run_dir) / "config.json", "run config")
    task = config.get("task") if isinstance(config, dict) else None
    return get_task(str(task)).load_trained(run_dir, checkpoint)
