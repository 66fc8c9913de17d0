"""Anomaly detection on one long multivariate series (paper-spec §1.3, §4.2, §5.2).

Data flow: training and test series -> the last ``val_fraction`` of the training series held out, in
time, for validation -> channels z-scored with statistics of the remaining training part only ->
windows of ``w`` = model ``max_len`` steps, every ``stride`` steps for training -> the model
reconstructs each window's last step (loss on that step only; Step-T attention for the SBT) -> one
score per step: the reconstruction's mean squared error over channels -> a threshold fitted on
validation (or training) scores only -> metrics against the test labels.

Every test step is scored exactly once. The windows of the first ``w - 1`` test steps take their
earlier rows from the end of the training series (which the test series follows in time in SMD, SMAP,
MSL and ASD); see ``sbts.data.windows``. The paper's protocol (a quantile of train+val+test scores,
point-adjusted F1) is reported beside, labelled as using test data.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from sbts.atomic import atomic_write_bytes
from sbts.config import ModelConfig, RunConfig, TaskOptions, TrainConfig
from sbts.data.anomaly import AnomalyData, canonical_anomaly_spec, load_anomaly
from sbts.data.preprocessing import ChannelScaler
from sbts.data.windows import check_window_fits, history_for, training_window_starts
from sbts.errors import ConfigError, DataError, SBTSError
from sbts.metrics.anomaly import METRIC_NOTES, anomaly_report, point_adjust, point_metrics
from sbts.metrics.thresholds import (MIN_PEAKS, PAPER_ANOMALY_RATIOS, THRESHOLD_METHODS, Threshold, check_fraction,
                                     check_pot_settings, fit_threshold, paper_protocol_threshold)
from sbts.models import create_model, model_config
from sbts.runtime.anomaly import ScoreStream, check_series, score_series
from sbts.tasks.runs import (TaskHooks, TrainedRun, check_files_unchanged, fit_run, last_step_function, load_run_model,
                             reload_trained, training_record)
from sbts.training import Trainer, atomic_write_json, seed_everything
from sbts.training.checkpoint import read_json

TASK = "anomaly"
DEFAULT_WINDOW = 100  # without a paper preset; the paper uses 200 (SMD) and 50 (MSL, SMAP)

# Paper-spec §1.3: the SBT uses Step-T attention and no norms; the dense baseline full attention and
# LayerNorm over time.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "sbt": {"attention": "step_t", "norm": "none"},
    "dense": {"attention": "full", "norm": "layer_time"},
}
CONTEXT_RULE = ("every test step scored once; the windows of the first w-1 test steps take their earlier rows from "
                "the end of the training series (of a pooled set: of the same member's)")


@dataclass
class AnomalyOptions(TaskOptions):
    """How the detector turns scores into decisions and what the report adds (``task_options`` of a run)."""

    # Fitted on threshold_scores only: "percentile" (the default: it did better than POT on SMD, MSL and SMAP in
    # benchmarks/anomaly.py, where POT's fitted tails often put the threshold far above the anomalies) or "pot".
    threshold: str = "percentile"
    threshold_scores: str = "val"  # "val": the held-out end of the training series; "train": the training part
    contamination: float = 0.01  # percentile: the fraction of reference scores above the threshold
    pot_risk: float = 1e-3  # POT: the probability of a normal score exceeding the threshold
    pot_level: float = 0.98  # POT: the quantile of the reference scores above which the tail is modelled
    pa_k: float = 20.0  # PA%K: the percentage of a segment that must be flagged to credit it
    paper_anomaly_ratio: float | None = None  # the paper protocol's ratio; None: the paper's per dataset, else 0.01

    def __post_init__(self) -> None:
        if self.threshold not in THRESHOLD_METHODS:
            raise ConfigError(f"threshold must be one of {', '.join(THRESHOLD_METHODS)}; got {self.threshold!r}")
        if self.threshold_scores not in ("val", "train"):
            raise ConfigError(f"threshold_scores must be val or train; got {self.threshold_scores!r}")
        for name in ("contamination", "pot_risk", "pot_level", "pa_k", "paper_anomaly_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (value is None or isinstance(value, (int, float))):
                raise ConfigError(f"{name} must be a number, got {value!r}")
        if not 0 <= self.pa_k <= 100:
            raise ConfigError(f"pa_k must be a percentage in [0, 100], got {self.pa_k!r}")
        check_fraction(self.contamination, "contamination", 0.5, True, "the fraction of reference scores above it")
        try:
            check_pot_settings(self.pot_risk, self.pot_level)
        except SBTSError as exc:
            raise ConfigError(f"pot_risk and pot_level: {exc}") from None
        if self.paper_anomaly_ratio is not None:
            check_fraction(self.paper_anomaly_ratio, "paper_anomaly_ratio", 0.5, True, "a fraction, e.g. 0.005")

    def check_reference_size(self, n_scores: int, what: str) -> None:
        """Refuse, before training, a POT threshold that its reference scores cannot support."""
        expected_peaks = (1 - self.pot_level) * n_scores
        if self.threshold == "pot" and expected_peaks < 2 * MIN_PEAKS:
            raise ConfigError(f"POT at pot_level {self.pot_level:g} on {n_scores:,} {what} scores models only about "
                              f"{expected_peaks:.0f} peaks (needs {2 * MIN_PEAKS}+); use threshold percentile, a lower "
                              "pot_level or more validation data")

    def fit(self, reference_scores: np.ndarray, fitted_on: str = "reference scores") -> Threshold:
        return fit_threshold(self.threshold, reference_scores=reference_scores, fitted_on=fitted_on,
                             **self._parameters(self.threshold))

    def _parameters(self, method: str) -> dict[str, float]:
        return {"contamination": self.contamination} if method == "percentile" else {
            "risk": self.pot_risk, "level": self.pot_level}

    def fit_each(self, reference_scores: np.ndarray, fitted_on: str) -> dict[str, Threshold | str]:
        """Every non-leaky method with these settings, for the comparison in the report (or why it failed)."""
        fitted: dict[str, Threshold | str] = {}
        for method in THRESHOLD_METHODS:
            try:
                fitted[method] = fit_threshold(method, reference_scores=reference_scores, fitted_on=fitted_on,
                                               **self._parameters(method))
            except SBTSError as exc:
                fitted[method] = str(exc)
        return fitted


# --- data: splits, scaling, windows ------------------------------------------------------------

class WindowDataset(Dataset):
    """Windows of ``window`` rows of a (n, D) series starting at ``starts`` (each window a view of the rows)."""

    def __init__(self, rows: np.ndarray, window: int, starts: np.ndarray):
        self.rows, self.window, self.starts = torch.from_numpy(np.ascontiguousarray(rows, np.float32)), window, starts

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> tuple[torch.Tensor]:
        start = int(self.starts[index])
        return (self.rows[start:start + self.window],)


@dataclass
class AnomalySplits:
    """A dataset split in time and scaled. The training series is one member or several (the channels of a
    pooled set, in order); each member's end (``val_parts``) is held out to select and calibrate, the rest
    (``fit_parts``) trains. Windows never cross from one member into another."""

    name: str
    window: int
    stride: int
    scaler: ChannelScaler
    fit_parts: list[np.ndarray]  # scaled float32 (n_fit_i, D)
    val_parts: list[np.ndarray]  # scaled float32 (n_val_i, D), each continuing its fit part; may be empty
    test: np.ndarray | None  # scaled float32 (n_test, D)
    labels: np.ndarray | None
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    test_lengths: list[int] | None = None  # a pooled set's members' test rows, in order

    def test_parts(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each member's test series with the training series it continues (one pair without members)."""
        if self.test is None:
            return []
        if self.test_lengths is None:
            return [(self.test, self.train)]
        members = [np.concatenate(pair) for pair in zip(self.fit_parts, self.val_parts)]
        return list(zip(np.split(self.test, np.cumsum(self.test_lengths)[:-1]), members))

    @property
    def n_channels(self) -> int:
        return self.fit_parts[0].shape[1]

    @property
    def fit(self) -> np.ndarray:
        return np.concatenate(self.fit_parts)

    @property
    def val(self) -> np.ndarray:
        return np.concatenate(self.val_parts)

    @property
    def train(self) -> np.ndarray:
        """The whole training series in its original order, scaled (the test series follows its end)."""
        return np.concatenate([part for pair in zip(self.fit_parts, self.val_parts) for part in pair])

    def reference_size(self, options: AnomalyOptions) -> tuple[int, str]:
        """How many scores the threshold will be fitted on, and which."""
        n_val = sum(map(len, self.val_parts))
        if options.threshold_scores == "val" and n_val:
            return n_val, "validation"
        return sum(map(len, self.fit_parts)), "training"

    def train_set(self) -> WindowDataset:
        return _windows_in(self.fit_parts, self.window, self.stride)

    def val_set(self) -> WindowDataset | None:
        """Windows ending at validation steps, every ``stride`` steps (the last one included), for selection."""
        if not any(len(part) for part in self.val_parts):
            return None
        histories = [history_for(val, self.window, fit) for fit, val in zip(self.fit_parts, self.val_parts) if len(val)]
        return _windows_in(histories, self.window, self.stride)


