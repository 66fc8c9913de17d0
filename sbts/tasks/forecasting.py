"""Forecasting every variable of one multivariate series, one step (paper-spec §1.4, §5.3) or ``horizon`` steps
ahead.

Data flow: series (with dates, or not) -> split in time (the Informer split for ETT, fractions or dates,
or the user's split files) -> variables z-scored with the training rows' statistics only -> windows of
``w`` = model ``max_len`` rows whose last row, the first step to forecast (the origin), is zeroed
(``sbts.heads.forecasting``) -> the model's last-step output holds the forecasts of the origin and the
h - 1 steps after it (in the other formulations, changes from the last observed row, or values on the
window's own scale) -> MSE/MAE against the truth on the standardised scale and in original units, per step
ahead and averaged, next to persistence, seasonal persistence, the window mean, ridge regression and ridge per
variable at the same horizon and origins.

Training uses the windows lying wholly in the training rows with their h targets (every ``stride`` steps).
Every validation and test origin (each row whose h steps lie in its period) is forecast exactly once, from
the rows before it (the end of the training, or validation, period for the first ones). The epoch is
selected on validation MSE, never on test data.
"""

from __future__ import annotations

import io
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from sbts.baselines.forecasting import BASELINES, SeasonalPersistence
from sbts.config import RunConfig, TaskOptions, check_positive_int
from sbts.data.forecasting import (DEFAULT_FRACTIONS, SPLIT_METHODS, ForecastData, SplitBounds,
                                   canonical_forecasting_spec, load_forecasting, split_bounds)
from sbts.data.preprocessing import ChannelScaler
from sbts.data.windows import check_series, check_window_fits, training_window_starts, windows_ending_at_every_step
from sbts.errors import ConfigError, DataError, SBTSError
from sbts.heads.forecasting import (INPUT_NORMS, TARGETS, Formulation, ForwardLast, WindowForecastStream,
                                    forecast_every_step_with, forecast_next, prepare_windows)
from sbts.metrics.forecasting import FORECAST_METRIC_NOTES, forecast_errors
from sbts.metrics.reported import MINIMIZE, ReportedMetric
from sbts.runtime.streaming import CachedForecastStream
from sbts.tasks.base import DataSource, Task, TaskReport
from sbts.tasks.estimator import IN_MEMORY, SBTEstimator
from sbts.heads.network import SeriesNetwork
from sbts.tasks.runs import (SharedBlock, SharedBlocks, last_step_function, series_network, shared_block_loss,
                             trains_shared)

TASK = "forecasting"
DEFAULT_WINDOW = 96  # without a paper preset; the paper uses 200 (199 observed steps and the target slot)

CONTEXT_RULE = ("every validation and test origin (each row whose next h steps lie in its period) forecast exactly "
                "once, from the w-1 rows before it (the first ones read the end of the preceding period); training "
                "windows and their h targets lie wholly in the training rows")
PREDICTIONS_FILE = "test_predictions.csv"  # truth and one-step-ahead forecast of every test origin
FORECASTS_FILE = "test_forecasts.npy"  # every step ahead, when the horizon is more than one


