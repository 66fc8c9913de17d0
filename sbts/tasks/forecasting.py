"""Single-step forecasting of every variable of one multivariate series (paper-spec §1.4, §5.3).

Data flow: series (with dates, or not) -> split in time (the Informer split for ETT, fractions or dates,
or the user's split files) -> variables z-scored with the training rows' statistics only -> windows of
``w`` = model ``max_len`` rows whose last row, the step to forecast, is zeroed (``sbts.runtime.forecasting``)
-> the model's last-step output is the forecast (or, in the other formulations, the change from the last
observed row, or a value on the window's own scale) -> MSE/MAE against the truth on the standardised
scale and in original units, next to persistence, the window mean and ridge regression on the same
windows.

Training uses the windows lying wholly in the training rows (every ``stride`` steps). Every validation
and test row is forecast exactly once, from the rows before it (the end of the training, or validation,
period for the first ones). The epoch is selected on validation MSE, never on test data.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from sklearn.base import BaseEstimator
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from sbts.atomic import atomic_write_bytes
from sbts.baselines.forecasting import BASELINES
from sbts.config import ModelConfig, RunConfig, TaskOptions, TrainConfig
from sbts.data.forecasting import (SPLIT_METHODS, ForecastData, SplitBounds, canonical_forecasting_spec,
                                   load_forecasting, split_bounds)
from sbts.data.preprocessing import ChannelScaler
from sbts.data.windows import check_window_fits, training_window_starts, windows_ending_at_every_step
from sbts.errors import ConfigError, DataError, SBTSError
from sbts.metrics.forecasting import FORECAST_METRIC_NOTES, forecast_errors
from sbts.models import create_model, model_config
from sbts.runtime.anomaly import check_series
from sbts.runtime.forecasting import (ForwardLast, Formulation, forecast_every_step, forecast_next,
                                      prepare_windows)
from sbts.tasks.runs import (TaskHooks, TrainedRun, check_files_unchanged, fit_run, last_step_function, load_run_model,
                             reload_trained, training_record)
from sbts.training import Trainer, atomic_write_json, seed_everything

TASK = "forecasting"
DEFAULT_WINDOW = 96  # without a paper preset; the paper uses 200 (199 observed steps and the target slot)
DEFAULT_D_MODEL = 64  # the paper's ETTm1 width

# Paper-spec §1.4: LayerNorm over time for both; Step-T attention for the SBT, full attention for dense.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "sbt": {"attention": "step_t", "norm": "layer_time"},
    "dense": {"attention": "full", "norm": "layer_time"},
}
# Paper-spec §1.4: batch 128, x0.75 learning rate on plateaus, early stopping after 5 epochs, 50 epochs (ETTm1).
TRAIN_DEFAULTS: dict[str, Any] = {"epochs": 50, "batch_size": 128, "patience": 5, "lr_decay_on_plateau": True}
CONTEXT_RULE = ("every validation and test row forecast exactly once, from the w-1 rows before it (the first ones "
                "read the end of the preceding period); training windows lie wholly in the training rows")


@dataclass
class ForecastOptions(TaskOptions):
    """How the series is split and what the network's output means (``task_options`` of a run)."""

    split: str = "auto"  # auto: the Informer split for ETT, the files' split for split files, else fractions
    fractions: list[float] | None = None  # split "fraction": train, validation, test (default 0.7, 0.1, 0.2)
    train_end: str | None = None  # split "dates": the first validation date
    val_end: str | None = None  # split "dates": the first test date
    test_end: str | None = None  # split "dates": the first date after the test period (default: the end)
    target: str = "value"  # "value" (the paper) or "change" (from the last observed row: a residual to persistence)
    input_norm: str = "none"  # "none" (the paper) or "window" (each window on its own mean and std)

    def __post_init__(self) -> None:
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
        Formulation(self.target, self.input_norm)  # checks both

    @property
    def formulation(self) -> Formulation:
        return Formulation(self.target, self.input_norm)

    def bounds(self, data: ForecastData) -> SplitBounds:
        return split_bounds(data, self.split, fractions=self.fractions, train_end=self.train_end,
                            val_end=self.val_end, test_end=self.test_end)


# --- data: windows over the scaled series ------------------------------------------------------