def _windows_in(parts: list[np.ndarray], window: int, stride: int) -> WindowDataset:
    """Windows every ``stride`` steps inside each part (parts shorter than a window give none)."""
    offsets = np.cumsum([0] + [len(part) for part in parts[:-1]])
    starts = [offset + training_window_starts(len(part), window, stride)
              for offset, part in zip(offsets, parts) if len(part) >= window]
    return WindowDataset(np.concatenate(parts), window, np.concatenate(starts))


def split_and_scale(train: np.ndarray, test: np.ndarray | None, labels: np.ndarray | None, *, window: int,
                    val_fraction: float, stride: int, name: str = "train", scaler: ChannelScaler | None = None,
                    files: dict[str, dict[str, str]] | None = None, member_lengths: list[int] | None = None,
                    member_test_lengths: list[int] | None = None) -> AnomalySplits:
    """Hold out the end of the training series (of each member, for a pooled set), fit the scaler on the rest
    of the training data only, scale everything."""
    train = check_series(train, np.shape(train)[1] if np.ndim(train) == 2 else 1, f"{name} (training series)")
    if test is not None:
        test = check_series(test, train.shape[1], f"{name} (test series)")
        if labels is not None and len(labels) != len(test):
            raise DataError(f"{name}: {len(labels)} labels for a test series of {len(test)} steps")
    lengths = member_lengths or [len(train)]
    if sum(lengths) != len(train):
        raise DataError(f"{name}: member lengths add up to {sum(lengths)}, but the training series has {len(train)} "
                        "steps")
    if member_test_lengths is not None and (test is None or len(member_test_lengths) != len(lengths)
                                            or sum(member_test_lengths) != len(test)):
        raise DataError(f"{name}: the members' test lengths do not match the test series or the members")
    members = np.split(train, np.cumsum(lengths)[:-1])
    n_vals = [int(round(val_fraction * len(member))) for member in members]
    if val_fraction > 0 and not sum(n_vals):
        raise DataError(f"{name}: val_fraction={val_fraction:g} of {len(train)} training steps leaves no validation "
                        "step; use a larger val_fraction or 0")
    fit_parts = [member[:len(member) - n_val] for member, n_val in zip(members, n_vals)]
    val_parts = [member[len(member) - n_val:] for member, n_val in zip(members, n_vals)]
    check_window_fits(max(map(len, fit_parts)), window, f"{name}: the training part (after holding out "
                                                        f"{sum(n_vals)} validation steps)")
    if scaler is None:
        scaler = ChannelScaler().fit([part.T for part in fit_parts])  # statistics of the training part only
    return AnomalySplits(name, window, stride, scaler, [scaler.transform_rows(part) for part in fit_parts],
                         [scaler.transform_rows(part) for part in val_parts],
                         None if test is None else scaler.transform_rows(test), labels, files or {},
                         member_test_lengths)


