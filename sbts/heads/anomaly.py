"""Anomaly scores from a network that reconstructs the last step of each window (numpy only).

The score of step t is the mean squared error, over the channels, between the scaled observation at t
and the network's reconstruction of it from the window ending at t (paper-spec §1.3); ``channel_errors`` keeps
the squared error of each channel, which says which channels made a step's score. Every step of a
series gets exactly one score; the windows of the first ``window - 1`` steps take their earlier rows
from ``context`` (see ``sbts.data.windows``). ``ScoreStream`` gives the same scores one observation at
a time. The torch task and the exported runtime both score through this module, with their own
``reconstruct_last``. ``decision_rule`` turns a fitted threshold's record into 0/1 decisions, step by step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from sbts.data.windows import check_series, history_for, windows_ending_at_every_step
from sbts.errors import SBTSError
from sbts.heads.network import SeriesNetwork

ReconstructLast = Callable[[np.ndarray], np.ndarray]  # windows (B, w, D) float32 -> last-step reconstructions (B, D)

SCORE_BATCH = 256  # windows per forward call: bounds memory on long series


def window_errors(windows: np.ndarray, reconstruct_last: ReconstructLast) -> np.ndarray:
    """Squared reconstruction error of each window's last step, per channel (B, D), in float64."""
    reconstruction = np.asarray(reconstruct_last(windows), dtype=np.float64)
    return np.square(reconstruction - windows[:, -1].astype(np.float64))


def _errors_by_chunk(reconstruct_last: ReconstructLast, scaled: np.ndarray, window: int,
                     context: np.ndarray | None, batch_size: int):
    """(first step, per-channel squared errors) of ``batch_size`` windows at a time: memory stays bounded."""
    views = windows_ending_at_every_step(history_for(scaled, window, context), window)
    for start in range(0, len(views), batch_size):
        chunk = np.array(views[start:start + batch_size], dtype=np.float32, order="C")  # a writable copy
        yield start, window_errors(chunk, reconstruct_last)


def channel_errors(reconstruct_last: ReconstructLast, scaled: np.ndarray, window: int,
                   context: np.ndarray | None = None, batch_size: int = SCORE_BATCH) -> np.ndarray:
    """Squared reconstruction error per step and channel (n_steps, D) of ``scaled`` (n_steps, D); ``context``:
    scaled rows that precede it, if any. A step's score is the mean of its row."""
    errors = np.empty(scaled.shape, dtype=np.float64)
    for start, chunk_errors in _errors_by_chunk(reconstruct_last, scaled, window, context, batch_size):
        errors[start:start + len(chunk_errors)] = chunk_errors
    return errors


def score_series(reconstruct_last: ReconstructLast, scaled: np.ndarray, window: int,
                 context: np.ndarray | None = None, batch_size: int = SCORE_BATCH) -> np.ndarray:
    """One score per step of ``scaled`` (n_steps, D); ``context``: scaled rows that precede it, if any."""
    scores = np.empty(len(scaled), dtype=np.float64)
    for start, chunk_errors in _errors_by_chunk(reconstruct_last, scaled, window, context, batch_size):
        scores[start:start + len(chunk_errors)] = chunk_errors.mean(axis=1)
    return scores


def channel_errors_with(network: SeriesNetwork, scaled: np.ndarray, window: int,
                        context: np.ndarray | None = None) -> np.ndarray:
    """``channel_errors``, through the network's shared pass when it has one (the same numbers, one pass over the
    rows), else window by window."""
    if network.shared is None:
        return channel_errors(network.last_step, scaled, window, context)
    history = np.ascontiguousarray(history_for(scaled, window, context), dtype=np.float32)
    reconstruction = np.asarray(network.shared(history, False), dtype=np.float64)
    return np.square(reconstruction - history[window - 1:].astype(np.float64))


def score_series_with(network: SeriesNetwork, scaled: np.ndarray, window: int,
                      context: np.ndarray | None = None) -> np.ndarray:
    """One score per step (``score_series``), through the shared pass when the network has one."""
    if network.shared is None:
        return score_series(network.last_step, scaled, window, context)
    return channel_errors_with(network, scaled, window, context).mean(axis=1)


class ScoreStream:
    """Scores observations one at a time: ``update(x_t)`` returns the score of step t, equal to the score
    ``score_series`` gives that step when run on the whole stream with the same context.

    ``scale`` maps raw rows (n, D) to the model's scaled rows; ``context`` holds raw rows that preceded
    the stream (None: the first observation stands in for the steps before it).
    """

    def __init__(self, reconstruct_last: ReconstructLast, window: int, n_channels: int,
                 scale: Callable[[np.ndarray], np.ndarray], context: np.ndarray | None = None):
        self.reconstruct_last, self.window, self.n_channels, self.scale = reconstruct_last, window, n_channels, scale
        self.recent: np.ndarray | None = None  # the last window - 1 scaled rows
        if context is not None and len(context):
            self.recent = scale(check_series(context, n_channels, "context"))[-(window - 1):] if window > 1 else None
        self.steps = 0

    def update(self, observation: np.ndarray) -> float:
        """The score of one new observation (n_channels values)."""
        row = self.scale(check_series(np.reshape(observation, (1, -1)), self.n_channels,
                                      f"observation {self.steps}"))
        history = history_for(row, self.window, self.recent)
        window = np.ascontiguousarray(history[None, -self.window:], dtype=np.float32)
        self.recent = history[-(self.window - 1):] if self.window > 1 else None
        self.steps += 1
        return float(window_errors(window, self.reconstruct_last)[0].mean())

    def update_many(self, observations: np.ndarray) -> np.ndarray:
        """Scores of several new observations (n, n_channels), in order, one update each."""
        return np.array([self.update(row) for row in check_series(observations, self.n_channels, "observations")])