class ForecastWindows(Dataset):
    """Training or selection examples: the window ending at each of ``ends`` (rows of a scaled (n, D) series),
    prepared for the network, with the true value of its last row."""

    def __init__(self, rows: np.ndarray, window: int, ends: np.ndarray, formulation: Formulation):
        self.rows, self.window, self.ends, self.formulation = rows, window, ends, formulation

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        end = int(self.ends[index])
        window = self.rows[end - self.window + 1:end + 1]
        prepared = prepare_windows(window[None], self.formulation)
        return tuple(torch.from_numpy(a[0]) for a in (prepared.x, window[None, -1], prepared.base, prepared.scale,
                                                        prepared.offset))


@dataclass
class ForecastSplits:
    """A series split in time and scaled with the training rows' statistics: ``rows[:train_end]`` train,
    ``rows[train_end:val_end]`` validate, ``rows[val_end:test_end]`` test."""

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

    def span(self, split: str) -> tuple[int, int]:
        b = self.bounds
        return {"train": (self.window - 1, b.train_end), "val": (b.train_end, b.val_end),
                "test": (b.val_end, b.test_end)}[split]

    def targets(self, split: str) -> np.ndarray:
        """The scaled true rows of a split's forecast steps (training: those of whole windows)."""
        start, end = self.span(split)
        return self.rows[start:end]

    def windows(self, split: str) -> np.ndarray:
        """Read-only view (n, w, D): the window ending at each of the split's forecast steps."""
        start, end = self.span(split)
        if end <= start:
            return np.empty((0, self.window, self.n_channels), np.float32)
        return windows_ending_at_every_step(self.rows[start - self.window + 1:end], self.window)

    def train_set(self) -> ForecastWindows:
        ends = training_window_starts(self.bounds.train_end, self.window, self.stride) + self.window - 1
        return ForecastWindows(self.rows, self.window, ends, self.formulation)

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
    check_window_fits(bounds.train_end, window, f"{data.name}: the training period ({bounds.method} split)")
    if require_test and bounds.test_end <= bounds.val_end:
        raise DataError(f"{data.name}: the {bounds.method} split leaves no test rows")
    if scaler is None:
        scaler = ChannelScaler().fit([data.values[:bounds.train_end].T])  # statistics of the training rows only
    return ForecastSplits(data.name, window, stride, formulation, scaler,
                          scaler.transform_rows(data.values[:bounds.test_end]), bounds, list(data.columns),
                          None if data.dates is None else data.dates[:bounds.test_end], data.files)


# --- the training objective ---------------------------------------------------------------------

