"""The task registry: the one place that names the tasks.

Each entry names, as ``"module:attribute"`` strings or as the objects themselves, a task's ``Task``
class (training, evaluation, reports: ``sbts.tasks``), its runtime class (the torch-free predictor of
an exported model: ``sbts.runtime``) and its scikit-learn style estimator. The CLI, the exporters,
the summary, ``sbts.runtime.load``, ``sbts predict`` and ``sbts plot`` all look tasks up here, so a
new task is one file plus one ``register_task`` call.

This module imports nothing but the standard library and ``sbts.errors``: the runtime reads it
without pulling in torch, and nothing is imported until a task is looked up.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any

from sbts.errors import ConfigError


@dataclass
class TaskEntry:
    name: str
    task: Any  # the Task subclass, or "module:attribute"
    runtime: Any  # the RuntimeModel subclass, or "module:attribute"
    estimator: Any = None  # the estimator class, or "module:attribute" (None: the task has none)
    plot: Any = None  # plot(run_dir, output, *, start, end, **extras) of a finished run, or None
    description: str = ""


_TASKS: dict[str, TaskEntry] = {}


def register_task(name: str, *, task: Any, runtime: Any, estimator: Any = None, plot: Any = None,
                  description: str = "") -> None:
    """Register (or replace) a task under ``name``."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"a task name must be an identifier, got {name!r}")
    _TASKS[name] = TaskEntry(name, task, runtime, estimator, plot, description)


def unregister_task(name: str) -> None:
    """Remove a registered task (a plugin's, say); unknown names are an error."""
    entry(name)
    del _TASKS[name]


def task_names() -> list[str]:
    """The registered tasks, in registration order (the paper's three first)."""
    return list(_TASKS)


def entry(name: Any) -> TaskEntry:
    if name not in _TASKS:
        raise ConfigError(f"unknown task {name!r}; available: {', '.join(_TASKS)}")
    return _TASKS[name]


def _resolve(target: Any) -> Any:
    if not isinstance(target, str):
        return target
    module, _, attribute = target.partition(":")
    return getattr(import_module(module), attribute)


def task_class(name: Any) -> type:
    """The ``Task`` subclass of a registered task (imports it: needs torch)."""
    return _resolve(entry(name).task)


def runtime_class(name: Any) -> type:
    """The runtime class of a registered task (torch-free)."""
    return _resolve(entry(name).runtime)


def estimator_class(name: Any) -> type | None:
    return _resolve(entry(name).estimator)


def plot_function(name: Any):
    """The task's plot of a finished run (needs matplotlib when called)."""
    plot = _resolve(entry(name).plot)
    if plot is None:
        raise ConfigError(f"{name} runs have no plot")
    return plot


register_task("classification", task="sbts.tasks.classification:ClassificationTask",
              runtime="sbts.runtime.model:ClassifierRuntime", estimator="sbts.tasks.classification:SBTClassifier",
              description="one label per series (UEA archive or .ts files)")
register_task("anomaly", task="sbts.tasks.anomaly:AnomalyTask", runtime="sbts.runtime.model:AnomalyRuntime",
              estimator="sbts.tasks.anomaly:SBTAnomalyDetector", plot="sbts.report.anomaly_plot:plot_scores",
              description="an anomaly score per step of one long series")
register_task("forecasting", task="sbts.tasks.forecasting:ForecastTask", runtime="sbts.runtime.model:ForecastRuntime",
              estimator="sbts.tasks.forecasting:SBTForecaster", plot="sbts.report.forecast_plot:plot_forecasts",
              description="the next step of every variable of one long series")
