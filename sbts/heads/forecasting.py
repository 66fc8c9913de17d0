"""Forecasts of the next ``h`` steps from a network that fills in a window's last step (numpy only).

A forecast made at *origin* t reads the window of ``w`` rows ending at t: the ``w - 1`` observed rows
before t and a target slot at t whose input is zeroed, so no value being forecast is ever visible
(paper-spec §1.4). The network's output at the last step holds ``h x D`` values, the forecasts of
steps t, t + 1, ..., t + h - 1 (direct multi-output: one pass per origin, no forecast fed back as an
input); ``h = 1`` is the paper's single-step model. Forecasts come as (origins, h, D). The output
becomes the forecast through the run's *formulation*:

* ``target="value"`` (the paper): the output is the forecast itself.
* ``target="change"``: the output is the change from the last observed row (for every step ahead),
  so an output of zero is persistence (repeat the last value), the baseline that short training
  struggles to beat.
* ``input_norm="window"``: each window is centred and scaled by its own observed rows' per-channel
  mean and standard deviation before the network, and the forecast mapped back, which takes level
  shifts between training and test periods out of what the network must learn.

Both the torch task and the exported runtime build their inputs here, so they cannot drift apart.
Series are scaled rows ``(n_steps, n_channels)``; the first forecasts of a series take their earlier
rows from ``context`` (see ``sbts.data.windows``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sbts.data.windows import check_series, history_for, windows_ending_at_every_step
from sbts.errors import ConfigError, DataError
from sbts.heads.network import SeriesNetwork

TARGETS = ("value", "change")
INPUT_NORMS = ("none", "window")
WINDOW_NORM_EPS = 1e-5  # added to each window's variance: a flat window is not divided by zero
FORECAST_BATCH = 256  # windows per forward call: bounds memory on long series
MAX_HORIZON = 2**12  # steps ahead; the head's h x D outputs stay within the model's output limit

ForwardLast = Callable[[np.ndarray], np.ndarray]  # prepared windows (B, w, D) float32 -> last-step outputs (B, h*D)


@dataclass(frozen=True)
class Formulation:
    """What the network's last-step output means (see the module docstring)."""

    target: str = "value"
    input_norm: str = "none"
    horizon: int = 1  # steps ahead forecast from each origin

    def __post_init__(self) -> None:
        if (not isinstance(self.horizon, int) or isinstance(self.horizon, bool)
                or not 1 <= self.horizon <= MAX_HORIZON):
            raise ConfigError(f"horizon must be a whole number of steps from 1 to {MAX_HORIZON}; got {self.horizon!r}")
        if self.target not in TARGETS:
            raise ConfigError(f"target must be one of {', '.join(TARGETS)}; got {self.target!r}")
        if self.input_norm not in INPUT_NORMS:
            raise ConfigError(f"input_norm must be one of {', '.join(INPUT_NORMS)}; got {self.input_norm!r}")

    @property
    def is_paper(self) -> bool:
        return self.target == "value" and self.input_norm == "none"

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "input_norm": self.input_norm, "horizon": self.horizon}

    def steps_ahead(self, output: np.ndarray) -> np.ndarray:
        """Last-step outputs (B, h*D) as (B, h, D): step ahead first, then variable."""
        return output.reshape(len(output), self.horizon, -1)


@dataclass
class PreparedWindows:
    """Network input and the map back from its output: ``forecast = (base + output) * scale + offset`` for every
    step ahead (``base``, ``scale`` and ``offset`` are per window and variable)."""

    x: np.ndarray  # (B, w, D) float32, the target slot zeroed
    base: np.ndarray  # (B, D) float32
    scale: np.ndarray  # (B, D) float32
    offset: np.ndarray  # (B, D) float32

    def forecast(self, output: np.ndarray) -> np.ndarray:
        """Last-step outputs (B, h * D), or (B, h, D) -> forecasts (B, h, D)."""
        ahead = output.reshape(len(self.base), -1, self.base.shape[1])
        return (self.base[:, None] + ahead) * self.scale[:, None] + self.offset[:, None]


def prepare_windows(windows: np.ndarray, formulation: Formulation) -> PreparedWindows:
    """Network inputs for scaled windows (B, w, D) whose last row is the step to forecast (its values are
    never read)."""
    observed = np.asarray(windows[:, :-1], dtype=np.float32)
    batch, channels = len(windows), windows.shape[2]
    if formulation.input_norm == "window":
        offset = observed.mean(axis=1)
        scale = np.sqrt(observed.var(axis=1) + WINDOW_NORM_EPS).astype(np.float32)
        observed = (observed - offset[:, None]) / scale[:, None]
    else:
        offset = np.zeros((batch, channels), np.float32)
        scale = np.ones((batch, channels), np.float32)
    x = np.concatenate([observed, np.zeros((batch, 1, channels), np.float32)], axis=1)
    base = observed[:, -1].copy() if formulation.target == "change" else np.zeros((batch, channels), np.float32)
    return PreparedWindows(x, base, scale, offset)


def forecast_windows(forward_last: ForwardLast, windows: np.ndarray, formulation: Formulation) -> np.ndarray:
    """Forecasts (B, h, D) of the h steps from the last row of each scaled window (B, w, D) on."""
    prepared = prepare_windows(windows, formulation)
    return prepared.forecast(formulation.steps_ahead(np.asarray(forward_last(prepared.x), dtype=np.float32)))