def _forecast(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    x, _, base, scale, offset = batch
    return (base + model(x, last_step_only=True)[:, 0]) * scale + offset


class ForecastTask:
    """MSE between the forecast and the true last row (mean over variables and windows); selection on the
    validation MSE."""

    @staticmethod
    def training_loss(model, batch):
        return F.mse_loss(_forecast(model, batch), batch[1])

    @torch.no_grad()
    def evaluate(self, model, dataset, batch_size, device) -> dict[str, float]:
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        for batch in DataLoader(dataset, batch_size=batch_size):
            batch = tuple(t.to(device) for t in batch)
            total += float((_forecast(model, batch) - batch[1]).square().mean(1).sum())
            count += len(batch[0])
        model.train(was_training)
        return {"loss": total / max(count, 1), "n": count}

    @staticmethod
    def selection_key(metrics: dict[str, float]) -> tuple[float, ...]:
        return (-metrics["loss"],)


def forecast_split(forward_last: ForwardLast, splits: ForecastSplits, split: str) -> np.ndarray:
    """The scaled forecast of every row of a split, each from the rows before it."""
    start, end = splits.span(split)
    return forecast_every_step(forward_last, splits.rows[start:end], splits.window, splits.formulation,
                               context=splits.rows[:start])


# --- the report ---------------------------------------------------------------------------------

def baseline_report(splits: ForecastSplits) -> dict[str, Any]:
    """Persistence, the window mean and ridge regression, fitted on training windows (ridge's penalty on
    validation), evaluated on every validation and test row."""
    std = splits.scaler.std
    train_windows = splits.windows("train")[splits.train_set().ends - (splits.window - 1)]  # the model's windows
    val_windows = splits.windows("val")
    report: dict[str, Any] = {}
    for baseline in BASELINES:
        start = time.perf_counter()
        fitted = baseline().fit(train_windows, val_windows if len(val_windows) else None)
        entry: dict[str, Any] = fitted.describe()
        for split in ("val", "test"):
            if splits.span(split)[1] > splits.span(split)[0]:
                entry[split] = _errors(fitted.predict(splits.windows(split)), splits, split, std)
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


def write_predictions_csv(path: Path, splits: ForecastSplits, forecasts: np.ndarray) -> None:
    """One row per test step in original units: step, date (when known), then each variable's true value and
    forecast (``<name>`` and ``<name>_forecast``)."""
    start, end = splits.span("test")
    truth = splits.scaler.inverse_transform_rows(splits.targets("test"))
    predicted = splits.scaler.inverse_transform_rows(forecasts)
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
    atomic_write_bytes(path, buffer.getvalue().encode())


def forecast_report(run: RunConfig, model: torch.nn.Module, splits: ForecastSplits, device: torch.device
                    ) -> tuple[dict[str, Any], np.ndarray]:
    """metrics.json's task part, and the scaled test forecasts."""
    forward_last = last_step_function(model, device)
    std = splits.scaler.std
    val = _errors(forecast_split(forward_last, splits, "val"), splits, "val", std) if splits.span("val")[1] > \
        splits.span("val")[0] else {}
    start = time.perf_counter()
    test_forecasts = forecast_split(forward_last, splits, "test")
    test_seconds = time.perf_counter() - start
    test = _errors(test_forecasts, splits, "test", std)
    baselines = baseline_report(splits)
    metrics: dict[str, Any] = {
        "task": TASK, "model": run.model_name, "dataset": run.data, "density": run.model.density,
        "sparsity": run.model.sparsity, "seed": run.train.seed, "window": run.model.max_len,
        "stride": run.train.stride, "formulation": splits.formulation.to_dict(),
        "paper_formulation": splits.formulation.is_paper, "split": split_record(splits),
        "val": val, "test": test, "baselines": baselines, "compared_with_baselines": comparison(test, baselines),
        "test_forecast_seconds": round(test_seconds, 3), "context_rule": CONTEXT_RULE,
        "selection": ("lowest validation MSE (every stride-th validation row, during training)" if val else
                      "lowest training loss (no validation rows)") + "; test data is never used to select",
        "metric_notes": FORECAST_METRIC_NOTES,
    }
    return metrics, test_forecasts


# --- models -----------------------------------------------------------------------------------

def build_model_config(model_name: str, overrides: dict[str, Any], *, n_channels: int) -> ModelConfig:
    """The forecaster for ``n_channels`` variables: it forecasts every variable; the window is ``max_len``
    (default 96) and ``d_model`` defaults to 64 (the paper's ETTm1 width)."""
    for key in ("in_channels", "out_dim"):
        if key in overrides and overrides[key] != n_channels:
            raise ConfigError(f"model {key} is {overrides[key]!r} in the config, but the data has {n_channels} "
                              "variables")
    fields = {**MODEL_DEFAULTS.get(model_name, {}), **overrides, "in_channels": n_channels, "out_dim": n_channels}
    fields.setdefault("max_len", DEFAULT_WINDOW)
    fields.setdefault("d_model", DEFAULT_D_MODEL)
    return model_config(model_name, **fields)


# --- scikit-learn style estimator --------------------------------------------------------------

class SBTForecaster(BaseEstimator):
    """Sparse binary (or dense) Transformer one-step-ahead forecaster of every variable of a series.

    ``fit(y)`` trains on ``y`` (n_steps, n_variables), holding out its last ``val_fraction`` to select the
    epoch. ``predict(y_history)`` forecasts the step after the history, ``predict_every_step(y, context)``
    the one-step-ahead forecast of every row of ``y`` from the rows before it (``context``: rows that
    precede ``y``). Values are in the data's own units. With fewer than ``window - 1`` rows of history the
    earliest row stands in for the missing ones.
    """

    def __init__(self, model: str = "sbt", density: float = 0.5, window: int = DEFAULT_WINDOW,
                 d_model: int = DEFAULT_D_MODEL, n_heads: int = 2, n_layers: int = 2, d_ff: int = 256,
                 attention: str | None = None, norm: str | None = None, target: str = "value",
                 input_norm: str = "none", epochs: int = 10, batch_size: int = 128, lr: float = 1e-3,
                 patience: int = 5, stride: int = 1, val_fraction: float = 0.2, seed: int = 0, device: str = "auto",
                 verbose: bool = False):
        self.model = model
        self.density = density
        self.window = window
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.d_ff = d_ff
        self.attention = attention
        self.norm = norm
        self.target = target
        self.input_norm = input_norm
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.patience = patience
        self.stride = stride
        self.val_fraction = val_fraction
        self.seed = seed
        self.device = device
        self.verbose = verbose

    def _model_overrides(self) -> dict[str, Any]:
        overrides = {"max_len": self.window, "d_model": self.d_model, "n_heads": self.n_heads,
                     "n_layers": self.n_layers, "d_ff": self.d_ff, "seed": self.seed}
        for key in ("attention", "norm"):
            if getattr(self, key) is not None:
                overrides[key] = getattr(self, key)
        if self.model != "dense":
            overrides["density"] = self.density
        return overrides

    def fit(self, y, X=None):
        """Train on the series ``y`` (n_steps, n_variables); ``X`` is ignored (no exogenous inputs)."""
        train_config = TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, patience=self.patience,
                                   lr_decay_on_plateau=TRAIN_DEFAULTS["lr_decay_on_plateau"],
                                   val_fraction=self.val_fraction, stride=self.stride, seed=self.seed,
                                   device=self.device)
        values = check_series(y, np.shape(y)[1] if np.ndim(y) == 2 else 1, "y")
        n_val = int(round(self.val_fraction * len(values)))
        data = ForecastData("y", values, [f"x{i}" for i in range(values.shape[1])], None, {})
        bounds = SplitBounds(len(values) - n_val, len(values), len(values), "fraction")
        self.formulation_ = Formulation(self.target, self.input_norm)
        splits = split_and_scale(data, bounds, window=self.window, stride=self.stride, formulation=self.formulation_,
                                 require_test=False)
        self.config_ = build_model_config(self.model, self._model_overrides(), n_channels=splits.n_channels)
        seed_everything(self.seed)
        trainer = Trainer(create_model(self.config_), ForecastTask(), train_config, verbose=self.verbose)
        result = trainer.fit(splits.train_set(), splits.val_set())
        self.model_, self.scaler_, self.n_features_in_ = trainer.model.eval(), splits.scaler, splits.n_channels
        self.history_, self.best_epoch_ = result.history, result.best_epoch
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise SBTSError("this SBTForecaster is not fitted yet; call fit(y) first")

    def _forward_last(self) -> ForwardLast:
        return last_step_function(self.model_, next(self.model_.parameters()).device)

    def _scaled(self, rows, where: str) -> np.ndarray:
        return self.scaler_.transform_rows(check_series(rows, self.n_features_in_, where))

    def predict(self, y_history) -> np.ndarray:
        """The forecast (n_variables,) of the step after ``y_history`` (n_steps >= 1, n_variables)."""
        self._check_fitted()
        scaled = forecast_next(self._forward_last(), self._scaled(y_history, "y_history"), self.config_.max_len,
                               self.formulation_)
        return self.scaler_.inverse_transform_rows(scaled[None])[0]

    def predict_every_step(self, y, context=None) -> np.ndarray:
        """The one-step-ahead forecast (n_steps, n_variables) of every row of ``y`` from the rows before it."""
        self._check_fitted()
        before = None if context is None else self._scaled(context, "context")
        scaled = forecast_every_step(self._forward_last(), self._scaled(y, "y"), self.config_.max_len,
                                     self.formulation_, context=before)
        return self.scaler_.inverse_transform_rows(scaled)

    def export(self, path: str | Path, float_dtype: str = "float32"):
        """Write the fitted forecaster (model, scaling, formulation) as a ``.sbts`` artifact for ``sbts.runtime``."""
        from sbts.export.artifact import export_model

        self._check_fitted()
        state = {"formulation": self.formulation_.to_dict(), "columns": [f"x{i}" for i in range(self.n_features_in_)]}
        return export_model(self.model_, path, task=TASK, inference_state=state, scaler=self.scaler_,
                            float_dtype=float_dtype)