class FixedRule:
    """``score > value`` at every step."""

    def __init__(self, value: float) -> None:
        self.value = float(value)

    @property
    def threshold(self) -> float:
        return self.value

    def step(self, score: float) -> tuple[bool, float]:
        """(is_anomaly, threshold the score was compared with)."""
        return float(score) > self.value, self.value

    def run(self, scores: Any) -> tuple[np.ndarray, np.ndarray]:
        """(flags, thresholds) of a sequence of scores."""
        stream = np.asarray(scores, dtype=np.float64)
        return stream > self.value, np.full(stream.shape, self.value)


class RelativeRule:
    """Flags a score above ``exp(level + margin) - log_floor``, where ``level`` is the exponential moving average
    (weight 1/span) of ``log(score + log_floor)`` over the steps before (``sbts.metrics.thresholds.
    relative_threshold`` fits it). Every step moves the level, flagged ones included: a lasting shift of the score
    level is followed within about ``span`` steps, and so is an anomaly longer than that (the price of following
    drift without labels)."""

    def __init__(self, level: float, margin: float, span: int, log_floor: float) -> None:
        self.level, self.margin, self.log_floor = float(level), float(margin), float(log_floor)
        self.weight = 1.0 / span

    @property
    def threshold(self) -> float:
        """The threshold the next score is compared with."""
        return math.exp(self.level + self.margin) - self.log_floor

    def step(self, score: float) -> tuple[bool, float]:
        """(is_anomaly, threshold the score was compared with); then the level moves towards the score."""
        threshold = self.threshold
        self.level += self.weight * (math.log(max(float(score), 0.0) + self.log_floor) - self.level)
        return float(score) > threshold, threshold

    def run(self, scores: Any) -> tuple[np.ndarray, np.ndarray]:
        """(flags, thresholds) of a sequence of scores, one ``step`` each."""
        stream = np.asarray(scores, dtype=np.float64)
        flags, thresholds = np.zeros(stream.shape, dtype=bool), np.empty(stream.shape)
        for index, score in enumerate(stream):
            flags[index], thresholds[index] = self.step(score)
        return flags, thresholds


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# What a fitted threshold's record (Threshold.to_dict) holds, each as its type. An exported model's record needs
# the value and the method (without it a relative threshold would read as a fixed one); the rest describe it.
THRESHOLD_RECORD_FIELDS = {"value": (int, float), "method": str, "fitted_on": str, "uses_test_data": bool,
                           "parameters": dict, "description": str}
THRESHOLD_RECORD_REQUIRED = ("value", "method")


def check_threshold_record(record: Any, where: str) -> None:
    """An artifact's threshold record: a mapping with the required fields, no unknown one, each of its type
    (where a run may keep a value alone, a garbled record in an exported model is refused, never half read)."""
    if not isinstance(record, dict) or not set(THRESHOLD_RECORD_REQUIRED) <= set(record) \
            or not set(record) <= set(THRESHOLD_RECORD_FIELDS):
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise SBTSError(f"{where}: the threshold record needs {', '.join(THRESHOLD_RECORD_REQUIRED)} and may have "
                        f"{', '.join(THRESHOLD_RECORD_FIELDS)}; got {keys}")
    for key, value in record.items():
        kind = THRESHOLD_RECORD_FIELDS[key]
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise SBTSError(f"{where}: threshold {key} {value!r} is not a {getattr(kind, '__name__', 'number')}")
    if not record["method"].strip():
        raise SBTSError(f"{where}: the threshold record must name its method")
    decision_rule(record, where)


def decision_rule(record: Any, where: str = "threshold") -> FixedRule | RelativeRule:
    """A fresh rule from a fitted threshold's record (``Threshold.to_dict()``: a run's or an artifact's), for the
    steps that follow its reference scores. A record of the value alone is a fixed threshold."""
    if not isinstance(record, dict) or not _finite_number(record.get("value")):
        value = record.get("value") if isinstance(record, dict) else record
        raise SBTSError(f"{where}: the anomaly threshold must be a finite number, got {value!r}")
    if record.get("method") != "relative":
        return FixedRule(record["value"])
    p = record.get("parameters")
    if not isinstance(p, dict) or not all(_finite_number(p.get(k)) for k in ("level", "margin", "log_floor")) \
            or not p["log_floor"] > 0 or isinstance(p.get("span"), bool) or not isinstance(p.get("span"), int) \
            or p["span"] < 1:
        raise SBTSError(f"{where}: a relative threshold needs finite level and margin, a positive log_floor and a "
                        "positive whole span")
    return RelativeRule(p["level"], p["margin"], p["span"], p["log_floor"])
