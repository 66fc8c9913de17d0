"""Point-forecast errors, on the standardised scale (the paper's numbers) and in the data's own units."""

from __future__ import annotations

from typing import Any

import numpy as np

from sbts.errors import DataError

FORECAST_METRIC_NOTES = {
    "mse, mae": "mean over every forecast step and every variable, on the scale standardised with the training "
                "rows' mean and std (the paper's numbers)",
    "mse_original, mae_original": "the same in the data's own units (errors times each variable's training std); "
                                  "dominated by the variables with the largest spread",
    "per_variable": "mse and mae of each variable on the standardised scale",
}


def forecast_errors(forecasts: np.ndarray, truth: np.ndarray, std: np.ndarray,
                    columns: list[str] | None = None) -> dict[str, Any]:
    """Errors of scaled forecasts against scaled truth (both (n, D)); ``std``: the divisor of each variable's
    scaling, to report errors in original units."""
    forecasts, truth = np.asarray(forecasts, np.float64), np.asarray(truth, np.float64)
    if forecasts.shape != truth.shape or forecasts.ndim != 2 or not len(truth):
        raise DataError(f"forecasts {forecasts.shape} and truth {truth.shape} must be the same non-empty (n, D)")
    if not np.isfinite(forecasts).all():
        raise DataError(f"{int((~np.isfinite(forecasts)).sum())} forecast values are not finite")
    errors = forecasts - truth
    original = errors * np.asarray(std, np.float64)
    names = columns or [f"x{i}" for i in range(truth.shape[1])]
    return {
        "mse": float(np.mean(np.square(errors))), "mae": float(np.mean(np.abs(errors))),
        "mse_original": float(np.mean(np.square(original))), "mae_original": float(np.mean(np.abs(original))),
        "n_steps": int(len(truth)),
        "per_variable": {name: {"mse": float(mse), "mae": float(mae)} for name, mse, mae in
                         zip(names, np.mean(np.square(errors), axis=0), np.mean(np.abs(errors), axis=0))},
    }
