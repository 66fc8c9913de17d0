"""One-step forecasting baselines on the same windows the Transformer sees.

Each takes scaled windows ``(B, w, D)`` whose last row is the step to forecast and never reads that
row: persistence repeats the last observed row, the window mean averages the ``w - 1`` observed rows,
and ridge regression (scikit-learn) maps the flattened observed rows to the next step, its penalty
chosen on validation windows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import Ridge

RIDGE_ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
# At most this many feature values (windows x (w - 1) x variables) to fit on; beyond it the training windows are
# thinned evenly (recorded in describe()): about 400 MB of float32.
MAX_RIDGE_VALUES = 100_000_000
PREDICT_BATCH = 4096  # windows flattened at a time: bounds memory on long test periods


class Persistence:
    """Repeat the last observed value."""

    name = "persistence"

    def fit(self, windows: np.ndarray, val_windows: np.ndarray | None = None) -> Persistence:
        return self

    def predict(self, windows: np.ndarray) -> np.ndarray:
        return np.asarray(windows[:, -2], dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        return {"rule": "the last observed value"}


class WindowMean:
    """The mean of the window's observed steps, per variable."""

    name = "window_mean"

    def fit(self, windows: np.ndarray, val_windows: np.ndarray | None = None) -> WindowMean:
        return self

    def predict(self, windows: np.ndarray) -> np.ndarray:
        return np.asarray(windows[:, :-1], dtype=np.float64).mean(axis=1)

    def describe(self) -> dict[str, Any]:
        return {"rule": "the mean of the w - 1 observed steps"}


class RidgeOnWindow:
    """Ridge regression from the flattened observed steps (all variables) to every variable's next value.

    ``fit`` fits one model per penalty in ``alphas`` on the training windows and keeps the one with the
    lowest mean squared error on ``val_windows`` (penalty 1 when there are none)."""

    name = "ridge"

    def __init__(self, alphas: tuple[float, ...] = RIDGE_ALPHAS):
        self.alphas = alphas

    @staticmethod
    def _features(windows: np.ndarray) -> np.ndarray:
        return np.asarray(windows[:, :-1], dtype=np.float32).reshape(len(windows), -1)

    def fit(self, windows: np.ndarray, val_windows: np.ndarray | None = None) -> RidgeOnWindow:
        self.thinning_ = max(1, -(-windows[:, :-1].size // MAX_RIDGE_VALUES))
        windows = windows[::self.thinning_]
        features, targets = self._features(windows), np.asarray(windows[:, -1], dtype=np.float32)
        self.val_mse_: dict[float, float] = {}
        if val_windows is None or not len(val_windows):
            self.model_ = Ridge(alpha=1.0).fit(features, targets)
        else:
            fitted = {}
            for alpha in self.alphas:
                self.model_ = fitted[alpha] = Ridge(alpha=alpha).fit(features, targets)
                self.val_mse_[alpha] = float(np.mean(np.square(self.predict(val_windows) - val_windows[:, -1])))
            self.model_ = fitted[min(self.val_mse_, key=self.val_mse_.get)]
        self.alpha_ = float(self.model_.alpha)
        return self

    def predict(self, windows: np.ndarray) -> np.ndarray:
        out = np.empty((len(windows), windows.shape[2]), dtype=np.float64)
        for start in range(0, len(windows), PREDICT_BATCH):
            out[start:start + PREDICT_BATCH] = self.model_.predict(self._features(windows[start:start + PREDICT_BATCH]))
        return out

    def describe(self) -> dict[str, Any]:
        return {"rule": "ridge regression on the flattened observed steps", "alpha": self.alpha_,
                "training_windows_used": f"every {self.thinning_}" if self.thinning_ > 1 else "all",
                "alpha_selected_on": "validation" if self.val_mse_ else "none (no validation windows; alpha 1)",
                "validation_mse_by_alpha": {str(a): v for a, v in self.val_mse_.items()}}


BASELINES = (Persistence, WindowMean, RidgeOnWindow)
