"""A forecasting run's one-step-ahead forecasts against the truth over a stretch of the test period.

Reads a run directory's ``test_predictions.csv`` (original units) and ``metrics.json``; needs matplotlib
(``pip install 'sbts[plot]'``), imported only when a plot is drawn.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from sbts.errors import ConfigError, DataError
from sbts.report.figure import pyplot, save, step_range
from sbts.training.checkpoint import read_json

FORECAST_SUFFIX = "_forecast"
DEFAULT_VARIABLES = 2


def read_predictions(run_dir: str | Path) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Variable names and, by name, the true values and the forecasts of every test step."""
    run_dir = Path(run_dir)
    metrics = read_json(run_dir / "metrics.json", "run metrics")
    if not isinstance(metrics, dict) or metrics.get("task") != "forecasting" or "predictions_file" not in metrics:
        raise DataError(f"{run_dir}: not a finished forecasting run (metrics.json names no predictions file)")
    path = run_dir / str(metrics["predictions_file"])
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            header = next(csv.reader([handle.readline()]))
            # "step", then "date" when the series has dates (unless "date" is a variable, whose forecast follows it)
            has_dates = header[1:2] == ["date"] and header[2:3] != ["date" + FORECAST_SUFFIX]
            numeric = [i for i in range(len(header)) if not (has_dates and i == 1)]
            table = np.loadtxt(handle, delimiter=",", ndmin=2, usecols=numeric, dtype=np.float64)
    except FileNotFoundError:
        raise DataError(f"{path}: predictions file not found") from None
    except (ValueError, StopIteration) as exc:
        raise DataError(f"{path}: not a predictions table ({exc})") from None
    names = [header[i] for i in numeric]
    variables = [n for n in names[1:] if not n.endswith(FORECAST_SUFFIX)]
    if names[:1] != ["step"] or sorted(names[1:]) != sorted(variables + [v + FORECAST_SUFFIX for v in variables]):
        raise DataError(f"{path}: expected columns step[,date] and <variable>,<variable>{FORECAST_SUFFIX} pairs")
    column = {name: table[:, i] for i, name in enumerate(names)}
    return variables, {v: column[v] for v in variables}, {v: column[v + FORECAST_SUFFIX] for v in variables}


def plot_forecasts(run_dir: str | Path, output: str | Path, *, variables: list[str] | None = None, start: int = 0,
                   end: int | None = None) -> Path:
    """Draw the truth and the forecasts of ``variables`` (default: the first two) over test steps ``start`` to
    ``end``, one panel each, to ``output`` (png, pdf or svg, by its suffix)."""
    plt = pyplot(output)
    names, truth, forecasts = read_predictions(run_dir)
    chosen = variables or names[:DEFAULT_VARIABLES]
    unknown = [v for v in chosen if v not in truth]
    if unknown:
        raise ConfigError(f"unknown variable(s) {', '.join(unknown)}; this run forecasts {', '.join(names)}")
    start, end = step_range(start, end, len(truth[chosen[0]]))
    steps = np.arange(start, end)
    figure, panels = plt.subplots(len(chosen), 1, figsize=(12, 2.6 * len(chosen)), sharex=True, squeeze=False,
                                  constrained_layout=True)
    for axes, name in zip(panels[:, 0], chosen):
        axes.plot(steps, truth[name][start:end], linewidth=0.9, color="black", label="truth")
        axes.plot(steps, forecasts[name][start:end], linewidth=0.9, color="tab:orange", label="forecast")
        axes.set_ylabel(name)
        axes.legend(loc="upper right", fontsize="small")
    panels[-1, 0].set_xlabel("test step")
    panels[0, 0].set_title(f"{Path(run_dir).name}: one-step-ahead forecasts on the test period")
    return save(figure, output)
