"""Point-forecast errors, on the standardised scale (the paper's numbers) and in the data's own units."""

from __future__ import annotations

from typing import Any

import numpy as np

from sbts.errors import DataError

FORECAST_METRIC_NOTES = {
    "mse, mae": "mean over every forecast origin, every step ahead and every variable, on the scale standardised "
                "with the training rows' mean and std (the paper's numbers)",
    "mse_original, mae_original": "the same in the data's own units (errors times each variable's training std); "
                                  "dominated by the variables with the largest spread",
    "per_variable": "mse and mae of each variable (over every origin and step ahead) on the standardised scale",
    "per_horizon_step": "mse and mae at each step ahead, step 1 (the row at the origin) first, over every origin "
                        "and variable, on the standardised scale; their mean is mse, mae",
    "n_forecasts, horizon": "the number of forecast origins, and of steps ahead each forecasts",
}
CHUNK_VALUES = 2 ** 20  # values compared at a time (8 MB as float64): a long test period is never copied whole


def forecast_errors(forecasts: np.ndarray, truth: np.ndarray, std: np.ndarray,
                    columns: list[str] | None = None) -> dict[str, Any]:
    """Errors of scaled forecasts against scaled truth, both (n origins, h steps ahead, D variables); ``std``:
    the divisor of each variable's scaling, to report errors in original units."""
    forecasts, truth = np.asarray(forecasts), np.asarray(truth)
    if forecasts.shape != truth.shape or forecasts.ndim != 3 or not truth.size:
        raise DataError(f"forecasts {forecasts.shape} and truth {truth.shape} must be the same non-empty "
                        "(n origins, h steps ahead, D variables)")
    n, horizon, n_vars = truth.shape
    try:
        std = np.broadcast_to(np.asarray(std, np.float64), (n_vars,))
    except ValueError:
        raise DataError(f"std {np.shape(std)} must have one value per variable ({n_vars})") from None
    # Sums over origins of each (step ahead, variable)'s squared and absolute errors: every average is made of them.
    squared, absolute = np.zeros((horizon, n_vars)), np.zeros((horizon, n_vars))
    not_finite = 0
    chunk = max(1, CHUNK_VALUES // (horizon * n_vars))
    for start in range(0, n, chunk):
        predicted = np.asarray(forecasts[start:start + chunk], np.float64)
        not_finite += int((~np.isfinite(predicted)).sum())
        errors = predicted - truth[start:start + chunk]
        squared += np.square(errors).sum(axis=0)
        absolute += np.abs(errors).sum(axis=0)
    if not_finite:
        raise DataError(f"{not_finite} forecast values are not finite")
    count = n * horizon * n_vars
    names = columns or [f"x{i}" for i in range(n_vars)]
    return {
        "mse": float(squared.sum() / count), "mae": float(absolute.sum() / count),
        "mse_original": float((squared * np.square(std)).sum() / count),
        "mae_original": float((absolute * std).sum() / count),
        "n_forecasts": int(n), "horizon": int(horizon),
        "per_horizon_step": {"mse": [float(v) for v in squared.sum(axis=1) / (n * n_vars)],
                             "mae": [float(v) for v in absolute.sum(axis=1) / (n * n_vars)]},
        "per_variable": {name: {"mse": float(mse), "mae": float(mae)} for name, mse, mae in
                         zip(names, squared.sum(axis=0) / (n * horizon), absolute.sum(axis=0) / (n * horizon))},
    }
