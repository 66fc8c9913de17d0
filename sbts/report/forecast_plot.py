"""A forecasting run's forecasts against the truth over a stretch of the test period.

Every panel (one per variable) shows the truth and the one-step-ahead forecast of each test origin and, for a
horizon h > 1, the forecast fan: the h-step forecast paths made at origins spread over the stretch (thin), and
the one made at the last origin whose h steps fit it (strong), so a reader sees how the forecast drifts from the
truth with the step ahead. The x axis shows the series' dates when it has them, else the test steps. By default
the stretch is the end of the test period (``DEFAULT_STEPS``, or ``FAN_SPANS`` horizons when that is more).

Reads a run directory's ``metrics.json``, its ``test_predictions.csv`` (original units) and, for h > 1, its
``test_forecasts.npy``; needs matplotlib (``pip install 'sbts[plot]'``), imported only when a plot is drawn.
"""

from __future__ import annotations

import csv
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sbts.atomic import read_json
from sbts.errors import ConfigError, DataError, one_line
from sbts.report.figure import pyplot, save

FORECAST_SUFFIX = "_forecast"
DEFAULT_VARIABLES = 2  # panels drawn without a choice of variables
DEFAULT_STEPS = 336  # the default stretch: the last 336 test steps (two weeks of an hourly series)...
FAN_SPANS = 3  # ... or, with a long horizon, this many horizons, so that a fan of paths fits
MAX_FAN_PATHS = 12  # h-step paths drawn at most by default (the last origin's among them)


@dataclass(frozen=True)
class RunForecasts:
    """What a finished forecasting run recorded of its test period, in original units: one row per test origin."""

    run_dir: Path
    model: str
    horizon: int
    variables: list[str]
    steps: np.ndarray  # (n,) the csv's step column
    dates: np.ndarray | None  # (n,) datetime64, when the series has dates
    truth: np.ndarray  # (n, D) the true value of each origin's row
    forecasts: np.ndarray  # (n, D) its forecast one step ahead (of that same row)
    paths: np.ndarray | None  # (n, h, D) read-only, for h > 1: [i, k - 1] is row i's forecast of row i + k - 1

    @property
    def n_steps(self) -> int:
        return len(self.steps)


def read_run(run_dir: str | Path) -> RunForecasts:
    """The test forecasts of a finished forecasting run directory, checked (``DataError`` naming the file)."""
    run_dir = Path(run_dir)
    metrics, metrics_path = _read_metrics(run_dir)
    horizon = metrics.get("horizon", 1)  # runs before the horizon forecast one step
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise DataError(f"{metrics_path}: horizon {horizon!r} is not a whole number of steps >= 1")
    variables, steps, dates, truth, forecasts = _read_table(run_dir / str(metrics["predictions_file"]))
    paths = None
    if horizon > 1:
        if "forecasts_file" not in metrics:
            raise DataError(f"{metrics_path}: horizon {horizon} but no forecasts_file (the forecasts of every step "
                            "ahead)")
        paths = _read_paths(run_dir / str(metrics["forecasts_file"]), (len(steps), horizon, len(variables)),
                            str(metrics["predictions_file"]))
    return RunForecasts(run_dir, str(metrics.get("model", "")), horizon, variables, steps, dates, truth, forecasts,
                        paths)


