"""A loaded artifact as a predictor: raw series in, the task's predictions out (numpy only).

``load(path)`` verifies the file and returns the task's runtime class. Inputs are prepared exactly as
in training: missing values interpolated, channels scaled with the training statistics stored in the
artifact, series padded to the model's length with a padding mask.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sbts.config import ModelConfig
from sbts.data.preprocessing import ChannelScaler, fill_missing, pad_to_length
from sbts.data.windows import check_series
from sbts.errors import ArtifactError, ConfigError, DataError, SBTSError
from sbts.heads.anomaly import (FixedRule, RelativeRule, ScoreStream, channel_errors_with, check_threshold_record,
                                decision_rule, score_series_with)
from sbts.heads.forecasting import Formulation, WindowForecastStream, forecast_every_step_with, forecast_next
from sbts.heads.network import SeriesNetwork
from sbts.registry import entry, runtime_class
from sbts.runtime.artifact import INPUT_SCALER, Artifact, network_tensors, read_artifact
from sbts.runtime.inputs import read_cases, read_series, stream_rows, write_rows
from sbts.runtime.network import MacCounter, forward
from sbts.runtime.streaming import CachedForecastStream, CachedScoreStream, StepStream, numpy_shared_pass

BATCH = 256  # cases per forward call: bounds memory on long inputs
PROBE_STEPS = 2  # the load-time probe's length (step_t needs 2 steps: the last attends to the past)


def _scaler(artifact: Artifact, channels: int) -> ChannelScaler | None:
    """The stored input statistics: both or neither, finite, one per input channel, every std > 0."""
    stats = [artifact.tensors.get(name) for name in INPUT_SCALER]
    if all(s is None for s in stats):
        return None
    if any(s is None or s.shape != (channels,) or not np.isfinite(s).all() for s in stats):
        raise ArtifactError(f"{artifact.source}: the input scaler needs finite mean and std for {channels} channels")
    if not (stats[1] > 0).all():
        raise ArtifactError(f"{artifact.source}: the input scaler's std must be > 0 in every channel (it divides)")
    return ChannelScaler(*stats)


class RuntimeModel:
    """A verified artifact ready to run: the network, its input scaling and its task facts.

    A task's runtime class (named in ``sbts.registry``) adds what its outputs mean and ``predict_file``, what
    ``sbts predict`` runs."""

    last_step_only = False  # the task reads only the last step's output (the summary counts that work)
    # The task state's keys: those it must have and those it may have. A key of another task's state is refused:
    # a file relabelled as another task does not load as one.
    state_keys: frozenset[str] = frozenset()
    optional_state_keys: frozenset[str] = frozenset()

    def __init__(self, artifact: Artifact):
        self.artifact = artifact
        self.config: ModelConfig = artifact.config
        self.task: str = artifact.document["task"]
        self.task_state: dict = artifact.document.get("task_state", {})
        self._check_state_keys()
        self.tensors = network_tensors(artifact)
        # A zero probe through every layer: a file missing a layer fails here, not at the first prediction. Short
        # (PROBE_STEPS) unless the model takes whole windows only: every layer runs whatever the length.
        steps = self.config.max_len if self.config.needs_fixed_length else min(self.config.max_len, PROBE_STEPS)
        try:
            self.forward(np.zeros((1, steps, self.config.in_channels), dtype=np.float32))
        except ValueError as exc:
            raise ArtifactError(f"{artifact.source}: does not make a complete network ({exc})") from None
        self.scaler = _scaler(artifact, self.config.in_channels)

    def _check_state_keys(self) -> None:
        keys = set(self.task_state)
        missing, foreign = sorted(self.state_keys - keys), sorted(keys - self.state_keys - self.optional_state_keys)
        if missing or foreign:
            raise ArtifactError(f"{self.artifact.source}: the task state of this {self.task} model "
                                + (f"needs {missing[0]!r}" if missing else f"has no {foreign[0]!r}")
                                + f" (this one has {', '.join(map(repr, sorted(keys))) or 'no keys'})")

    def forward(self, x: np.ndarray, padding_mask: np.ndarray | None = None, *, last_step_only: bool = False,
                counter: MacCounter | None = None) -> np.ndarray:
        """The network's per-step outputs for already prepared input (B, T, in_channels)."""
        return forward(self.config, self.tensors, x, padding_mask, last_step_only=last_step_only, counter=counter)

    def prepare(self, series: Sequence[np.ndarray], where: str = "input") -> tuple[np.ndarray, np.ndarray]:
        """Raw cases (n_channels, length_i) -> scaled x (n, longest case, channels), padded, and the padding mask."""
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
        # Padded to the longest case given, not to max_len: padded steps change nothing but the work.
        return pad_to_length(scaled, max(np.shape(case)[1] for case in series))

    def predict_file(self, input_path: str, output: str | None, *, context: str | None = None,
                     proba: bool = False) -> str | None:
        """``sbts predict``: read ``input_path``, write the predictions as CSV to ``output`` (or stdout); returns
        a one-line summary for the user, if any (the CLI prints it on stderr unless ``--quiet``)."""
        raise NotImplementedError