# --- runs: the CLI's ``sbts train forecasting`` and ``sbts evaluate`` -----------------------------

def _splits_of(data: ForecastData, run: RunConfig, scaler: ChannelScaler | None = None) -> ForecastSplits:
    options = ForecastOptions.from_dict(run.task_options)
    return split_and_scale(data, options.bounds(data), window=run.model.max_len, stride=run.train.stride,
                           formulation=options.formulation, scaler=scaler)


def resolve_run(spec: dict[str, Any]) -> tuple[RunConfig, ForecastSplits, dict[str, Any]]:
    """A run specification -> its full config, its data split and scaled, and the state its checkpoints keep."""
    if "val_fraction" in spec.get("train", {}):
        raise ConfigError("val_fraction does not apply to forecasting: the split decides the validation rows "
                          "(task option split and fractions; --split, --split-fractions)")
    train = TrainConfig.from_dict({**TRAIN_DEFAULTS, **spec.get("train", {})}, "train config")
    options = ForecastOptions.from_dict(spec.get("task_options", {}))
    data_spec = canonical_forecasting_spec(spec["data"])
    data = load_forecasting(data_spec)
    model = build_model_config(spec["model_name"], spec.get("model", {}), n_channels=data.n_channels)
    run = RunConfig(task=TASK, data=data_spec, model=model, train=train, model_name=spec["model_name"],
                    task_options=options.to_dict())
    splits = _splits_of(data, run)
    return run, splits, {"scaler": splits.scaler.to_dict(), "files": data.files, "columns": splits.columns}