def read_predictions(run_dir: str | Path) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Variable names and, by name, the true values and the one-step-ahead forecasts of every test origin."""
    run = read_run(run_dir)
    return (list(run.variables), {v: run.truth[:, j] for j, v in enumerate(run.variables)},
            {v: run.forecasts[:, j] for j, v in enumerate(run.variables)})


def _read_metrics(run_dir: Path) -> tuple[dict[str, Any], Path]:
    path = run_dir / "metrics.json"
    metrics = read_json(path, "the run metrics", DataError,
                        missing=f"{run_dir}: not a finished forecasting run (no metrics.json)")
    if not isinstance(metrics, dict) or metrics.get("task") != "forecasting":
        task = metrics.get("task") if isinstance(metrics, dict) else None
        what = f"its metrics.json is of task {task}" if isinstance(task, str) else "its metrics.json names no task"
        raise DataError(f"{run_dir}: not a finished forecasting run ({what})")
    if "predictions_file" not in metrics:
        raise DataError(f"{run_dir}: not a finished forecasting run (metrics.json names no predictions file)")
    return metrics, path


def _read_table(path: Path) -> tuple[list[str], np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """Variables, steps, dates (or None), truth (n, D) and one-step forecasts (n, D) of a predictions csv."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = [(number, row) for number, row in enumerate(csv.reader(handle), 1) if row]
    except FileNotFoundError:
        raise DataError(f"{path}: predictions file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read the predictions table ({exc.__class__.__name__})") from None
    header = rows[0][1] if rows else []
    # step, date when the series has dates, then a <variable>,<variable>_forecast pair per variable
    has_dates = len(header) % 2 == 0
    first = 2 if has_dates else 1
    variables = header[first::2]
    if (header[:1] != ["step"] or (has_dates and header[1] != "date") or not variables
            or header[first + 1::2] != [v + FORECAST_SUFFIX for v in variables]):
        raise DataError(f"{path}: expected columns step[,date] and <variable>,<variable>{FORECAST_SUFFIX} pairs")
    body = rows[1:]
    if not body:
        raise DataError(f"{path}: no test rows")
    for number, row in body:
        if len(row) != len(header):
            raise DataError(f"{path}: line {number} has {len(row)} fields; the header has {len(header)}")
    try:
        table = np.array([row[:1] + row[first:] for _, row in body], dtype=np.float64)
    except ValueError as exc:
        raise DataError(f"{path}: not a predictions table ({one_line(exc)})") from None
    dates = None
    if has_dates:
        try:
            dates = np.array([row[1] for _, row in body], dtype="datetime64")
        except ValueError as exc:
            raise DataError(f"{path}: the date column holds something other than dates ({one_line(exc)})") from None
    values = table[:, 1:]
    return variables, table[:, 0], dates, values[:, 0::2], values[:, 1::2]


def _read_paths(path: Path, shape: tuple[int, int, int], predictions: str) -> np.ndarray:
    """The forecasts of every step ahead, (n_origins, h, D) floats in a plain .npy (never unpickled), memory-mapped:
    a plot reads the few rows it draws."""
    try:
        paths = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: forecasts file not found") from None
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a plain .npy array of forecasts ({one_line(exc)})") from None
    if not isinstance(paths, np.ndarray):  # an .npz archive
        paths.close()
        raise DataError(f"{path}: an .npz archive, not a .npy array of forecasts")
    if paths.dtype.kind != "f":
        raise DataError(f"{path}: {paths.dtype} values, not floating-point forecasts")
    if paths.shape != shape:
        raise DataError(f"{path}: shape {paths.shape}, expected {shape} (the {shape[0]} rows of {predictions}, the "
                        f"horizon {shape[1]}, {shape[2]} variables)")
    return paths


# --- what is drawn --------------------------------------------------------------------------------

def default_steps(horizon: int) -> int:
    """How many test steps a plot shows by default: ``DEFAULT_STEPS``, or ``FAN_SPANS`` horizons when more."""
    return max(DEFAULT_STEPS, FAN_SPANS * horizon)