def _check_names(artifact: Artifact, key: str, count: int, what: str) -> None:
    """The task state's ``key`` must list ``count`` names (``what``: e.g. "class names")."""
    names = artifact.document.get("task_state", {}).get(key)
    if not (isinstance(names, list) and len(names) == count and all(isinstance(n, str) for n in names)):
        raise ArtifactError(f"{artifact.source}: needs {count} {what} in {key!r}, the document has {names!r}")
    seen: set[str] = set()
    repeated = next((n for n in names if n in seen or seen.add(n)), None)  # the first name seen twice
    if repeated is not None:
        raise ArtifactError(f"{artifact.source}: the {what} in {key!r} repeat {repeated!r}")


class ClassifierRuntime(RuntimeModel):
    """Per-step logits averaged over the valid steps, as the classification task trains them."""

    state_keys = frozenset({"classes"})

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

    def predict_file(self, input_path, output, *, context=None, proba=False) -> str | None:
        """One CSV row per case: its index, prediction (and label, and class probabilities if asked); the
        summary is the accuracy when the cases have labels."""
        if context:
            raise ConfigError("--context applies to anomaly detectors and forecasters")
        cases, labels = read_cases(input_path)
        probabilities = self.predict_proba(cases, str(input_path))
        predicted = self.class_names(probabilities)
        header = ["case", "prediction"] + (["label"] if labels else []) + ([f"p_{c}" for c in self.classes] if proba
                                                                            else [])
        write_rows(header, ([i, prediction] + ([labels[i]] if labels else []) +
                            ([f"{p:.6g}" for p in probabilities[i]] if proba else [])
                            for i, prediction in enumerate(predicted)), output)
        if not labels:
            return None
        accuracy = float(np.mean([p == label for p, label in zip(predicted, labels)]))
        return f"accuracy {accuracy:.4f} on {len(labels)} labelled cases of {input_path}"


class SeriesRuntime(RuntimeModel):
    """A network over windows of one long series that outputs every channel at a window's last step."""

    last_step_only = True

    @property
    def window(self) -> int:
        return self.config.max_len

    @property
    def network(self) -> SeriesNetwork:
        """The network as the heads call it: window by window, and through the shared pass when streamable."""
        shared = numpy_shared_pass(self.config, self.tensors) if self.config.streamable else None
        return SeriesNetwork(self.last_step, shared)

    def last_step(self, windows: np.ndarray) -> np.ndarray:
        """The network's outputs (B, D) at the last step of prepared windows (B, w, D)."""
        return self.forward(windows, last_step_only=True)[:, 0]

    def _scale(self, rows: np.ndarray) -> np.ndarray:
        return rows.astype(np.float32) if self.scaler is None else self.scaler.transform_rows(rows)

    def _unscale(self, rows: np.ndarray) -> np.ndarray:
        return rows.astype(np.float64) if self.scaler is None else self.scaler.inverse_transform_rows(rows)

    @property
    def columns(self) -> list[str] | None:
        """The variables' names, when the model knows them."""
        return None

    @property
    def streamable(self) -> bool:
        """A stream costs one step per observation (else it recomputes the window); ``config.streaming_problem``
        says why not."""
        return self.config.streamable

    def stream_file(self, input_path: str, output: str | None, *, context: str | None = None,
                    on_bad_row: str = "fail", quiet: bool = False, horizon: int | None = None) -> None:
        """``sbts predict --stream``: one output line per input row as it arrives, flushed at once; unless
        ``quiet``, a note on stderr once the input is open when the model recomputes its window per row.
        ``horizon``: a forecaster's steps ahead to write (default: all it forecasts)."""
        header, line = self.stream_format(horizon)
        stream = self.stream(None if context is None else read_series(context, self.columns))
        if output is not None and input_path != "-" and Path(output).resolve() == Path(input_path).resolve():
            raise DataError(f"{output}: the output would overwrite the input rows; choose another -o")
        rows = stream_rows(input_path, self.config.in_channels, self.columns, on_bad_row)
        if not self.streamable and not quiet:
            print(f"sbts: note: this model recomputes its window for every row ({self.not_streamable_because})",
                  file=sys.stderr, flush=True)
        target = sys.stdout if output is None else open(output, "w", encoding="utf-8")
        try:
            print(",".join(header), file=target, flush=True)
            for step, (_, row) in enumerate(rows):
                print(",".join(line(step, stream.update(row))), file=target, flush=True)
        finally:
            if output is not None:
                target.close()

    def stream_format(self, horizon: int | None) -> tuple[list[str], Callable[[int, Any], list[str]]]:
        """The stream's header and its line for (step, output)."""
        if horizon is not None:
            raise ConfigError(f"--horizon applies to forecasters, not to this {self.task} model")
        return self.stream_header, self.stream_lines()

    @property
    def not_streamable_because(self) -> str:
        return self.config.streaming_problem or ""

    def _series_inputs(self, input_path: str, context: str | None, proba: bool):
        if proba:
            raise ConfigError("--proba applies to classifiers; detectors and forecasters write one row per step")
        before = None if context is None else read_series(context, self.columns)
        return read_series(input_path, self.columns), before


