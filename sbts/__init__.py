"""sbts: Sparse Binary Transformers for multivariate time series.

The top-level names are imported lazily, so that ``import sbts.<light module>`` (e.g. a numpy-only
inference path) does not pull in torch or the training stack.
"""

from importlib import import_module
from typing import Any

__version__ = "0.2.0"

_LAZY = {
    "ModelConfig": "sbts.config",
    "RunConfig": "sbts.config",
    "TrainConfig": "sbts.config",
    "SBTSError": "sbts.errors",
    "create_model": "sbts.models",
    "list_models": "sbts.models",
    "SBTClassifier": "sbts.tasks.classification",
    "SBTAnomalyDetector": "sbts.tasks.anomaly",
    "SBTForecaster": "sbts.tasks.forecasting",
    "register_task": "sbts.registry",
    "task_names": "sbts.registry",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sbts' has no attribute {name!r}")