def plot_range(start: int | None, end: int | None, n_steps: int, horizon: int = 1) -> tuple[int, int]:
    """The test steps ``start`` to ``end`` (one past the last) to draw, checked; by default the last
    ``default_steps(horizon)`` (without ``start``: those before ``end``)."""
    for name, value in (("start", start), ("end", end)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            raise ConfigError(f"--{name} must be a whole test step; got {value!r}")
    if end is not None and not 1 <= end <= n_steps:
        raise ConfigError(f"--end {end} is outside 1..{n_steps}: one past the last test step to show, of the "
                          f"{n_steps} of this run")
    if start is not None and not 0 <= start < n_steps:
        raise ConfigError(f"--start {start} is outside 0..{n_steps - 1}, the test steps of this run")
    end = n_steps if end is None else int(end)
    start = max(0, end - default_steps(horizon)) if start is None else int(start)
    if start >= end:
        raise ConfigError(f"--start {start} must be before --end {end}")
    return start, end


def fan_origins(start: int, end: int, horizon: int, most: int = MAX_FAN_PATHS) -> np.ndarray:
    """The test steps whose h-step paths are drawn over ``start:end``, at most ``most``: every h steps back from
    the last origin whose h steps fit, or, when more would fit, ``most`` spread evenly from ``start`` to that last
    one (at least h apart: paths never overlap). None for one step ahead (its path is the one-step forecast)."""
    last = end - horizon
    if horizon < 2 or most < 1 or last < start:
        return np.empty(0, dtype=np.int64)
    if most == 1:
        return np.array([last], dtype=np.int64)
    fits = (last - start) // horizon + 1
    if fits <= most:
        return np.arange(last - (fits - 1) * horizon, last + 1, horizon, dtype=np.int64)
    return np.round(np.linspace(start, last, most)).astype(np.int64)  # gaps > h, so >= h once rounded


def forecast_figure(plt, run_dir: str | Path, *, variables: list[str] | None = None, start: int | None = None,
                    end: int | None = None, origins: int = MAX_FAN_PATHS):
    """The figure ``plot_forecasts`` draws, left open (for inspection; ``plt.close`` it): ``plt`` is pyplot, as
    ``sbts.report.figure.pyplot`` gives it. Lines carry a gid: truth, one_step, path, last_path."""
    run = read_run(run_dir)
    if isinstance(variables, str):
        variables = [variables]
    chosen = list(variables) if variables else run.variables[:DEFAULT_VARIABLES]
    unknown = [v for v in chosen if v not in run.variables]
    if unknown:
        raise ConfigError(f"unknown variable(s) {', '.join(unknown)}; this run forecasts {', '.join(run.variables)}")
    if isinstance(origins, bool) or not isinstance(origins, numbers.Integral) or origins < 0:
        raise ConfigError(f"origins (the most h-step paths to draw) must be a whole number >= 0; got {origins!r}")
    start, end = plot_range(start, end, run.n_steps, run.horizon)
    h, shown = run.horizon, slice(start, end)
    x = run.dates if run.dates is not None else run.steps
    fan = fan_origins(start, end, h, int(origins)) if run.paths is not None else np.empty(0, dtype=np.int64)
    paths = np.array(run.paths[fan], dtype=np.float64) if len(fan) else None  # (k, h, D), only the rows drawn

    def where(row: int) -> str:
        return str(run.dates[row]).replace("T", " ") if run.dates is not None else f"step {int(run.steps[row])}"

    figure, panels = plt.subplots(len(chosen), 1, figsize=(12, 1.0 + 2.6 * len(chosen)), sharex=True,
                                  squeeze=False, layout="constrained")
    for axes, name in zip(panels[:, 0], chosen):
        column = run.variables.index(name)
        axes.plot(x[shown], run.truth[shown, column], color="black", linewidth=1.0, label="truth", gid="truth")
        axes.plot(x[shown], run.forecasts[shown, column], color="tab:orange", linewidth=0.9,
                  label="forecast 1 step ahead", gid="one_step")
        for i, origin in enumerate(fan):
            last = i == len(fan) - 1
            if last:
                style = {"color": "tab:red", "linewidth": 2.2, "markersize": 4, "gid": "last_path",
                         "label": f"{h}-step forecast from {where(origin)} (the last origin)"}
            else:
                style = {"color": "tab:blue", "linewidth": 0.9, "alpha": 0.75, "markersize": 2.5, "gid": "path",
                         "label": f"{h}-step forecasts from {len(fan) - 1} earlier origins" if i == 0 else "_path"}
            axes.plot(x[origin:origin + h], paths[i, :, column], marker="o", markevery=[0], **style)
        axes.set_ylabel(name)
        axes.grid(alpha=0.3, linewidth=0.5)
    bottom = panels[-1, 0]
    if run.dates is not None:
        import matplotlib.dates as mdates

        locator = mdates.AutoDateLocator()
        bottom.xaxis.set_major_locator(locator)
        bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        bottom.set_xlabel("date")
        figure.autofmt_xdate(rotation=30)
    else:
        bottom.set_xlabel("test step")
    name = run.run_dir.resolve().name
    label = name if run.model in ("", name) else f"{name} ({run.model})"
    ahead = "one step ahead" if h == 1 else f"horizon {h}: 1 to {h} steps ahead"
    figure.suptitle(f"{label}: test forecasts, {ahead}")
    panels[0, 0].set_title(f"test steps {int(run.steps[start])} to {int(run.steps[end - 1])} of {run.n_steps}"
                           + (f", {where(start)} to {where(end - 1)}" if run.dates is not None else "")
                           + ("" if end - start >= h else f" (too short for a {h}-step path)"),
                           fontsize="small")
    handles, labels = panels[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=min(len(handles), 4), fontsize="small",
                  frameon=False)
    return figure


def plot_forecasts(run_dir: str | Path, output: str | Path, *, variables: list[str] | None = None,
                   start: int | None = None, end: int | None = None, origins: int = MAX_FAN_PATHS) -> Path:
    """Draw the truth and the forecasts of ``variables`` (default: the first two) over test steps ``start`` to
    ``end`` (default: the last ``default_steps(horizon)``), one panel each, to ``output`` (png, pdf or svg, by its
    suffix); for a horizon h > 1 with the h-step paths of at most ``origins`` origins (0: none)."""
    plt = pyplot(output)
    figure = forecast_figure(plt, run_dir, variables=variables, start=start, end=end, origins=origins)
    return save(figure, output)