# --- the training objective and scoring ---------------------------------------------------------

class AnomalyTask:
    """Reconstruct each window's last step: MSE on that step only; selection on the validation loss."""

    @staticmethod
    def training_loss(model, batch):
        (x,) = batch
        return F.mse_loss(model(x, last_step_only=True)[:, 0], x[:, -1])

    @torch.no_grad()
    def evaluate(self, model, dataset, batch_size, device) -> dict[str, float]:
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        for (x,) in DataLoader(dataset, batch_size=batch_size):
            x = x.to(device)
            errors = (model(x, last_step_only=True)[:, 0] - x[:, -1]).square().mean(1)
            total, count = total + float(errors.sum()), count + len(x)
        model.train(was_training)
        return {"loss": total / max(count, 1), "n": count}

    @staticmethod
    def selection_key(metrics: dict[str, float]) -> tuple[float, ...]:
        return (-metrics["loss"],)


@dataclass
class SplitScores:
    fit: np.ndarray
    val: np.ndarray
    test: np.ndarray | None
    test_seconds: float  # wall time to score the test series


def score_splits(model: torch.nn.Module, splits: AnomalySplits, device: torch.device,
                 batch_size: int = 256) -> SplitScores:
    """One score per step of every split: each validation part continues its fit part, and each test series
    continues its training series (a pooled set's members each their own)."""
    reconstruct = last_step_function(model, device)
    fit = np.concatenate([score_series(reconstruct, part, splits.window, None, batch_size)
                          for part in splits.fit_parts])
    val = np.concatenate([score_series(reconstruct, part, splits.window, before, batch_size) if len(part)
                          else fit[:0] for before, part in zip(splits.fit_parts, splits.val_parts)])
    start = time.perf_counter()
    tests = [score_series(reconstruct, part, splits.window, before, batch_size) for part, before in splits.test_parts()]
    return SplitScores(fit, val, np.concatenate(tests) if tests else None, time.perf_counter() - start)