class AnomalyRuntime(SeriesRuntime):
    """Scores every step of a series by how badly the network reconstructs it from the window ending there
    (``sbts.heads.anomaly``); ``predict`` compares the scores with the threshold fitted in training."""

    optional_state_keys = frozenset({"threshold"})  # exported from a checkpoint: no threshold

    def __init__(self, artifact: Artifact):
        super().__init__(artifact)
        if self.config.in_channels != self.config.out_dim:
            raise ArtifactError(f"{artifact.source}: a {self.task} model outputs its input channels, but the network "
                                f"maps {self.config.in_channels} channels to {self.config.out_dim}")
        self.threshold_record = self.task_state.get("threshold")
        if "threshold" in self.task_state:
            try:
                check_threshold_record(self.threshold_record, str(artifact.source))
            except SBTSError as exc:
                raise ArtifactError(str(exc)) from None

    @property
    def threshold(self) -> float | None:
        """The threshold fitted in training, in force for the step after the training series (None when the
        artifact was exported without one); a relative threshold moves with the scores from there."""
        return None if self.threshold_record is None else float(self.threshold_record["value"])

    @property
    def threshold_method(self) -> str | None:
        return None if self.threshold_record is None else str(self.threshold_record.get("method", "fixed"))

    def decision_rule(self, threshold: float | None = None) -> FixedRule | RelativeRule | None:
        """A fresh decision rule: ``score > threshold`` when one is given, else the fitted one (None without)."""
        if threshold is not None:
            return FixedRule(threshold)
        return None if self.threshold_record is None else decision_rule(self.threshold_record)

    def decision_function(self, series: np.ndarray, context: np.ndarray | None = None, where: str = "input",
                          context_where: str = "context") -> np.ndarray:
        """One anomaly score per step of ``series`` (n_steps, n_channels); higher is more anomalous.
        ``context``: raw rows that precede the series (without it the first row stands in for them)."""
        scaled, before = self._scaled_inputs(series, context, where, context_where)
        return score_series_with(self.network, scaled, self.window, before)

    def channel_errors(self, series: np.ndarray, context: np.ndarray | None = None, where: str = "input",
                       context_where: str = "context") -> np.ndarray:
        """The squared reconstruction error of every step and channel (n_steps, n_channels), on the model's
        scaled values: which channels made a step's score (its mean over the row is ``decision_function``'s)."""
        scaled, before = self._scaled_inputs(series, context, where, context_where)
        return channel_errors_with(self.network, scaled, self.window, before)

    def _scaled_inputs(self, series: np.ndarray, context: np.ndarray | None, where: str,
                       context_where: str) -> tuple[np.ndarray, np.ndarray | None]:
        scaled = self._scale(check_series(series, self.config.in_channels, where))
        before = None if context is None else self._scale(check_series(context, self.config.in_channels,
                                                                       context_where, allow_empty=True))
        return scaled, before

    def predict(self, series: np.ndarray, context: np.ndarray | None = None, where: str = "input",
                threshold: float | None = None) -> np.ndarray:
        """1 where the score exceeds the threshold (the artifact's unless one is given), else 0. A relative
        threshold follows the series' score level from where training left it."""
        rule = self.decision_rule(threshold)
        if rule is None:
            raise DataError(f"{self.artifact.source}: this detector carries no threshold (exported from a checkpoint "
                            "without one); pass threshold= or use decision_function")
        return rule.run(self.decision_function(series, context, where))[0].astype(np.int8)

    def stream(self, context: np.ndarray | None = None) -> CachedScoreStream | ScoreStream:
        """Score observations one at a time (``update(x_t)``), the same numbers as ``decision_function``: at the
        cost of one step with per-layer caches for a streamable model (``config.streamable``), else of a window."""
        if self.streamable:
            return CachedScoreStream(StepStream(self.config, self.tensors), self._scale, context)
        return ScoreStream(self.last_step, self.window, self.config.in_channels, self._scale, context)

    @property
    def stream_header(self) -> list[str]:
        return ["step", "score"] + (["threshold", "predicted"] if self.threshold is not None else [])

    def stream_lines(self):
        """step, score and, with a threshold, the threshold and 0/1 (one rule for the whole stream)."""
        rule = self.decision_rule()

        def line(step: int, score: float) -> list[str]:
            if rule is None:
                return [str(step), f"{score:.9g}"]
            flagged, threshold = rule.step(score)
            return [str(step), f"{score:.9g}", f"{threshold:.9g}", str(int(flagged))]
        return line

    def predict_file(self, input_path, output, *, context=None, proba=False) -> str | None:
        """One CSV row per step of the series: step, score and, when the model has a threshold, the threshold
        the score was compared with and predicted (0/1); the summary counts the steps above it."""
        series, before = self._series_inputs(input_path, context, proba)
        scores = self.decision_function(series, before, str(input_path), str(context))
        rule = self.decision_rule()
        if rule is None:
            write_rows(["step", "score"], ([step, f"{score:.9g}"] for step, score in enumerate(scores)), output)
            return None
        flags, thresholds = rule.run(scores)
        rows = zip(scores, thresholds, flags)
        write_rows(self.stream_header, ([step, f"{score:.9g}", f"{threshold:.9g}", int(flag)]
                                        for step, (score, threshold, flag) in enumerate(rows)), output)
        return (f"{int(np.sum(flags))} of {len(scores)} steps of {input_path} above the threshold "
                f"({self.threshold_method}, {self.threshold:.6g} after training)")


