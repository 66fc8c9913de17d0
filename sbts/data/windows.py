"""Sliding windows over one long multivariate series, for the tasks that read a window's last step.

Series are ``(n_steps, n_channels)`` arrays. Training takes windows lying wholly inside the training
part, every ``stride`` steps. Scoring takes one window ending at *every* step of the scored series,
so no step is dropped: the first ``window - 1`` steps borrow the rows that precede the series
(``context``: the end of the training series in an offline evaluation, or recent history online). When
fewer than ``window - 1`` rows precede it, the earliest available row is repeated in front (documented
rule; with no context at all that is the series' first observation).

Numpy only: the torch-free runtime builds its windows here too.
"""

from __future__ import annotations

import numpy as np

from sbts.errors import DataError


def check_window_fits(n_steps: int, window: int, where: str) -> None:
    """A series must hold at least one whole window to train on."""
    if n_steps < window:
        raise DataError(f"{where}: {n_steps} steps, shorter than the window of {window}; choose a smaller window "
                        "(model max_len)")


def training_window_starts(n_steps: int, window: int, stride: int) -> np.ndarray:
    """First steps of the windows inside a series of ``n_steps``, every ``stride`` steps; the last window
    always ends at the last step, so no training step is left out at the end."""
    last = n_steps - window
    starts = np.arange(0, last + 1, stride, dtype=np.int64)
    return starts if starts[-1] == last else np.append(starts, last)


def history_for(series: np.ndarray, window: int, context: np.ndarray | None = None) -> np.ndarray:
    """``window - 1`` rows of history followed by ``series``: the rows whose windows end at every step."""
    series = np.asarray(series)
    before = series[:0] if context is None or window == 1 else np.asarray(context, dtype=series.dtype)[-(window - 1):]
    rows = np.concatenate([before, series])
    missing = window - 1 - len(before)
    if missing > 0:  # not enough history: the earliest row stands in for the steps before it
        rows = np.concatenate([np.repeat(rows[:1], missing, axis=0), rows])
    return rows


def windows_ending_at_every_step(history: np.ndarray, window: int) -> np.ndarray:
    """Read-only view ``(len(history) - window + 1, window, n_channels)``: the window ending at each row
    from ``history[window - 1]`` on (no copy)."""
    return np.lib.stride_tricks.sliding_window_view(history, window, axis=0).transpose(0, 2, 1)