def reference_scores(scores: SplitScores, splits: AnomalySplits, options: AnomalyOptions) -> tuple[np.ndarray, str]:
    """The scores a threshold is fitted on, and a description of them (never test scores)."""
    if options.threshold_scores == "val" and len(scores.val):
        where = "of each member's training series" if len(splits.fit_parts) > 1 else "of the training series"
        return scores.val, f"validation scores ({len(scores.val):,} steps: the last part {where}, held out of training)"
    note = "" if options.threshold_scores == "train" else " (no validation part: val_fraction is 0)"
    return scores.fit, f"training scores ({len(scores.fit):,} steps the model was trained on){note}"


def paper_ratio(options: AnomalyOptions, dataset: str) -> float:
    if options.paper_anomaly_ratio is not None:
        return float(options.paper_anomaly_ratio)
    return PAPER_ANOMALY_RATIOS.get(dataset.split("/")[0].upper(), 0.01)


def _compared(threshold: Threshold | str, test: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """One threshold method's fit and its unadjusted and point-adjusted test metrics (or why it failed)."""
    if isinstance(threshold, str):
        return {"error": threshold}
    flagged = (test > threshold.value).astype(np.int8)
    return {**threshold.to_dict(), **point_metrics(labels, flagged),
            "f1_pa": point_metrics(labels, point_adjust(labels, flagged))["f1"]}


def detection_report(scores: SplitScores, splits: AnomalySplits, options: AnomalyOptions
                     ) -> tuple[Threshold, dict[str, Any]]:
    """The fitted threshold and the report of the test scores against the test labels."""
    reference, fitted_on = reference_scores(scores, splits, options)
    by_method = options.fit_each(reference, fitted_on)
    threshold = by_method[options.threshold]
    if isinstance(threshold, str):  # the configured method could not be fitted: its error message
        raise SBTSError(threshold)
    report: dict[str, Any] = {"threshold": threshold.to_dict()}
    test, labels = scores.test, splits.labels
    if test is None:
        return threshold, report
    if labels is None:
        report["test"] = {"n": len(test), "predicted_rate": float(np.mean(test > threshold.value)),
                          "note": "no test labels: nothing to evaluate against"}
        return threshold, report
    report["test"] = anomaly_report(labels, test, threshold.value, pa_k=options.pa_k)
    report["thresholds_compared"] = {method: _compared(candidate, test, labels)
                                     for method, candidate in by_method.items()}
    ratio = paper_ratio(options, splits.name)
    paper = paper_protocol_threshold(scores.fit, scores.val, test, ratio)
    flagged = (test > paper.value).astype(np.int8)
    adjusted = point_metrics(labels, point_adjust(labels, flagged))
    report["paper_protocol"] = {**paper.to_dict(), **point_metrics(labels, flagged),
                                **{f"{key}_pa": value for key, value in adjusted.items()},
                                "note": "LEAKS TEST DATA: threshold from a quantile of train+val+test scores and "
                                        "point-adjusted metrics, as the official code; for comparison only"}
    return threshold, report


# --- models -----------------------------------------------------------------------------------

def build_model_config(model_name: str, overrides: dict[str, Any], *, n_channels: int) -> ModelConfig:
    """The detector for a series of ``n_channels``: it reconstructs every channel; the window is ``max_len``
    (default 100); ``d_model`` defaults to the paper's 2 x channels (at least 16, a multiple of n_heads)."""
    for key in ("in_channels", "out_dim"):
        if key in overrides and overrides[key] != n_channels:
            raise ConfigError(f"model {key} is {overrides[key]!r} in the config, but the data has {n_channels} "
                              "channels")
    fields = {**MODEL_DEFAULTS.get(model_name, {}), **overrides, "in_channels": n_channels, "out_dim": n_channels}
    fields.setdefault("max_len", DEFAULT_WINDOW)
    if "d_model" not in fields:
        heads, width = fields.get("n_heads", 2), max(2 * n_channels, 16)
        fields["d_model"] = width + (-width % heads) if isinstance(heads, int) and heads > 0 else width
    return model_config(model_name, **fields)


# --- scikit-learn / PyOD style estimator -------------------------------------------------------

class SBTAnomalyDetector(OutlierMixin, BaseEstimator):
    """Sparse binary (or dense) Transformer anomaly detector for one multivariate series, PyOD style.

    ``fit(X)`` trains on ``X`` (n_steps, n_channels), holding out its last ``val_fraction`` to select
    the epoch and fit the threshold. ``decision_function(X)`` gives one anomaly score per step (higher
    is more anomalous), ``predict(X)`` 1 for anomalies and 0 otherwise (score > ``threshold_``),
    ``score_samples(X)`` the negated score (scikit-learn's convention: lower is more abnormal).
    ``context`` (raw rows preceding ``X``, e.g. the training series) fills the windows of X's first
    ``window - 1`` steps; without it the first row stands in for the steps before it.
    """

    def __init__(self, model: str = "sbt", density: float = 0.25, window: int = DEFAULT_WINDOW,
                 d_model: int | None = None, n_heads: int = 2, n_layers: int = 2, d_ff: int = 256,
                 attention: str | None = None, norm: str | None = None, epochs: int = 10, batch_size: int = 128,
                 lr: float = 1e-3, patience: int = 5, stride: int = 1, val_fraction: float = 0.2,
                 threshold: str = "percentile", contamination: float = 0.01, pot_risk: float = 1e-3,
                 pot_level: float = 0.98, seed: int = 0, device: str = "auto", verbose: bool = False):
        self.model = model
        self.density = density
        self.window = window
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.d_ff = d_ff
        self.attention = attention
        self.norm = norm
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.patience = patience
        self.stride = stride
        self.val_fraction = val_fraction
        self.threshold = threshold
        self.contamination = contamination
        self.pot_risk = pot_risk
        self.pot_level = pot_level
        self.seed = seed
        self.device = device
        self.verbose = verbose

    def _model_overrides(self) -> dict[str, Any]:
        overrides = {"max_len": self.window, "n_heads": self.n_heads, "n_layers": self.n_layers, "d_ff": self.d_ff,
                     "seed": self.seed}
        for key in ("d_model", "attention", "norm"):
            if getattr(self, key) is not None:
                overrides[key] = getattr(self, key)
        if self.model != "dense":
            overrides["density"] = self.density
        return overrides

    def fit(self, X, y=None):
        """Train on the series ``X`` (n_steps, n_channels); ``y`` is ignored (unsupervised)."""
        train_config = TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, patience=self.patience,
                                   val_fraction=self.val_fraction, stride=self.stride, seed=self.seed,
                                   device=self.device)
        self.options_ = AnomalyOptions(threshold=self.threshold, contamination=self.contamination,
                                       pot_risk=self.pot_risk, pot_level=self.pot_level)
        array = np.asarray(X, dtype=np.float64)
        splits = split_and_scale(array, None, None, window=self.window, val_fraction=self.val_fraction,
                                 stride=self.stride, name="X")
        self.options_.check_reference_size(*splits.reference_size(self.options_))
        self.config_ = build_model_config(self.model, self._model_overrides(), n_channels=splits.n_channels)
        seed_everything(self.seed)
        trainer = Trainer(create_model(self.config_), AnomalyTask(), train_config, verbose=self.verbose)
        result = trainer.fit(splits.train_set(), splits.val_set())
        self.model_, self.scaler_, self.n_features_in_ = trainer.model.eval(), splits.scaler, splits.n_channels
        self.history_, self.best_epoch_ = result.history, result.best_epoch
        scores = score_splits(self.model_, splits, trainer.device)
        reference, fitted_on = reference_scores(scores, splits, self.options_)
        self.threshold_info_ = self.options_.fit(reference, fitted_on)
        self.threshold_ = self.threshold_info_.value
        self.decision_scores_ = np.concatenate([scores.fit, scores.val])  # PyOD: the training series' scores
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(np.int8)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise SBTSError("this SBTAnomalyDetector is not fitted yet; call fit(X) first")

    def _scale(self, rows: np.ndarray) -> np.ndarray:
        return self.scaler_.transform_rows(rows)

    def decision_function(self, X, context=None) -> np.ndarray:
        """One anomaly score per step of ``X`` (higher is more anomalous)."""
        self._check_fitted()
        scaled = self._scale(check_series(X, self.n_features_in_, "X"))
        before = None if context is None else self._scale(check_series(context, self.n_features_in_, "context"))
        device = next(self.model_.parameters()).device
        return score_series(last_step_function(self.model_, device), scaled, self.config_.max_len, before)

    def score_samples(self, X, context=None) -> np.ndarray:
        """The negated anomaly score (scikit-learn's convention: the lower, the more abnormal)."""
        return -self.decision_function(X, context)

    def predict(self, X, context=None) -> np.ndarray:
        """1 where the score exceeds ``threshold_`` (an anomaly), else 0."""
        return (self.decision_function(X, context) > self.threshold_).astype(np.int8)

    def stream(self, context=None) -> ScoreStream:
        """Score observations one at a time: ``stream.update(x_t)`` equals ``decision_function`` on the whole
        stream (with the same context)."""
        self._check_fitted()
        device = next(self.model_.parameters()).device
        return ScoreStream(last_step_function(self.model_, device), self.config_.max_len, self.n_features_in_,
                           self._scale, context)

    def export(self, path: str | Path, float_dtype: str = "float32"):
        """Write the fitted detector (model, scaling and threshold) as a ``.sbts`` artifact for ``sbts.runtime``."""
        from sbts.export.artifact import export_model

        self._check_fitted()
        return export_model(self.model_, path, task=TASK, inference_state={"threshold": self.threshold_info_.to_dict()},
                            scaler=self.scaler_, float_dtype=float_dtype)


