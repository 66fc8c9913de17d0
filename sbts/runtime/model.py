"""A loaded artifact as a predictor: raw series in, the task's predictions out (numpy only).

``load(path)`` verifies the file and returns the task's runtime class. Inputs are prepared exactly as
in training: missing values interpolated, channels scaled with the training statistics stored in the
artifact, series padded to the model's length with a padding mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sbts.config import ModelConfig
from sbts.data.preprocessing import ChannelScaler, fill_missing, pad_to_length
from sbts.errors import ArtifactError, DataError, SBTSError
from sbts.runtime.anomaly import ScoreStream, check_series, score_series
from sbts.runtime.artifact import Artifact, network_tensors, read_artifact
from sbts.runtime.forecasting import Formulation, forecast_every_step, forecast_next
from sbts.runtime.network import MacCounter, forward

BATCH = 256  # cases per forward call: bounds memory on long inputs


def _scaler(artifact: Artifact, channels: int) -> ChannelScaler | None:
    """The stored input statistics: both or neither, finite, one per input channel."""
    stats = [artifact.tensors.get(f"input_scaler.{key}") for key in ("mean", "std")]
    if all(s is None for s in stats):
        return None
    if any(s is None or s.shape != (channels,) or not np.isfinite(s).all() for s in stats):
        raise ArtifactError(f"{artifact.source}: the input scaler needs finite mean and std for {channels} channels")
    return ChannelScaler(*stats)


class RuntimeModel:
    """A verified artifact ready to run: the network, its input scaling and its task facts."""

    def __init__(self, artifact: Artifact):
        self.artifact = artifact
        self.config: ModelConfig = artifact.config
        self.task: str = artifact.document["task"]
        self.task_state: dict = artifact.document.get("task_state", {})
        self.tensors = network_tensors(artifact)
        try:  # a zero probe through every layer: a file missing a layer fails here, not at the first prediction
            self.forward(np.zeros((1, self.config.max_len, self.config.in_channels), dtype=np.float32))
        except ValueError as exc:
            raise ArtifactError(f"{artifact.source}: does not make a complete network ({exc})") from None
        self.scaler = _scaler(artifact, self.config.in_channels)

    def forward(self, x: np.ndarray, padding_mask: np.ndarray | None = None, *, last_step_only: bool = False,
                counter: MacCounter | None = None) -> np.ndarray:
        """The network's per-step outputs for already prepared input (B, T, in_channels)."""
        return forward(self.config, self.tensors, x, padding_mask, last_step_only=last_step_only, counter=counter)

    def prepare(self, series: Sequence[np.ndarray], where: str = "input") -> tuple[np.ndarray, np.ndarray]:
        """Raw cases (n_channels, length_i) -> scaled, padded x (n, max_len, channels) and padding mask."""
        series = list(series)
        if not series:
            raise DataError(f"{where}: no cases to predict")
        for i, case in enumerate(series):
            if np.ndim(case) != 2 or np.shape(case)[0] != self.config.in_channels:
                raise DataError(f"{where}: case {i} has shape {np.shape(case)}; the model takes "
                                f"({self.config.in_channels} channels, length)")
            if np.shape(case)[1] < 1:
                raise DataError(f"{where}: case {i} has no time steps")
            if np.shape(case)[1] > self.config.max_len:
                raise DataError(f"{where}: case {i} has {np.shape(case)[1]} steps; the model takes at most "
                                f"{self.config.max_len}")
            if self.config.needs_fixed_length and np.shape(case)[1] != self.config.max_len:
                raise DataError(f"{where}: case {i} has {np.shape(case)[1]} steps; this model takes exactly "
                                f"{self.config.max_len}")
        filled = fill_missing(series, where)
        scaled = self.scaler.transform(filled) if self.scaler is not None else [c.astype(np.float32) for c in filled]
        return pad_to_length(scaled, self.config.max_len)


def _check_names(artifact: Artifact, key: str, count: int, what: str) -> None:
    """The task state's ``key`` must list ``count`` names (``what``: e.g. "class names")."""
    names = artifact.document.get("task_state", {}).get(key)
    if not (isinstance(names, list) and len(names) == count and all(isinstance(n, str) for n in names)):
        raise ArtifactError(f"{artifact.source}: needs {count} {what} in {key!r}, the document has {names!r}")


class ClassifierRuntime(RuntimeModel):
    """Per-step logits averaged over the valid steps, as the classification task trains them."""

    def __init__(self, artifact: Artifact):
        super().__init__(artifact)
        _check_names(artifact, "classes", self.config.out_dim, "class names")

    @property
    def classes(self) -> list[str]:
        return list(self.task_state["classes"])

    def decision_function(self, series: Sequence[np.ndarray], where: str = "input") -> np.ndarray:
        """Logits (n_cases, n_classes)."""
        x, padding = self.prepare(series, where)
        out = []
        for start in range(0, len(x), BATCH):
            xb, pb = x[start:start + BATCH], padding[start:start + BATCH]
            per_step = self.forward(xb, pb if pb.any() else None)
            valid = (~pb)[..., None].astype(np.float32)
            out.append((per_step * valid).sum(1) / valid.sum(1))
        return np.concatenate(out)

    def predict_proba(self, series: Sequence[np.ndarray], where: str = "input") -> np.ndarray:
        logits = self.decision_function(series, where)
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def predict(self, series: Sequence[np.ndarray], where: str = "input") -> np.ndarray:
        """Class names, one per case."""
        return self.class_names(self.decision_function(series, where))

    def class_names(self, scores: np.ndarray) -> np.ndarray:
        """The class with the highest score (logit or probability) of each row."""
        return np.asarray(self.classes, dtype=object)[scores.argmax(1)]