def _reload_data(run: RunConfig, task_state: dict[str, Any]) -> ForecastSplits:
    """The run's data exactly as it was split and scaled when the run started (the files must not change)."""
    data = load_forecasting(run.data)
    check_files_unchanged(task_state.get("files", {}), data.files)
    return _splits_of(data, run, ChannelScaler.from_dict(task_state["scaler"]))


HOOKS = TaskHooks(name=TASK, state_keys=frozenset({"scaler", "files", "columns"}), resolve=resolve_run,
                  reload=_reload_data, objective=lambda run: ForecastTask(),
                  datasets=lambda splits: (splits.train_set(), splits.val_set()))


def train_run(spec: dict[str, Any], run_dir: str | Path, *, resume: bool = False, verbose: bool = True,
              train_overrides: dict[str, Any] | None = None,
              on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train (or resume) a forecaster in ``run_dir``; writes ``metrics.json`` and ``test_predictions.csv``."""
    fitted = fit_run(HOOKS, spec, run_dir, resume=resume, verbose=verbose, train_overrides=train_overrides,
                     on_epoch_end=on_epoch_end)
    if fitted.result.interrupted:
        return {"interrupted": True, "epochs": fitted.result.epochs_run, "run_dir": str(run_dir)}
    metrics, test_forecasts = forecast_report(fitted.run, fitted.trainer.model, fitted.data, fitted.trainer.device)
    metrics |= training_record(fitted.run, fitted.result, fitted.trainer.device)
    write_predictions_csv(Path(run_dir) / "test_predictions.csv", fitted.data, test_forecasts)
    metrics["predictions_file"] = "test_predictions.csv"
    atomic_write_json(Path(run_dir) / "metrics.json", metrics)
    return metrics


def load_trained(run_dir: str | Path, checkpoint: str = "best") -> TrainedRun:
    """A saved run's model (on the CPU, eval mode), its scaling, formulation and variable names."""
    run, model, state = load_run_model(HOOKS, run_dir, checkpoint)
    task_state = state["task_state"]
    options = ForecastOptions.from_dict(run.task_options)
    return TrainedRun(run, model, state.get("epoch"), task_state,
                      inference_state={"formulation": options.formulation.to_dict(), "columns": task_state["columns"]},
                      scaler=ChannelScaler.from_dict(task_state["scaler"]))


def evaluate_run(run_dir: str | Path, *, checkpoint: str = "best", device: str = "auto") -> dict[str, Any]:
    """Re-forecast a saved run's validation and test rows with a checkpoint (nothing is written)."""
    trained, splits, model, torch_device = reload_trained(load_trained, HOOKS, run_dir, checkpoint, device)
    metrics, _ = forecast_report(trained.run, model, splits, torch_device)
    return metrics | training_record(trained.run, None, torch_device) | {"checkpoint": checkpoint,
                                                                          "epoch": trained.epoch}