@dataclass
class ForecastOptions(TaskOptions):
    """How the series is split and what the network's output means (``task_options`` of a run)."""

    split: str = field(default="auto", metadata={
        "help": "auto: informer (12/4/4 months) for ETT, the files' split for TRAIN,VAL,TEST, else fraction",
        "choices": SPLIT_METHODS})
    fractions: list[float] | None = field(default=None, metadata={"help": "split fraction: train,val,test"})
    train_end: str | None = field(default=None, metadata={"help": "split dates: the first validation date"})
    val_end: str | None = field(default=None, metadata={"help": "split dates: the first test date"})
    test_end: str | None = field(default=None, metadata={"help": "split dates: the first date after the test period"})
    # change on each window's own scale won the recipe sweep on validation MSE (sbts/sweep/named/
    # recipe-forecasting.yaml); the paper's formulation is target value, input_norm none (the paper presets).
    target: str = field(default="change", metadata={
        "help": "value (the paper) or change from the last observed step (a residual to persistence)",
        "choices": TARGETS})
    input_norm: str = field(default="window", metadata={
        "help": "none (the paper; streams incrementally) or window: each window on its own mean and std",
        "choices": INPUT_NORMS})
    horizon: int = field(default=1, metadata={
        "help": "steps ahead forecast from each origin, all at once by the last step's head (1: the paper)"})
    seasonal_period: int | None = field(default=None, metadata={
        "help": "the season of the seasonal-persistence baseline, in steps"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.split not in SPLIT_METHODS:
            raise ConfigError(f"split must be one of {', '.join(SPLIT_METHODS)}; got {self.split!r}")
        if self.fractions is not None:
            if (not isinstance(self.fractions, (list, tuple)) or len(self.fractions) != 3
                    or not all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in self.fractions)):
                raise ConfigError(f"fractions must be three numbers (train, validation, test); got {self.fractions!r}")
            self.fractions = [float(f) for f in self.fractions]
        for name in ("train_end", "val_end", "test_end"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a date string, got {getattr(self, name)!r}")
        if self.split != "dates" and any(getattr(self, n) for n in ("train_end", "val_end", "test_end")):
            raise ConfigError(f"train_end, val_end and test_end apply to split 'dates', not {self.split!r}")
        self.formulation  # checks target, input_norm and horizon
        if self.seasonal_period is not None:
            check_positive_int(self.seasonal_period, "seasonal_period")

    @property
    def formulation(self) -> Formulation:
        return Formulation(self.target, self.input_norm, self.horizon)

    def bounds(self, data: ForecastData, fit_only: bool = False) -> SplitBounds:
        """The split of the series; ``fit_only`` (an estimator's fit: no test period): training and validation
        rows in the proportion of the fractions' first two."""
        if not fit_only:
            return split_bounds(data, self.split, fractions=self.fractions, train_end=self.train_end,
                                val_end=self.val_end, test_end=self.test_end)
        if self.split not in ("auto", "fraction"):
            raise ConfigError(f"split {self.split!r}: fit(y) splits y by fraction (its training and validation "
                              "shares); give split 'auto' or 'fraction'")
        f_train, f_val, _ = self.fractions or DEFAULT_FRACTIONS
        n = len(data.values)
        train_end = int(n * f_train / (f_train + f_val))
        return SplitBounds(train_end, n, n, "fraction")


# --- data: windows over the scaled series ------------------------------------------------------

class ForecastWindows(Dataset):
    """Training or selection examples: the window ending at each of ``ends`` (rows of a scaled (n, D) series, the
    origins), prepared for the network, with the true values (h, D) of its last row and the h - 1 after it."""

    def __init__(self, rows: np.ndarray, window: int, ends: np.ndarray, formulation: Formulation):
        self.rows, self.window, self.ends, self.formulation = rows, window, ends, formulation

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        end = int(self.ends[index])
        window = self.rows[end - self.window + 1:end + 1]
        prepared = prepare_windows(window[None], self.formulation)
        ahead = self.rows[None, end:end + self.formulation.horizon]
        return tuple(torch.from_numpy(np.ascontiguousarray(a[0])) for a in (prepared.x, ahead, prepared.base,
                                                                             prepared.scale, prepared.offset))


@dataclass
class ForecastSplits:
    """A series split in time and scaled with the training rows' statistics: ``rows[:train_end]`` train,
    ``rows[train_end:val_end]`` validate, ``rows[val_end:test_end]`` test. A split's forecast origins are its rows
    whose next ``horizon`` steps all lie in it (every row, for one step ahead)."""

    name: str
    window: int
    stride: int
    formulation: Formulation
    scaler: ChannelScaler
    rows: np.ndarray  # scaled float32 (test_end, D)
    bounds: SplitBounds
    columns: list[str]
    dates: np.ndarray | None = None
    files: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def n_channels(self) -> int:
        return self.rows.shape[1]

    @property
    def horizon(self) -> int:
        return self.formulation.horizon

    def span(self, split: str) -> tuple[int, int]:
        """The split's forecast origins, ``start:end`` (training: those of whole windows)."""
        b, ahead = self.bounds, self.horizon - 1
        start, end = {"train": (self.window - 1, b.train_end), "val": (b.train_end, b.val_end),
                      "test": (b.val_end, b.test_end)}[split]
        return start, max(start, end - ahead)

    def targets(self, split: str) -> np.ndarray:
        """Read-only view (n, h, D): the scaled true rows of each of the split's origins and the h - 1 after it."""
        start, end = self.span(split)
        if end <= start:
            return np.empty((0, self.horizon, self.n_channels), np.float32)
        return windows_ending_at_every_step(self.rows[start:end + self.horizon - 1], self.horizon)

    def windows(self, split: str) -> np.ndarray:
        """Read-only view (n, w, D): the window ending at each of the split's forecast steps."""
        start, end = self.span(split)
        if end <= start:
            return np.empty((0, self.window, self.n_channels), np.float32)
        return windows_ending_at_every_step(self.rows[start - self.window + 1:end], self.window)

    def train_ends(self) -> np.ndarray:
        """The training origins: windows every ``stride`` steps whose next ``horizon`` rows are training rows."""
        usable = self.bounds.train_end - (self.horizon - 1)
        return training_window_starts(usable, self.window, self.stride) + self.window - 1

    def train_set(self) -> ForecastWindows:
        return ForecastWindows(self.rows, self.window, self.train_ends(), self.formulation)

    def train_blocks(self, block: int) -> SharedBlocks:
        """The training targets in blocks of ``block`` consecutive ones, for the shared pass (``input_norm`` none:
        a window normalised by its own steps has no shared pass)."""
        return SharedBlocks(self.rows, self.window, self.train_ends(), [(0, self.bounds.train_end)], block,
                            zeroed=True, change=self.formulation.target == "change", horizon=self.horizon)

    def val_set(self) -> ForecastWindows | None:
        """Windows ending at every ``stride``-th validation row (the last included), to select the epoch."""
        start, end = self.span("val")
        if end == start:
            return None
        ends = start + training_window_starts(end - start, 1, self.stride)
        return ForecastWindows(self.rows, self.window, ends, self.formulation)


def split_and_scale(data: ForecastData, bounds: SplitBounds, *, window: int, stride: int, formulation: Formulation,
                    scaler: ChannelScaler | None = None, require_test: bool = True) -> ForecastSplits:
    """Fit the scaler on the training rows only, scale every row up to the end of the test period."""
    if window < 2:
        raise ConfigError(f"the window (model max_len) must be at least 2 (observed steps and the target slot); got "
                          f"{window}")
    ahead = formulation.horizon - 1  # a training window's last h - 1 targets follow it
    check_window_fits(bounds.train_end - ahead, window, f"{data.name}: the training period ({bounds.method} split"
                      + (f", less the {ahead} steps after a window's origin that horizon {ahead + 1} forecasts)"
                         if ahead else ")"))
    if require_test and bounds.test_end - bounds.val_end < formulation.horizon:
        raise DataError(f"{data.name}: the {bounds.method} split leaves {bounds.test_end - bounds.val_end} test rows, "
                        f"fewer than the horizon of {formulation.horizon}")
    if scaler is None:
        scaler = ChannelScaler().fit([data.values[:bounds.train_end].T])  # statistics of the training rows only
    return ForecastSplits(data.name, window, stride, formulation, scaler,
                          scaler.transform_rows(data.values[:bounds.test_end]), bounds, list(data.columns),
                          None if data.dates is None else data.dates[:bounds.test_end], data.files)


# --- the training objective ---------------------------------------------------------------------

def _forecast(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Forecasts (B, h, D) of a batch of prepared windows."""
    x, ahead, base, scale, offset = batch
    output = model(x, last_step_only=True)[:, 0].reshape(ahead.shape)
    return (base[:, None] + output) * scale[:, None] + offset[:, None]


def forecast_split(network: SeriesNetwork, splits: ForecastSplits, split: str) -> np.ndarray:
    """The scaled forecasts (n, h, D) of every origin of a split, each from the rows before it (through the shared
    pass of a streamable model)."""
    start, end = splits.span(split)
    return forecast_every_step_with(network, splits.rows[start:end], splits.window, splits.formulation,
                                    context=splits.rows[:start])


# --- the report ---------------------------------------------------------------------------------

def baseline_report(splits: ForecastSplits, seasonal_period: int | None = None) -> dict[str, Any]:
    """Persistence, seasonal persistence (``seasonal_period``, or the season detected in the training rows), the
    window mean and the two ridges (``sbts.baselines.forecasting``) at the run's horizon, fitted on the model's
    training origins (ridge's penalty on validation), evaluated on every validation and test origin."""
    std = splits.scaler.std
    origins = {split: np.arange(*splits.span(split)) for split in ("val", "test")}
    options = {SeasonalPersistence.name: {"period": seasonal_period}}
    report: dict[str, Any] = {}
    for baseline in BASELINES:
        start = time.perf_counter()
        fitted = baseline(splits.window, splits.horizon, **options.get(baseline.name, {})).fit(
            splits.rows, splits.train_ends(), origins["val"] if len(origins["val"]) else None)
        entry: dict[str, Any] = fitted.describe()
        for split, at in origins.items():
            if len(at):
                entry[split] = _errors(fitted.predict(splits.rows, at), splits, split, std)
        entry["seconds"] = round(time.perf_counter() - start, 3)
        report[baseline.name] = entry
    return report


def _errors(forecasts: np.ndarray, splits: ForecastSplits, split: str, std: np.ndarray) -> dict[str, Any]:
    return forecast_errors(forecasts, splits.targets(split), std, splits.columns)


def comparison(test: dict[str, Any], baselines: dict[str, Any]) -> dict[str, Any]:
    """The model's test MSE against each baseline's (ratio below 1: the model is better; a baseline without
    error gives an infinite ratio, or 1 when the model has none either)."""
    errors = {name: entry["test"]["mse"] for name, entry in baselines.items()}
    ratios = {name: test["mse"] / mse if mse > 0 else (float("inf") if test["mse"] > 0 else 1.0)
              for name, mse in errors.items()}
    return {"mse_ratio_to": ratios, "best_baseline": min(errors, key=errors.get),
            "beats_every_baseline": all(test["mse"] < mse for mse in errors.values())}


def split_record(splits: ForecastSplits) -> dict[str, Any]:
    b = splits.bounds
    periods = {"train": (0, b.train_end), "val": (b.train_end, b.val_end), "test": (b.val_end, b.test_end)}
    record: dict[str, Any] = {**b.to_dict(), "rows": {split: end - start for split, (start, end) in periods.items()},
                              "training_windows": len(splits.train_set())}
    if splits.dates is not None:
        record["dates"] = {split: [str(splits.dates[start]), str(splits.dates[end - 1])]
                           for split, (start, end) in periods.items() if end > start}
    return record


def write_predictions_csv(splits: ForecastSplits, forecasts: np.ndarray) -> bytes:
    """One row per test origin in original units: step, date (when known), then each variable's true value and
    its forecast one step ahead (``<name>`` and ``<name>_forecast``; every step ahead: ``write_forecasts_npy``)."""
    start, end = splits.span("test")
    truth = splits.scaler.inverse_transform_rows(splits.rows[start:end])
    predicted = splits.scaler.inverse_transform_rows(forecasts[:, 0])
    header = ["step"] + (["date"] if splits.dates is not None else [])
    header += [name for column in splits.columns for name in (column, f"{column}_forecast")]
    values = np.empty((len(truth), 2 * truth.shape[1]))
    values[:, 0::2], values[:, 1::2] = truth, predicted
    buffer = io.StringIO()
    buffer.write(",".join(header) + "\n")
    dates = None if splits.dates is None else splits.dates[start:end].astype(str)
    for i, row in enumerate(values):
        prefix = f"{i}," + (f"{dates[i]}," if dates is not None else "")
        buffer.write(prefix + ",".join(f"{v:.9g}" for v in row) + "\n")
    return buffer.getvalue().encode()


def write_forecasts_npy(splits: ForecastSplits, forecasts: np.ndarray) -> bytes:
    """Every test origin's forecasts (n, h, D) in original units, float32, as a plain ``.npy`` (no pickle): row i
    is made at the i-th row of test_predictions.csv, step k ahead of it at ``[i, k - 1]``."""
    buffer = io.BytesIO()
    np.save(buffer, splits.scaler.inverse_transform_rows(forecasts).astype(np.float32), allow_pickle=False)
    return buffer.getvalue()


# --- the task ---------------------------------------------------------------------------------

class ForecastTask(Task):
    """MSE between the forecast and the true last row (mean over variables and windows); selection on the
    validation MSE; every validation and test row forecast once, next to the baselines."""

    name = TASK
    options_class = ForecastOptions
    option_names = {"fractions": "split_fractions"}
    excluded_train_options = ("val_fraction",)  # the split decides the validation rows
    baseline_options = ("window", "horizon", "seasonal_period", "split", "split_fractions")
    # Paper-spec §1.4: batch 128, x0.75 learning rate on plateaus, early stopping after 5 epochs, 50 epochs (ETTm1);
    # d_model 64, the paper's ETTm1 width, is ModelConfig's default.
    # head_activation none: with relu, a forecaster whose last-step features all fall below zero outputs a constant
    # (exactly persistence for target change) and gets no gradient again (the collapse of issue 16).
    defaults = {"window": DEFAULT_WINDOW, "epochs": 50, "batch_size": 128, "patience": 5, "lr_decay_on_plateau": True,
                "head_activation": "none"}
    auto_help = {"split_fractions": ",".join(map(str, DEFAULT_FRACTIONS)),
                 "train_end": "none (split dates only)", "val_end": "none (split dates only)",
                 "test_end": "the end of the series (split dates only)",
                 "seasonal_period": "detected in the training rows' autocorrelation"}
    # LayerNorm over time for both; Step-T attention for the SBT, full attention for dense.
    excluded_model_options = ()
    model_defaults = {"sbt": {"attention": "step_t", "norm": "layer_time"},
                      "dense": {"attention": "full", "norm": "layer_time"}}
    state_keys = frozenset({"scaler", "files", "columns"})
    data_help = ("ETT/ETTm1, ETT/ETTh1, exchange_rate, weather, illness, or a series file or TRAIN[,VAL],TEST "
                 "(csv, txt or npy)")
    canonical_data = staticmethod(canonical_forecasting_spec)
    validation_objective = ReportedMetric("mse", MINIMIZE, "validation MSE (scaled)")
    test_metrics = (ReportedMetric("mse", MINIMIZE, "test MSE (scaled)"),
                    ReportedMetric("mae", MINIMIZE, "test MAE (scaled)"))

    # --- data -------------------------------------------------------------------------------------------
    def load(self, data: str, missing_value: float | None = None) -> DataSource:
        spec = self.canonical_data(data)
        return DataSource(spec, load_forecasting(spec, missing_value=missing_value))

    def complete_model(self, fields: dict[str, Any], source: DataSource, options: ForecastOptions) -> dict[str, Any]:
        """The forecaster forecasts every variable of the series, ``horizon`` steps ahead (h x D outputs)."""
        n_channels = source.data.n_channels
        if options.horizon > 1 and fields.get("out_dim") == n_channels:  # a one-step config (a paper preset's)
            raise ConfigError(f"model out_dim is {n_channels} in the config, one step of the {n_channels} variables; "
                              f"horizon {options.horizon} needs {n_channels * options.horizon}: leave out_dim out of "
                              "the config (it follows from the data and the horizon)")
        return self.channels_in_and_out(fields, n_channels, "variables", n_channels * options.horizon)

    def prepare(self, source: DataSource, run: RunConfig, state: dict[str, Any] | None = None) -> ForecastSplits:
        options = ForecastOptions.from_dict(run.task_options)
        scaler = ChannelScaler.from_dict(state["scaler"]) if state else None
        bounds = options.bounds(source.data, source.fit_only)
        if options.seasonal_period is not None and options.seasonal_period > bounds.train_end:
            raise ConfigError(f"seasonal_period {options.seasonal_period}: longer than the {bounds.train_end} training "
                              "rows, so the seasonal baseline has no season to repeat; give a shorter one")
        return split_and_scale(source.data, bounds, window=run.model.max_len, stride=run.train.stride,
                               formulation=options.formulation, scaler=scaler, require_test=not source.fit_only)

    def task_state(self, data: ForecastSplits) -> dict[str, Any]:
        return {"scaler": data.scaler.to_dict(), "files": data.files, "columns": data.columns}

    # --- what the output means -----------------------------------------------------------------------------
    def datasets(self, data: ForecastSplits, run: RunConfig):
        shared = trains_shared(run.model) and data.formulation.input_norm == "none"
        return data.train_blocks(run.train.batch_size) if shared else data.train_set(), data.val_set()

    def training_loss(self, model, batch):
        if isinstance(batch, SharedBlock):
            return shared_block_loss(model, batch)
        return F.mse_loss(_forecast(model, batch), batch[1])

    @torch.no_grad()
    def evaluate(self, model, dataset, batch_size, device) -> dict[str, float]:
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        for batch in DataLoader(dataset, batch_size=batch_size):
            batch = tuple(t.to(device) for t in batch)
            total += float((_forecast(model, batch) - batch[1]).square().mean((1, 2)).sum())
            count += len(batch[0])
        model.train(was_training)
        return {"loss": total / max(count, 1), "n": count}

    # --- the report -------------------------------------------------------------------------------------------
    def report(self, run: RunConfig, model: torch.nn.Module, data: ForecastSplits, device: torch.device) -> TaskReport:
        """The model's errors next to the baselines', and the test forecasts as a csv."""
        network = series_network(model, device)
        std = data.scaler.std
        has_val = data.span("val")[1] > data.span("val")[0]
        val = _errors(forecast_split(network, data, "val"), data, "val", std) if has_val else {}
        start = time.perf_counter()
        test_forecasts = forecast_split(network, data, "test")
        test_seconds = time.perf_counter() - start
        test = _errors(test_forecasts, data, "test", std)
        baselines = baseline_report(data, ForecastOptions.from_dict(run.task_options).seasonal_period)
        files = {PREDICTIONS_FILE: write_predictions_csv(data, test_forecasts)}
        if data.horizon > 1:
            files[FORECASTS_FILE] = write_forecasts_npy(data, test_forecasts)
        metrics: dict[str, Any] = {
            "window": run.model.max_len, "stride": run.train.stride, "horizon": data.horizon,
            "formulation": data.formulation.to_dict(),
            "paper_formulation": data.formulation.is_paper, "split": split_record(data),
            "val": val, "test": test, "baselines": baselines, "compared_with_baselines": comparison(test, baselines),
            "test_forecast_seconds": round(test_seconds, 3), "context_rule": CONTEXT_RULE,
            "selection": ("lowest validation MSE (every stride-th validation row, during training)" if val else
                          "lowest training loss (no validation rows)") + "; test data is never used to select",
            "metric_notes": FORECAST_METRIC_NOTES, "predictions_file": PREDICTIONS_FILE,
        }
        if data.horizon > 1:
            metrics["forecasts_file"] = FORECASTS_FILE
        return TaskReport(metrics, files)

    def inference_state(self, run, state, run_dir, checkpoint, epoch) -> dict[str, Any]:
        return {"formulation": ForecastOptions.from_dict(run.task_options).formulation.to_dict(),
                "columns": state["columns"]}


# --- scikit-learn style estimator --------------------------------------------------------------

class SBTForecaster(SBTEstimator):
    """Sparse binary (or dense) Transformer forecaster of every variable of a series, ``horizon`` steps ahead.

    ``fit(y)`` trains on ``y`` (n_steps, n_variables; a DataFrame keeps its column names, recorded in the
    exported artifact, and its index), holding out its end to select the epoch: the training and validation
    shares of ``split_fractions`` (70:10 by default, so the last 12.5 %; y has no test period).
    ``predict(fh)`` forecasts the steps ``fh`` after the end of ``y`` (or of a history given as ``y=``): an int k
    for steps 1..k, or a list of steps ahead (1-based) up to ``horizon``; a DataFrame (or Series) in gives one
    out, its index continued at the series' frequency, an array in gives an array (len(fh), n_variables).
    ``predict_every_step(y, context)`` gives the forecasts (n_steps, horizon, n_variables) made at every row of
    ``y`` from the rows before it (``context``: rows that precede ``y``). Values are in the data's own units.
    With fewer than ``window - 1`` rows of history the earliest row stands in for the missing ones. Exogenous
    ``X`` is refused: the forecasts read only the variables' own past.
    """

    task_class = ForecastTask
    excluded_options = ("train_end", "val_end", "test_end")  # fit(y) splits y by fraction: no dates

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        tags.target_tags.required = False  # the series is the target: fit(y)
        return tags

    def fit(self, y, X=None):
        """Train on the series ``y`` (n_steps, n_variables). Exogenous ``X`` is refused (never ignored)."""
        _refuse_exogenous(X)
        columns = _column_names(y)
        values = check_series(y, None, "y")
        columns = columns or [f"x{i}" for i in range(values.shape[1])]
        data = ForecastData("y", values, columns, None, {})
        self._fit_source(DataSource(IN_MEMORY, data, fit_only=True))
        recent = slice(-(self.config_.max_len - 1), None)  # what a forecast after the series reads, as y came
        self.last_y_ = y.iloc[recent] if _index_of(y) is not None else values[recent]
        self.fit_index_ = _index_of(y)  # whole: its frequency or step continues the forecasts' index
        return self

    def _fitted(self, task, splits: ForecastSplits, device) -> None:
        self.formulation_ = splits.formulation
        self.columns_ = list(splits.columns)
        self.feature_names_in_ = np.asarray(self.columns_, dtype=object)

    def _forward_last(self) -> ForwardLast:
        return last_step_function(self.model_, self.device_)

    def _scaled(self, rows, where: str) -> np.ndarray:
        names = _column_names(rows)
        if names is not None and names != self.columns_:
            raise SBTSError(f"{where}: columns {names} are not the fitted variables {self.columns_} (in that order)")
        return self.scaler_.transform_rows(check_series(rows, self.n_features_in_, where, owner=type(self).__name__))

    def predict(self, fh=None, y=None, X=None):
        """The forecasts of the steps ``fh`` ahead (default: 1 to ``horizon``) after the end of the fitted series,
        or after the history ``y`` (n_steps >= 1, n_variables): (len(fh), n_variables), as ``y`` came (a
        DataFrame with its index continued, or an array)."""
        self._check_fitted()
        _refuse_exogenous(X)
        steps = fh_steps(fh, self.formulation_.horizon)
        history = self.last_y_ if y is None else y
        scaled = forecast_next(self._forward_last(), self._scaled(history, "y"), self.config_.max_len,
                               self.formulation_)
        forecasts = self.scaler_.inverse_transform_rows(scaled)[steps - 1]
        index = self.fit_index_ if y is None else _index_of(y)
        if index is None:
            return forecasts
        future = IndexContinuation.of(index, "the fitted y" if y is None else "y").future(steps)
        pandas = optional_pandas()
        if history.ndim == 1:
            return pandas.Series(forecasts[:, 0], index=future, name=history.name)
        return pandas.DataFrame(forecasts, index=future, columns=self.columns_)

    def predict_every_step(self, y, context=None) -> np.ndarray:
        """The forecasts (n_steps, horizon, n_variables) made at every row of ``y`` from the rows before it: row i
        holds those of rows i, ..., i + horizon - 1."""
        self._check_fitted()
        before = None if context is None else self._scaled(context, "context")
        scaled = forecast_every_step_with(series_network(self.model_, self.device_), self._scaled(y, "y"),
                                          self.config_.max_len, self.formulation_, context=before)
        return self.scaler_.inverse_transform_rows(scaled)

    def stream(self, context=None) -> CachedForecastStream | WindowForecastStream:
        """Forecast one observation at a time: ``stream.update(x_t)`` is the forecasts (horizon, n_variables) of
        steps t + 1, ..., as ``predict`` on the stream so far (and ``context``). A streamable model
        (``config_.streamable``, ``input_norm`` none) costs one step per observation, in numpy with per-layer
        caches; another recomputes the window."""
        self._check_fitted()

        def unscale(rows: np.ndarray) -> np.ndarray:
            return self.scaler_.inverse_transform_rows(rows)

        def scale(rows: np.ndarray) -> np.ndarray:
            return self.scaler_.transform_rows(rows)

        if self.config_.streamable and self.formulation_.input_norm == "none":
            return CachedForecastStream(self._step_stream(), self.formulation_, scale, unscale, context)
        return WindowForecastStream(self._forward_last(), self.config_.max_len, self.n_features_in_,
                                    self.formulation_, scale, unscale, context)

    def _inference_state(self) -> dict[str, Any]:
        return {"formulation": self.formulation_.to_dict(), "columns": self.columns_}


def _refuse_exogenous(X) -> None:
    if X is not None:
        raise SBTSError("exogenous X is not supported: SBTForecaster forecasts the variables of y from their own "
                        "past only; leave X out (or add known covariates to y as variables)")


def _column_names(y) -> list[str] | None:
    if hasattr(y, "columns"):
        return [str(c) for c in y.columns]
    if hasattr(y, "index") and getattr(y, "ndim", None) == 1:  # a pandas Series: one variable
        return [str(y.name) if y.name is not None else "x0"]
    return None


def _index_of(y):
    """The pandas index of ``y`` (None for arrays)."""
    return getattr(y, "index", None) if hasattr(y, "iloc") else None


def optional_pandas():
    """pandas, for pandas out: only a pandas input asks for it, so it is already imported (sbts does not need
    pandas)."""
    return sys.modules["pandas"]


def fh_steps(fh, horizon: int) -> np.ndarray:
    """``fh`` as 1-based steps ahead: None for 1..horizon, an int k for 1..k, or a list of distinct steps (each at
    most ``horizon``: a direct forecaster forecasts no further)."""
    if fh is None:
        return np.arange(1, horizon + 1)
    wrong = ("fh must be an int or a list of whole steps ahead (1-based); got {} (to forecast after a history, pass "
             "it as y=)")
    if hasattr(fh, "iloc"):  # a Series or DataFrame is a history passed where the steps go
        raise ConfigError(wrong.format(f"a {type(fh).__name__} of shape {np.shape(fh)}"))
    if isinstance(fh, (int, np.integer)) and not isinstance(fh, bool):
        if not 1 <= fh <= horizon:
            raise ConfigError(f"fh: step {int(fh)} ahead is outside 1..{horizon}, the steps this forecaster forecasts "
                              "(its horizon)")
        return np.arange(1, int(fh) + 1)
    try:
        steps = np.asarray(getattr(fh, "to_numpy", lambda: fh)())
    except (ValueError, TypeError):
        steps = np.empty(0, dtype=object)
    if steps.ndim != 1 or not len(steps) or steps.dtype.kind not in "iu":
        raise ConfigError(wrong.format(f"a {type(fh).__name__} of shape {np.shape(steps)}" if steps.ndim > 1
                                       else repr(fh)[:80]))
    bad = steps[(steps < 1) | (steps > horizon)]
    if len(bad):
        raise ConfigError(f"fh: step {int(bad[0])} ahead is outside 1..{horizon}, the steps this forecaster "
                          f"forecasts (its horizon)")
    values, counts = np.unique(steps, return_counts=True)
    if (counts > 1).any():
        raise ConfigError(f"fh: step {int(values[counts > 1][0])} ahead is given twice")
    return steps.astype(np.int64)


@dataclass(frozen=True)
class IndexContinuation:
    """How a pandas index goes on after its last entry: dates or periods at their frequency, integers at their
    constant step (taken from the whole index the series came with)."""

    kind: str  # "dates", "periods" or "integers"
    last: Any
    step: Any  # a pandas offset, or an int
    name: Any = None

    @classmethod
    def of(cls, index, where: str) -> IndexContinuation:
        """The continuation of ``index``, or a one-line DataError saying why it has none."""
        pandas = optional_pandas()
        if isinstance(index, pandas.PeriodIndex):
            return cls("periods", index[-1], 1, index.name)
        if isinstance(index, pandas.DatetimeIndex):
            freq = index.freq or index.inferred_freq if len(index) >= 3 else index.freq
            if freq is None:
                raise DataError(f"{where}: its dates have no regular frequency to continue the forecasts' index at; "
                                "give the index a freq, or pass the values as an array")
            return cls("dates", index[-1], pandas.tseries.frequencies.to_offset(freq), index.name)
        if index.dtype.kind in "iu":
            values = index.to_numpy().astype(np.int64)
            steps = np.diff(values)
            if len(steps) and not (steps == steps[0]).all():
                raise DataError(f"{where}: its integer index has no constant step to continue the forecasts' index "
                                "at; pass the values as an array")
            return cls("integers", int(values[-1]), int(steps[0]) if len(steps) else 1, index.name)
        raise DataError(f"{where}: its index ({index.dtype}) is neither dates, periods nor integers: the forecasts' "
                        "index cannot continue it; pass the values as an array")

    def future(self, steps: np.ndarray):
        """The index of the steps ``steps`` ahead (1-based) of the last entry."""
        pandas = optional_pandas()
        if self.kind == "integers":
            return pandas.Index(self.last + self.step * steps, name=self.name)
        if self.kind == "periods":
            return pandas.PeriodIndex([self.last + int(k) for k in steps], name=self.name)
        contiguous = bool((steps == np.arange(1, len(steps) + 1)).all())
        return pandas.DatetimeIndex([self.last + int(k) * self.step for k in steps], name=self.name,
                                    freq=self.step if contiguous else None)
