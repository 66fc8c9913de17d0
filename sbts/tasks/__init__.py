"""Tasks: what the model's per-step outputs mean, how they are trained, evaluated and reported."""

from types import ModuleType

from sbts.errors import ConfigError


def get_task(name: str) -> ModuleType:
    """The module implementing a task's ``train_run`` and ``evaluate_run``."""
    if name == "classification":
        from sbts.tasks import classification
        return classification
    raise ConfigError(f"unknown task {name!r}; available: classification")

