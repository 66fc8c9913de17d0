"""Direct multi-step forecasting baselines, made from the same rows the Transformer sees.

A forecast *origin* ``o`` is a row index of a scaled series ``rows`` (N, D): its forecast is of rows
``o .. o + horizon - 1``, every variable, made from rows before ``o`` only (``rows[o:]`` is never read).
Persistence repeats the last observed row; seasonal persistence repeats the last observed season (its period
given, or detected from the training rows' autocorrelation); the window mean averages the ``window - 1``
observed rows; ridge regression (scikit-learn) maps the flattened observed rows to all ``horizon x D`` future
values at once, its penalty chosen on validation origins; ridge per variable maps each variable's observed
values to its own ``horizon`` future values, one map for every variable (the channel-independent linear
forecaster, far fewer coefficients to fit). Windows are views and are read in batches, so
memory stays bounded on long series with long horizons.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import Ridge

from sbts.data.windows import windows_ending_at_every_step
from sbts.errors import ConfigError, DataError

RIDGE_ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5)  # long horizons chose 1e3, the old top: room above
DEFAULT_ALPHA = 1.0  # ridge's penalty when there are no validation origins to choose one on
# At most this many values (training origins x (window - 1 + horizon) x variables: features and targets) to fit
# ridge on; beyond it the training origins are thinned evenly (recorded in describe()): about 400 MB of float32.
MAX_RIDGE_VALUES = 100_000_000
PREDICT_BATCH = 4096  # origins forecast at a time at most: bounds memory on long test periods
PREDICT_BATCH_VALUES = 2 ** 24  # ... and at most this many values read or forecast per batch (128 MB as float64)

# Season detection (seasonal persistence without a given period): the lag of the highest peak of the training
# rows' autocorrelation (averaged over variables), among the peaks that are high enough and repeat.
MIN_SEASON_LAG = 2  # lag 1 is persistence itself
MIN_SEASONS_SEEN = 3  # a period must fit this many times in the training rows ...
MAX_SEASON_LAG = 1008  # ... and be at most a week of 10-minute rows, the longest season of the usual benchmarks
MIN_SEASON_AUTOCORRELATION = 0.2  # a peak below this is no season
# A season's peak comes back at twice its lag (give or take this many lags, for a period between two integers);
# the wiggles of a random walk's or trend's slowly decaying autocorrelation, often above
# MIN_SEASON_AUTOCORRELATION, do not.
SEASON_REPEAT_TOLERANCE = 1


def _int_at_least(value: Any, minimum: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _checked(rows: np.ndarray, origins: np.ndarray, lookback: int, horizon: int | None,
             what: str) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` as a 2-D array and ``origins`` as integers with ``lookback`` rows before each (and, with a
    ``horizon``, its targets inside ``rows``)."""
    rows = np.asarray(rows)
    if rows.ndim != 2:
        raise DataError(f"{what}: rows must be a 2-D (N, D) array, got shape {rows.shape}")
    origins = np.asarray(origins)
    if origins.ndim != 1 or (len(origins) and origins.dtype.kind not in "iu"):
        raise DataError(f"{what}: origins must be a 1-D array of row indices, got {origins.dtype} {origins.shape}")
    origins = origins.astype(np.int64, copy=False)
    if len(origins):
        if origins.min() < lookback:
            raise DataError(f"{what}: origin {int(origins.min())} has {int(origins.min())} rows before it; "
                            f"this baseline reads {lookback}")
        end = len(rows) - (horizon or 0)
        if origins.max() > end:
            need = f"its {horizon} target rows" if horizon else "it"
            raise DataError(f"{what}: origin {int(origins.max())} is past the series ({len(rows)} rows) "
                            f"for {need}")
    return rows, origins