class SeriesRuntime(RuntimeModel):
    """A network over windows of one long series that outputs every channel at a window's last step."""

    def __init__(self, artifact: Artifact):
        super().__init__(artifact)
        if self.config.in_channels != self.config.out_dim:
            raise ArtifactError(f"{artifact.source}: a {self.task} model outputs its input channels, but the network "
                                f"maps {self.config.in_channels} channels to {self.config.out_dim}")

    @property
    def window(self) -> int:
        return self.config.max_len

    def last_step(self, windows: np.ndarray) -> np.ndarray:
        """The network's outputs (B, D) at the last step of prepared windows (B, w, D)."""
        return self.forward(windows, last_step_only=True)[:, 0]

    def _scale(self, rows: np.ndarray) -> np.ndarray:
        return rows.astype(np.float32) if self.scaler is None else self.scaler.transform_rows(rows)

    def _unscale(self, rows: np.ndarray) -> np.ndarray:
        return rows.astype(np.float64) if self.scaler is None else self.scaler.inverse_transform_rows(rows)


class AnomalyRuntime(SeriesRuntime):
    """Scores every step of a series by how badly the network reconstructs it from the window ending there
    (``sbts.runtime.anomaly``); ``predict`` compares the scores with the threshold fitted in training."""

    def __init__(self, artifact: Artifact):
        super().__init__(artifact)
        threshold = self.task_state.get("threshold")
        value = threshold.get("value") if isinstance(threshold, dict) else None
        if threshold is not None and not (isinstance(value, (int, float)) and np.isfinite(value)):
            raise ArtifactError(f"{artifact.source}: the anomaly threshold must be a finite number, got {value!r}")

    @property
    def threshold(self) -> float | None:
        """The threshold fitted in training (None when the artifact was exported without one)."""
        threshold = self.task_state.get("threshold")
        return None if threshold is None else float(threshold["value"])

    def decision_function(self, series: np.ndarray, context: np.ndarray | None = None, where: str = "input",
                          context_where: str = "context") -> np.ndarray:
        """One anomaly score per step of ``series`` (n_steps, n_channels); higher is more anomalous.
        ``context``: raw rows that precede the series (without it the first row stands in for them)."""
        scaled = self._scale(check_series(series, self.config.in_channels, where))
        before = None if context is None else self._scale(check_series(context, self.config.in_channels,
                                                                       context_where, allow_empty=True))
        return score_series(self.last_step, scaled, self.window, before)

    def predict(self, series: np.ndarray, context: np.ndarray | None = None, where: str = "input",
                threshold: float | None = None) -> np.ndarray:
        """1 where the score exceeds the threshold (the artifact's unless one is given), else 0."""
        threshold = self.threshold if threshold is None else threshold
        if threshold is None:
            raise DataError(f"{self.artifact.source}: this detector carries no threshold (exported from a checkpoint "
                            "without one); pass threshold= or use decision_function")
        return (self.decision_function(series, context, where) > threshold).astype(np.int8)

    def stream(self, context: np.ndarray | None = None) -> ScoreStream:
        """Score observations one at a time (``update(x_t)``), the same numbers as ``decision_function``."""
        return ScoreStream(self.last_step, self.window, self.config.in_channels, self._scale, context)


class ForecastRuntime(SeriesRuntime):
    """One-step-ahead forecasts of every variable, prepared as in training (``sbts.runtime.forecasting``);
    inputs and forecasts are in the data's own units."""

    def __init__(self, artifact: Artifact):
        super().__init__(artifact)
        try:  # required: a missing one must not silently read as the paper's
            self.formulation = Formulation(**self.task_state["formulation"])
        except (KeyError, TypeError, SBTSError) as exc:
            raise ArtifactError(f"{artifact.source}: bad forecast formulation: {exc}") from None
        _check_names(artifact, "columns", self.config.in_channels, "variable names")

    @property
    def columns(self) -> list[str]:
        return list(self.task_state["columns"])

    def predict(self, history: np.ndarray, where: str = "input", context: np.ndarray | None = None,
                context_where: str = "context") -> np.ndarray:
        """The forecast (n_variables,) of the step after ``history`` (n_steps >= 1, n_variables), which
        ``context`` (earlier rows, if given) precedes."""
        scaled = self._scale(check_series(history, self.config.in_channels, where))
        if context is not None:
            scaled = np.concatenate([self._scale(check_series(context, self.config.in_channels, context_where,
                                                              allow_empty=True)), scaled])
        return self._unscale(forecast_next(self.last_step, scaled, self.window, self.formulation)[None])[0]

    def predict_every_step(self, series: np.ndarray, context: np.ndarray | None = None, where: str = "input",
                           context_where: str = "context") -> np.ndarray:
        """The one-step-ahead forecast (n_steps, n_variables) of every row of ``series`` from the rows before it
        (``context``: rows that precede the series; without it the first row has no forecast (NaN) and stands in
        for the missing history of the next ``window - 2`` rows)."""
        scaled = self._scale(check_series(series, self.config.in_channels, where))
        before = None if context is None else self._scale(check_series(context, self.config.in_channels,
                                                                       context_where, allow_empty=True))
        return self._unscale(forecast_every_step(self.last_step, scaled, self.window, self.formulation, before))


RUNTIMES: dict[str, type[RuntimeModel]] = {"classification": ClassifierRuntime, "anomaly": AnomalyRuntime,
                                           "forecasting": ForecastRuntime}


def load(path: str | Path) -> RuntimeModel:
    """Load and verify an ``.sbts`` artifact; returns the runtime for its task."""
    artifact = read_artifact(path)
    task = artifact.document.get("task")
    if task not in RUNTIMES:
        raise ArtifactError(f"{path}: task {task!r} has no runtime in this sbts (known: {', '.join(RUNTIMES)})")
    return RUNTIMES[task](artifact)