# --- runs: the CLI's ``sbts train anomaly`` and ``sbts evaluate`` --------------------------------

def _splits_of(data: AnomalyData, run: RunConfig, scaler: ChannelScaler | None = None) -> AnomalySplits:
    """A loaded dataset split and scaled as the run says (with a saved scaler when reloading)."""
    return split_and_scale(data.train, data.test, data.labels, window=run.model.max_len,
                           val_fraction=run.train.val_fraction, stride=run.train.stride, name=data.name,
                           scaler=scaler, files=data.files, member_lengths=data.train_lengths,
                           member_test_lengths=data.test_lengths)


def resolve_run(spec: dict[str, Any]) -> tuple[RunConfig, AnomalySplits, dict[str, Any]]:
    """A run specification -> its full config, its data split and scaled, and the state its checkpoints keep."""
    train = TrainConfig.from_dict(spec.get("train", {}), "train config")
    options = AnomalyOptions.from_dict(spec.get("task_options", {}))
    data_spec = canonical_anomaly_spec(spec["data"])
    data = load_anomaly(data_spec)
    model = build_model_config(spec["model_name"], spec.get("model", {}), n_channels=data.n_channels)
    run = RunConfig(task=TASK, data=data_spec, model=model, train=train, model_name=spec["model_name"],
                    task_options=options.to_dict())
    splits = _splits_of(data, run)
    options.check_reference_size(*splits.reference_size(options))
    return run, splits, {"scaler": splits.scaler.to_dict(), "files": data.files}