def _batches(n: int, values_per_origin: int):
    """Slices of at most PREDICT_BATCH origins and about PREDICT_BATCH_VALUES values each."""
    size = max(1, min(PREDICT_BATCH, PREDICT_BATCH_VALUES // max(1, values_per_origin)))
    for start in range(0, n, size):
        yield slice(start, start + size)


def _observed(rows: np.ndarray, origins: np.ndarray, length: int) -> np.ndarray:
    """(n, length, D) copy of the ``length`` rows before each origin."""
    return windows_ending_at_every_step(rows, length)[origins - length]


def _future(rows: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    """(n, horizon, D) copy of the rows each origin forecasts."""
    return windows_ending_at_every_step(rows, horizon)[origins]


class _Baseline:
    """Shared checks and batched prediction; a subclass says what it reads (``lookback``) and forecasts a
    batch (``_forecast``: (b, horizon or 1, D), broadcast over the horizon)."""

    name = ""

    def __init__(self, window: int, horizon: int, **extra: Any):
        self.window = _int_at_least(window, 2, "window")
        self.horizon = _int_at_least(horizon, 1, "horizon")

    @property
    def lookback(self) -> int:
        raise NotImplementedError

    def _forecast(self, rows: np.ndarray, origins: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fit(self, rows: np.ndarray, origins: np.ndarray, val_origins: np.ndarray | None = None) -> _Baseline:
        _checked(rows, origins, self.window - 1, self.horizon, f"{self.name} training")
        return self

    def predict(self, rows: np.ndarray, origins: np.ndarray) -> np.ndarray:
        """(len(origins), horizon, D) float64: the forecast of rows ``o .. o + horizon - 1`` for each origin."""
        rows, origins = _checked(rows, origins, self.lookback, None, self.name)
        out = np.empty((len(origins), self.horizon, rows.shape[1]), dtype=np.float64)
        for batch in _batches(len(origins), (self.lookback + self.horizon) * rows.shape[1]):
            out[batch] = self._forecast(rows, origins[batch])
        return out


class Persistence(_Baseline):
    """Repeat the last observed row at every step ahead."""

    name = "persistence"

    @property
    def lookback(self) -> int:
        return 1

    def _forecast(self, rows: np.ndarray, origins: np.ndarray) -> np.ndarray:
        return rows[origins - 1][:, None]

    def describe(self) -> dict[str, Any]:
        return {"rule": "the last observed row, at every step ahead", "horizon": self.horizon}


class SeasonalPersistence(_Baseline):
    """Repeat the last observed season: step ``k`` ahead (from 0) of origin ``o`` is
    ``rows[o + k - period * (k // period + 1)]``, the value one period before it, or several when the horizon
    is longer than the period. ``period`` None: detected in ``fit`` from the training rows; no season
    detected gives period 1, persistence."""

    name = "seasonal_persistence"

    def __init__(self, window: int, horizon: int, period: int | None = None, **extra: Any):
        super().__init__(window, horizon)
        self.period = None if period is None else _int_at_least(period, 1, "period")
        if self.period is not None:
            self.period_, self.period_source_ = self.period, "given"

    @property
    def lookback(self) -> int:
        if not hasattr(self, "period_"):
            raise AttributeError("seasonal persistence without a given period reads as many rows as the period "
                                 "that fit() detects; call fit() first")
        return self.period_

    def fit(self, rows: np.ndarray, origins: np.ndarray,
            val_origins: np.ndarray | None = None) -> SeasonalPersistence:
        rows, origins = _checked(rows, origins, self.window - 1, self.horizon, f"{self.name} training")
        if self.period is None:
            if not len(origins):
                raise DataError(f"{self.name}: no training origins to detect the season on")
            training = np.asarray(rows[:origins.max() + self.horizon], dtype=np.float64)
            self.max_lag_ = min(MAX_SEASON_LAG, len(training) // MIN_SEASONS_SEEN)
            self.period_, self.autocorrelation_ = detect_period(training, self.max_lag_)
            self.period_source_ = "detected" if self.period_ > 1 else "none detected"
        return self

    def _forecast(self, rows: np.ndarray, origins: np.ndarray) -> np.ndarray:
        k = np.arange(self.horizon)
        return rows[origins[:, None] + (k - self.period_ * (k // self.period_ + 1))]

    def describe(self) -> dict[str, Any]:
        if self.period_source_ == "none detected":
            rule = "no season detected: the last observed row, at every step ahead (persistence)"
        else:
            rule = "the last observed season repeated: each step ahead is the value one period (or more) before it"
        entry: dict[str, Any] = {"rule": rule, "horizon": self.horizon, "period": self.period_,
                                 "period_source": self.period_source_}
        if self.period is None:
            entry["detection"] = {
                "method": "highest peak of the training rows' autocorrelation, averaged over variables",
                "lags_searched": [MIN_SEASON_LAG, self.max_lag_],
                "min_autocorrelation": MIN_SEASON_AUTOCORRELATION, "peak_must_repeat_at": "twice the lag",
                "autocorrelation_at_period": self.autocorrelation_}
        return entry


def autocorrelation(series: np.ndarray, max_lag: int) -> np.ndarray:
    """Autocorrelation at lags 0..max_lag averaged over the non-constant variables of ``series`` (N, D), by FFT
    (the biased estimator: it favours the shorter of two equally strong periods). All NaN when every variable
    is constant."""
    centred = series - series.mean(axis=0)
    size = 1 << int(2 * len(series) - 1).bit_length()  # no circular wrap-around
    spectrum = np.fft.rfft(centred, n=size, axis=0)
    covariance = np.fft.irfft(spectrum.real ** 2 + spectrum.imag ** 2, n=size, axis=0)[:max_lag + 1]
    varying = covariance[0] > 0
    if not varying.any():
        return np.full(max_lag + 1, np.nan)
    return (covariance[:, varying] / covariance[0, varying]).mean(axis=1)


def detect_period(series: np.ndarray, max_lag: int) -> tuple[int, float | None]:
    """(period, autocorrelation there): the lag in [MIN_SEASON_LAG, max_lag] of the highest local maximum of
    the autocorrelation of ``series`` (N, D; N > 2 * max_lag + SEASON_REPEAT_TOLERANCE) that reaches
    MIN_SEASON_AUTOCORRELATION, with another such maximum at about twice the lag; (1, None) when there is none."""
    if max_lag < MIN_SEASON_LAG:
        return 1, None
    acf = autocorrelation(series, 2 * max_lag + SEASON_REPEAT_TOLERANCE + 1)
    peak = np.zeros(len(acf), dtype=bool)
    peak[1:-1] = (acf[1:-1] > acf[:-2]) & (acf[1:-1] >= acf[2:]) & (acf[1:-1] >= MIN_SEASON_AUTOCORRELATION)
    lags = np.arange(MIN_SEASON_LAG, max_lag + 1)
    repeats = np.zeros(len(lags), dtype=bool)
    for shift in range(-SEASON_REPEAT_TOLERANCE, SEASON_REPEAT_TOLERANCE + 1):
        repeats |= peak[2 * lags + shift]
    seasons = lags[peak[lags] & repeats]
    if not len(seasons):
        return 1, None
    best = seasons[np.argmax(acf[seasons])]
    return int(best), float(acf[best])

class WindowMean(_Baseline):
    """The mean of the window's ``window - 1`` observed rows, per variable, at every step ahead."""

    name = "window_mean"

    @property
    def lookback(self) -> int:
        return self.window - 1

    def _forecast(self, rows: np.ndarray, origins: np.ndarray) -> np.ndarray:
        observed = np.ascontiguousarray(_observed(rows, origins, self.lookback), dtype=np.float64)
        return observed.mean(axis=1)[:, None]

    def describe(self) -> dict[str, Any]:
        return {"rule": "the mean of the window - 1 observed rows, at every step ahead", "horizon": self.horizon,
                "rows_averaged": self.lookback}


class RidgeOnWindow(_Baseline):
    """Ridge regression from the flattened ``window - 1`` observed rows (all variables) to the ``horizon x D``
    future values (one multi-output model: every step ahead directly, no feeding forecasts back).

    ``fit`` fits one model per penalty in ``alphas`` on the training origins and keeps the one with the lowest
    mean squared error over all outputs at ``val_origins`` (penalty DEFAULT_ALPHA when there are none)."""

    name = "ridge"

    def __init__(self, window: int, horizon: int, alphas: tuple[float, ...] = RIDGE_ALPHAS, **extra: Any):
        super().__init__(window, horizon)
        if not len(alphas) or any(not np.isfinite(a) or a <= 0 for a in alphas):
            raise ConfigError(f"ridge alphas must be positive finite numbers, got {alphas!r}")
        self.alphas = tuple(float(a) for a in alphas)

    @property
    def lookback(self) -> int:
        return self.window - 1

    def _features(self, rows: np.ndarray, origins: np.ndarray) -> np.ndarray:
        return np.asarray(_observed(rows, origins, self.lookback), dtype=np.float32).reshape(len(origins), -1)

    def _targets(self, rows: np.ndarray, origins: np.ndarray) -> np.ndarray:
        return np.asarray(_future(rows, origins, self.horizon), dtype=np.float32).reshape(len(origins), -1)

    def _forecast(self, rows: np.ndarray, origins: np.ndarray) -> np.ndarray:
        return self.model_.predict(self._features(rows, origins)).reshape(len(origins), self.horizon, -1)

    def fit(self, rows: np.ndarray, origins: np.ndarray, val_origins: np.ndarray | None = None) -> RidgeOnWindow:
        rows, origins = _checked(rows, origins, self.lookback, self.horizon, f"{self.name} training")
        if not len(origins):
            raise DataError(f"{self.name}: no training origins to fit on")
        values_per_origin = (self.lookback + self.horizon) * rows.shape[1]
        self.thinning_ = max(1, -(-len(origins) * values_per_origin // MAX_RIDGE_VALUES))
        used = origins[::self.thinning_]
        self.n_training_origins_ = len(used)
        features, targets = self._features(rows, used), self._targets(rows, used)
        self.val_mse_: dict[float, float] = {}
        if val_origins is None or not len(val_origins):
            self.model_ = Ridge(alpha=DEFAULT_ALPHA).fit(features, targets)
        else:
            rows, val_origins = _checked(rows, val_origins, self.lookback, self.horizon, f"{self.name} validation")
            fitted = {}
            for alpha in self.alphas:
                self.model_ = fitted[alpha] = Ridge(alpha=alpha).fit(features, targets)
                self.val_mse_[alpha] = self._mse(rows, val_origins)
            self.model_ = fitted[min(self.val_mse_, key=self.val_mse_.get)]
        self.alpha_ = float(self.model_.alpha)
        return self

    def _mse(self, rows: np.ndarray, origins: np.ndarray) -> float:
        """Mean squared error over every output of the current model at ``origins``, a batch at a time."""
        total = 0.0
        for batch in _batches(len(origins), (self.lookback + 2 * self.horizon) * rows.shape[1]):
            errors = np.subtract(self._forecast(rows, origins[batch]), _future(rows, origins[batch], self.horizon),
                                 dtype=np.float64)
            total += float(np.sum(np.square(errors)))
        return total / (len(origins) * self.horizon * rows.shape[1])

    def describe(self) -> dict[str, Any]:
        return {"rule": "ridge regression from the flattened window - 1 observed rows to every step ahead",
                "horizon": self.horizon, "alpha": self.alpha_,
                "training_origins_used": f"every {self.thinning_} ({self.n_training_origins_})"
                                         if self.thinning_ > 1 else f"all ({self.n_training_origins_})",
                "alpha_selected_on": "validation (mse over every step ahead and variable)" if self.val_mse_
                                     else f"none (no validation origins; alpha {DEFAULT_ALPHA:g})",
                "validation_mse_by_alpha": {str(a): v for a, v in self.val_mse_.items()}}


class RidgePerVariable(RidgeOnWindow):
    """Ridge regression from one variable's ``window - 1`` observed values to its ``horizon`` future values, the
    same coefficients for every variable (each origin gives D training examples); the penalty as ``RidgeOnWindow``
    chooses it."""

    name = "ridge_per_variable"

    def _features(self, rows: np.ndarray, origins: np.ndarray) -> np.ndarray:
        observed = np.asarray(_observed(rows, origins, self.lookback), dtype=np.float32)
        return observed.transpose(0, 2, 1).reshape(-1, self.lookback)  # example o * D + c: variable c at origin o

    def _targets(self, rows: np.ndarray, origins: np.ndarray) -> np.ndarray:
        future = np.asarray(_future(rows, origins, self.horizon), dtype=np.float32)
        return future.transpose(0, 2, 1).reshape(-1, self.horizon)

    def _forecast(self, rows: np.ndarray, origins: np.ndarray) -> np.ndarray:
        by_variable = self.model_.predict(self._features(rows, origins)).reshape(len(origins), rows.shape[1], -1)
        return by_variable.transpose(0, 2, 1)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "rule": "ridge regression from one variable's window - 1 observed values to its "
                                              "every step ahead, the same coefficients for every variable"}


BASELINES = (Persistence, SeasonalPersistence, WindowMean, RidgeOnWindow, RidgePerVariable)