def _each_row(forecast_from: Callable[[np.ndarray, np.ndarray], np.ndarray], scaled: np.ndarray,
              context: np.ndarray | None, horizon: int) -> np.ndarray:
    """Forecasts (n, h, D) from every row of ``scaled`` by ``forecast_from(rows, context)``; without context the
    first row has no history: its forecasts are NaN (a stand-in history would be the row itself), and it is the
    others'."""
    if context is not None and len(context):
        return forecast_from(scaled, context)
    first = np.full((1, horizon, scaled.shape[1]), np.nan, np.float32)
    if len(scaled) < 2:
        return first[:len(scaled)]
    return np.concatenate([first, forecast_from(scaled[1:], scaled[:1])])


def forecast_every_step(forward_last: ForwardLast, scaled: np.ndarray, window: int, formulation: Formulation,
                        context: np.ndarray | None = None, batch_size: int = FORECAST_BATCH) -> np.ndarray:
    """The forecasts (n, h, D) made at every row of ``scaled`` (n, D) as origin, from the rows before it: row i
    holds those of rows i, ..., i + h - 1. ``context``: scaled rows that precede the series (without it the first
    row's forecasts are NaN)."""
    def forecast_from(rows: np.ndarray, before: np.ndarray) -> np.ndarray:
        views = windows_ending_at_every_step(history_for(rows, window, before), window)
        forecasts = np.empty((len(views), formulation.horizon, rows.shape[1]), dtype=np.float32)
        for start in range(0, len(views), batch_size):
            chunk = np.array(views[start:start + batch_size], dtype=np.float32)
            forecasts[start:start + len(chunk)] = forecast_windows(forward_last, chunk, formulation)
        return forecasts
    return _each_row(forecast_from, scaled, context, formulation.horizon)


def forecast_every_step_with(network: SeriesNetwork, scaled: np.ndarray, window: int, formulation: Formulation,
                             context: np.ndarray | None = None) -> np.ndarray:
    """``forecast_every_step``, through the network's shared pass when it has one and ``input_norm`` is none
    (the same forecasts, one pass over the rows; the query rows are the zeroed target slots)."""
    if network.shared is None or formulation.input_norm != "none":
        return forecast_every_step(network.last_step, scaled, window, formulation, context)

    def forecast_from(rows: np.ndarray, before: np.ndarray) -> np.ndarray:
        history = np.ascontiguousarray(history_for(rows, window, before), dtype=np.float32)
        output = formulation.steps_ahead(np.asarray(network.shared(history, True), dtype=np.float32))
        if formulation.target == "change":
            return history[window - 2:-1, None] + output
        return output
    return _each_row(forecast_from, scaled, context, formulation.horizon)


class WindowForecastStream:
    """Forecasts one observation at a time by recomputing the window (any model): ``update(x_t)`` gives the
    forecasts (h, D) of steps t + 1, ..., t + h in the data's units, as ``forecast_next`` on the stream so far.
    ``scale`` / ``unscale`` map raw rows (n, D) to the model's scaled rows and back."""

    def __init__(self, forward_last: ForwardLast, window: int, n_channels: int, formulation: Formulation,
                 scale: Callable[[np.ndarray], np.ndarray], unscale: Callable[[np.ndarray], np.ndarray],
                 context: np.ndarray | None = None):
        self.forward_last, self.window, self.n_channels = forward_last, window, n_channels
        self.formulation = formulation
        self.scale, self.unscale, self.context = scale, unscale, context
        self.reset()

    def reset(self) -> None:
        """Start again from the context given at creation (or none)."""
        self.recent = (np.empty((0, self.n_channels), np.float32) if self.context is None or not len(self.context)
                       else self.scale(check_series(self.context, self.n_channels, "context"))[-(self.window - 1):])
        self.steps = 0

    def update(self, observation: np.ndarray) -> np.ndarray:
        """The forecasts (h, n_channels) of the h steps after this observation; a bad one changes nothing."""
        row = self.scale(check_series(np.reshape(observation, (1, -1)), self.n_channels, f"observation {self.steps}"))
        self.recent = np.concatenate([self.recent, row])[-(self.window - 1):]
        self.steps += 1
        return self.unscale(forecast_next(self.forward_last, self.recent, self.window, self.formulation))

    def update_many(self, observations: np.ndarray) -> np.ndarray:
        """Forecasts (n, h, n_channels): row i holds those of the h steps after observation i."""
        checked = check_series(observations, self.n_channels, "observations")
        return np.array([self.update(row) for row in checked]).reshape(len(checked), self.formulation.horizon,
                                                                        self.n_channels)


def forecast_next(forward_last: ForwardLast, scaled_history: np.ndarray, window: int,
                  formulation: Formulation) -> np.ndarray:
    """The forecasts (h, D) of the h steps after the scaled history (n >= 1 rows; with fewer than ``window - 1``
    the earliest row stands in for the missing ones)."""
    if not len(scaled_history):
        raise DataError("no history to forecast from: give at least one row")
    slot = np.zeros((1, scaled_history.shape[1]), np.float32)  # the target slot: never read
    return forecast_every_step(forward_last, slot, window, formulation, context=scaled_history)[0]