def _reload_data(run: RunConfig, task_state: dict[str, Any]) -> AnomalySplits:
    """The run's data exactly as it was split and scaled when the run started (the files must not change)."""
    splits = _splits_of(load_anomaly(run.data), run, ChannelScaler.from_dict(task_state["scaler"]))
    check_files_unchanged(task_state.get("files", {}), splits.files)
    return splits


HOOKS = TaskHooks(name=TASK, state_keys=frozenset({"scaler", "files"}), resolve=resolve_run,
                  reload=_reload_data, objective=lambda run: AnomalyTask(),
                  datasets=lambda splits: (splits.train_set(), splits.val_set()))


def write_scores_csv(path: Path, scores: np.ndarray, threshold: float, labels: np.ndarray | None) -> None:
    """One row per test step: step, score, predicted (score > threshold) and the label when known."""
    columns = [np.arange(len(scores)), scores, (scores > threshold).astype(np.int8)]
    header = "step,score,predicted"
    if labels is not None:
        columns.append(labels)
        header += ",label"
    buffer = io.StringIO()
    table = np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])
    np.savetxt(buffer, table, delimiter=",", header=header, comments="", fmt=["%d", "%.9g", "%d"] + (
        ["%d"] if labels is not None else []))
    atomic_write_bytes(path, buffer.getvalue().encode())


