"""Torch-free inference: load an exported ``.sbts`` artifact and run it with numpy.

    from sbts.runtime import load
    model = load("model.sbts")
    model.predict(series)            # classification: class names; anomaly: 0/1 per step
    model.decision_function(series)  # anomaly: one score per step (stream() scores one step at a time)
    model.predict(history)           # forecasting: the next step of every variable

Importing this package imports neither torch nor the training code.
"""

from sbts.errors import ArtifactError
from sbts.runtime.artifact import read_artifact
from sbts.runtime.model import AnomalyRuntime, ClassifierRuntime, ForecastRuntime, RuntimeModel, load
from sbts.runtime.network import MacCounter, forward

__all__ = ["AnomalyRuntime", "ArtifactError", "ClassifierRuntime", "ForecastRuntime", "MacCounter", "RuntimeModel",
           "forward", "load", "read_artifact"]
