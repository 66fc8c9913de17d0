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

from sbts.errors import DataError, InputTypeError


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


def check_series(series: np.ndarray, n_channels: int | None, where: str, allow_empty: bool = False,
                 one_d: bool = True, owner: str = "the model") -> np.ndarray:
    """A raw (n_steps, n_channels) series of finite numbers, as float64. ``n_channels=None``: any number of
    channels (at least one); a 1-D array is one channel unless ``one_d`` is False; ``owner`` names what expects
    ``n_channels`` in the error."""
    if type(series).__module__.startswith("scipy.sparse"):
        raise DataError(f"{where}: sparse input is not supported; pass a dense array")
    try:
        raw = np.asarray(series)
        if np.iscomplexobj(raw):  # float64 would silently drop the imaginary part
            raise DataError(f"{where}: Complex data not supported")
        array = raw.astype(np.float64)
    except TypeError as exc:
        raise InputTypeError(f"{where}: not an array of numbers ({exc})") from None
    except ValueError as exc:
        raise DataError(f"{where}: not an array of numbers ({exc})") from None
    if array.ndim == 1 and one_d and n_channels in (None, 1):
        array = array[:, None]
    expected = "n_channels" if n_channels is None else n_channels
    if array.ndim != 2:
        raise DataError(f"{where}: expected shape (n_steps, {expected}), got {array.shape}; Reshape your data: one "
                        "step is x[None], a univariate series x[:, None]")
    if n_channels is not None and array.shape[1] != n_channels:
        # An estimator's message in scikit-learn's words; a file's (the runtime, the CLI) in the file's.
        wording = (f"X has {array.shape[1]} features, but {owner} is expecting {n_channels} features as input; "
                   if owner != "the model" else "")
        raise DataError(f"{where}: {wording}expected shape (n_steps, {n_channels}), got {array.shape}")
    if not array.shape[1]:
        raise DataError(f"{where}: 0 feature(s) (shape={array.shape}) while a minimum of 1 is required.")
    if not allow_empty and not len(array):
        raise DataError(f"{where}: no steps (an empty series)")
    if not np.isfinite(array).all():
        row, column = np.argwhere(~np.isfinite(array))[0]
        raise DataError(f"{where}: Input contains NaN or infinity: non-finite value {array[row, column]} at row "
                        f"{row}, column {column}")
    return array