def _evaluate(run: RunConfig, model: torch.nn.Module, splits: AnomalySplits, device: torch.device,
              val_loss: dict[str, float]) -> tuple[dict[str, Any], SplitScores, Threshold]:
    options = AnomalyOptions.from_dict(run.task_options)
    scores = score_splits(model, splits, device)
    threshold, report = detection_report(scores, splits, options)
    n_test = 0 if scores.test is None else len(scores.test)
    metrics: dict[str, Any] = {
        "task": TASK, "model": run.model_name, "dataset": run.data, "density": run.model.density,
        "sparsity": run.model.sparsity, "seed": run.train.seed, "window": run.model.max_len,
        "stride": run.train.stride, "val": val_loss, **report,
        "n_train": len(splits.fit), "n_val": len(splits.val), "n_test": n_test,
        "test_scoring_seconds": round(scores.test_seconds, 3),
        "context_rule": CONTEXT_RULE,
        "selection": "lowest validation reconstruction loss; validation = the last val_fraction of the training "
                     "series, held out of training",
        "metric_notes": METRIC_NOTES,
    }
    return metrics, scores, threshold


def train_run(spec: dict[str, Any], run_dir: str | Path, *, resume: bool = False, verbose: bool = True,
              train_overrides: dict[str, Any] | None = None,
              on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train (or resume) a detector in ``run_dir``; writes ``metrics.json`` and ``test_scores.csv``."""
    fitted = fit_run(HOOKS, spec, run_dir, resume=resume, verbose=verbose, train_overrides=train_overrides,
                     on_epoch_end=on_epoch_end)
    if fitted.result.interrupted:
        return {"interrupted": True, "epochs": fitted.result.epochs_run, "run_dir": str(run_dir)}
    trainer, splits = fitted.trainer, fitted.data
    val_set = splits.val_set()
    val_loss = AnomalyTask().evaluate(trainer.model, val_set, 256, trainer.device) if val_set is not None else {}
    metrics, scores, threshold = _evaluate(fitted.run, trainer.model, splits, trainer.device, val_loss)
    metrics |= training_record(fitted.run, fitted.result, trainer.device)
    if scores.test is not None:
        write_scores_csv(Path(run_dir) / "test_scores.csv", scores.test, threshold.value, splits.labels)
        metrics["scores_file"] = "test_scores.csv"
    atomic_write_json(Path(run_dir) / "metrics.json", metrics)
    return metrics


def load_trained(run_dir: str | Path, checkpoint: str = "best") -> TrainedRun:
    """A saved run's model (on the CPU, eval mode), its scaling and, for the best checkpoint, the threshold
    fitted when the run finished (from metrics.json, when it belongs to that checkpoint)."""
    run, model, state = load_run_model(HOOKS, run_dir, checkpoint)
    task_state = state["task_state"]
    inference_state: dict[str, Any] = {}
    metrics_path = Path(run_dir) / "metrics.json"
    if checkpoint == "best" and metrics_path.is_file():
        recorded = read_json(metrics_path, "run metrics")
        # A resume interrupted after improving leaves an older run's metrics beside a newer best checkpoint.
        if (isinstance(recorded, dict) and isinstance(recorded.get("threshold"), dict)
                and recorded.get("best_epoch") == state.get("epoch")):
            inference_state["threshold"] = recorded["threshold"]
    return TrainedRun(run, model, state.get("epoch"), task_state, inference_state=inference_state,
                      scaler=ChannelScaler.from_dict(task_state["scaler"]))


def evaluate_run(run_dir: str | Path, *, checkpoint: str = "best", device: str = "auto") -> dict[str, Any]:
    """Re-score a saved run's checkpoint on its data and refit its threshold (nothing is written)."""
    trained, splits, model, torch_device = reload_trained(load_trained, HOOKS, run_dir, checkpoint, device)
    val_set = splits.val_set()
    val_loss = AnomalyTask().evaluate(model, val_set, 256, torch_device) if val_set is not None else {}
    metrics, _, _ = _evaluate(trained.run, model, splits, torch_device, val_loss)
    return metrics | training_record(trained.run, None, torch_device) | {"checkpoint": checkpoint,
                                                                          "epoch": trained.epoch}