class ForecastRuntime(SeriesRuntime):
    """Forecasts of the next ``horizon`` steps of every variable, prepared as in training
    (``sbts.heads.forecasting``); inputs and forecasts are in the data's own units, forecasts as (h, D) per
    origin."""

    state_keys = frozenset({"formulation", "columns"})

    def __init__(self, artifact: Artifact):
        super().__init__(artifact)
        recorded = self.task_state["formulation"]
        # Every field required (a missing one must not silently read as the paper's default), except the horizon
        # of files written before horizons, which forecast one step.
        needed = set(Formulation().to_dict())
        if not isinstance(recorded, dict) or set(recorded) not in (needed, needed - {"horizon"}):
            raise ArtifactError(f"{artifact.source}: bad forecast formulation {recorded!r}: it needs exactly "
                                f"{', '.join(Formulation().to_dict())}")
        try:
            self.formulation = Formulation(**recorded)
        except SBTSError as exc:
            raise ArtifactError(f"{artifact.source}: bad forecast formulation: {exc}") from None
        if self.config.out_dim != self.horizon * self.config.in_channels:
            raise ArtifactError(f"{artifact.source}: a forecaster of {self.config.in_channels} variables "
                                f"{self.horizon} step(s) ahead needs {self.horizon * self.config.in_channels} outputs; "
                                f"the model has {self.config.out_dim}")
        _check_names(artifact, "columns", self.config.in_channels, "variable names")

    @property
    def horizon(self) -> int:
        return self.formulation.horizon

    @property
    def columns(self) -> list[str]:
        return list(self.task_state["columns"])

    def predict(self, history: np.ndarray, where: str = "input", context: np.ndarray | None = None,
                context_where: str = "context") -> np.ndarray:
        """The forecasts (horizon, n_variables) of the steps after ``history`` (n_steps >= 1, n_variables), which
        ``context`` (earlier rows, if given) precedes."""
        scaled = self._scale(check_series(history, self.config.in_channels, where))
        if context is not None:
            scaled = np.concatenate([self._scale(check_series(context, self.config.in_channels, context_where,
                                                              allow_empty=True)), scaled])
        return self._unscale(forecast_next(self.last_step, scaled, self.window, self.formulation))

    def predict_every_step(self, series: np.ndarray, context: np.ndarray | None = None, where: str = "input",
                           context_where: str = "context") -> np.ndarray:
        """The forecasts (n_steps, horizon, n_variables) made at every row of ``series`` from the rows before it:
        row i holds those of rows i, ..., i + horizon - 1 (``context``: rows that precede the series; without it
        the first row has no forecast (NaN) and stands in for the missing history of the next ``window - 2``
        rows)."""
        scaled = self._scale(check_series(series, self.config.in_channels, where))
        before = None if context is None else self._scale(check_series(context, self.config.in_channels,
                                                                       context_where, allow_empty=True))
        return self._unscale(forecast_every_step_with(self.network, scaled, self.window, self.formulation, before))

    @property
    def streamable(self) -> bool:
        return super().streamable and self.formulation.input_norm == "none"

    @property
    def not_streamable_because(self) -> str:
        return super().not_streamable_because or f"input_norm {self.formulation.input_norm} scales each window alone"

    def steps_written(self, horizon: int | None) -> int:
        """The steps ahead a file gets: ``horizon`` (1 to the model's), or all the model forecasts."""
        if horizon is None:
            return self.horizon
        if isinstance(horizon, bool) or not isinstance(horizon, int) or not 1 <= horizon <= self.horizon:
            raise ConfigError(f"--horizon {horizon!r}: this forecaster forecasts 1 to {self.horizon} step(s) ahead")
        return horizon

    def ahead_columns(self, steps: int, one_step_suffix: str = "") -> list[str]:
        """Columns of forecasts ``steps`` ahead, step ahead first: ``<name>+<k>`` (one step: ``<name>`` and the
        suffix)."""
        if steps == 1:
            return [f"{name}{one_step_suffix}" for name in self.columns]
        return [f"{name}+{k}" for k in range(1, steps + 1) for name in self.columns]

    def stream_format(self, horizon: int | None) -> tuple[list[str], Callable[[int, Any], list[str]]]:
        """step, then the forecasts of the steps after it: ``<name>_next`` for one step ahead, ``<name>+<k>`` for
        k = 1 .. ``horizon``."""
        steps = self.steps_written(horizon)
        return (["step"] + self.ahead_columns(steps, "_next"),
                lambda step, forecasts: [str(step)] + [f"{v:.9g}" for v in forecasts[:steps].ravel()])

    def stream(self, context: np.ndarray | None = None) -> CachedForecastStream | WindowForecastStream:
        """Forecast one observation at a time: ``update(x_t)`` is the forecasts (horizon, D) of steps t + 1, ...,
        the same numbers as ``predict`` on the stream so far; one step per observation when ``streamable``."""
        if self.streamable:
            return CachedForecastStream(StepStream(self.config, self.tensors), self.formulation, self._scale,
                                        self._unscale, context)
        return WindowForecastStream(self.last_step, self.window, self.config.in_channels, self.formulation,
                                    self._scale, self._unscale, context)

    def predict_file(self, input_path, output, *, context=None, proba=False, horizon=None) -> str | None:
        """One CSV row per step s of the series and one more, each made from the rows before s: ``step``, then
        each variable's forecast of step s (one step ahead: ``<name>``) or of steps s, ..., s + k - 1
        (``<name>+1`` .. ``<name>+k``, k = ``horizon``, default the model's); the last row (step n) forecasts the
        steps after the series. Without context the first step has no history and its cells are empty."""
        steps = self.steps_written(horizon)
        series, before = self._series_inputs(input_path, context, proba)
        every = self.predict_every_step(series, before, str(input_path), str(context))
        forecasts = np.concatenate([every, self.predict(series, str(input_path), before, str(context))[None]])
        rows = forecasts[:, :steps].reshape(len(forecasts), -1)
        write_rows(["step"] + self.ahead_columns(steps), ([step] + ["" if np.isnan(v) else f"{v:.9g}" for v in row]
                                                          for step, row in enumerate(rows)), output)
        return None


def load(path: str | Path, *, key: bytes | None = None,
         require_signature: bool | None = None) -> RuntimeModel:
    """Load and verify an ``.sbts`` artifact; returns the runtime of its task (``sbts.registry``). ``key`` (default
    ``$SBTS_SIGNING_KEY``) verifies a signed file; ``require_signature`` (default ``$SBTS_REQUIRE_SIGNATURE``)
    refuses one the key does not verify."""
    artifact = read_artifact(path, key=key, require_signature=require_signature)
    task = artifact.document.get("task")
    try:
        entry(task)
    except ConfigError:
        raise ArtifactError(f"{path}: task {task!r} has no runtime in this sbts") from None
    return runtime_class(task)(artifact)
