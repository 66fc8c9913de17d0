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
from typing import Any

import numpy as np
import torch
from scipy.special import erf
from scipy.stats import binom
from sklearn.base import OutlierMixin
from sklearn.metrics import average_precision_score, roc_auc_score
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from sbts.atomic import read_json
from sbts.config import RunConfig, TaskOptions
from sbts.data.anomaly import AnomalyData, canonical_anomaly_spec, load_anomaly
from sbts.data.preprocessing import ChannelScaler
from sbts.data.windows import check_series, check_window_fits, history_for, training_window_starts
from sbts.errors import ConfigError, DataError, SBTSError
from sbts.heads.anomaly import ScoreStream, channel_errors_with, decision_rule, score_series_with
from sbts.metrics.anomaly import METRIC_NOTES, anomaly_report, point_adjust, point_metrics
from sbts.metrics.reported import MAXIMIZE, MINIMIZE, ReportedMetric
from sbts.metrics.thresholds import (DEFAULT_DRIFT_SPAN, MIN_PEAKS, PAPER_ANOMALY_RATIOS, THRESHOLD_METHODS, Threshold,
                                     check_fraction, check_pot_settings, check_span, fit_threshold,
                                     paper_protocol_threshold)
from sbts.runtime.streaming import CachedScoreStream
from sbts.tasks.base import EVAL_BATCH, DataSource, Task, TaskReport
from sbts.tasks.estimator import IN_MEMORY, SBTEstimator
from sbts.tasks.runs import (SharedBlock, SharedBlocks, last_step_function, series_network, shared_block_loss,
                             trains_shared)

TASK = "anomaly"
DEFAULT_WINDOW = 100  # without a paper preset; the paper uses 200 (SMD) and 50 (MSL, SMAP)
MIN_D_MODEL = 16  # the paper's width rule (2 x channels) has this floor for series of few channels

CONTEXT_RULE = ("every test step scored once; the windows of the first w-1 test steps take their earlier rows from "
                "the end of the training series (of a pooled set: of the same member's)")


@dataclass
class AnomalyOptions(TaskOptions):
    """How the detector turns scores into decisions and what the report adds (``task_options`` of a run)."""

    # "percentile" is the default: it did better than POT on SMD, MSL and SMAP in benchmarks/anomaly.py, where
    # POT's fitted tails often put the threshold far above the anomalies.
    threshold: str = field(default="percentile", metadata={
        "help": "how the threshold is fitted on the reference scores (never on test data)",
        "choices": THRESHOLD_METHODS})
    threshold_scores: str = field(default="val", metadata={
        "help": "reference scores: val (the held-out end of the training series) or train",
        "choices": ("val", "train")})
    contamination: float = field(default=0.01, metadata={
        "help": "percentile: the fraction of reference scores above the threshold"})
    pot_risk: float = field(default=1e-3, metadata={"help": "POT: probability of a normal score exceeding it"})
    pot_level: float = field(default=0.98, metadata={"help": "POT: quantile above which the tail is modelled"})
    drift_span: int = field(default=DEFAULT_DRIFT_SPAN, metadata={
        "help": "relative: steps the running level of the log-scores averages over"})
    pa_k: float = field(default=20.0, metadata={"help": "PA%K: percentage of a segment that must be flagged"})
    paper_anomaly_ratio: float | None = field(default=None, metadata={
        "help": "the paper protocol's anomaly ratio (leaky: reported for comparison only)"})

    def __post_init__(self) -> None:
        super().__post_init__()
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
            check_span(self.drift_span)
        except SBTSError as exc:
            raise ConfigError(f"drift_span: {exc}") from None
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
        return {"percentile": {"contamination": self.contamination},
                "relative": {"contamination": self.contamination, "span": self.drift_span},
                "pot": {"risk": self.pot_risk, "level": self.pot_level}}[method]

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

    def train_blocks(self, block: int) -> SharedBlocks:
        """The training windows' targets in blocks of ``block`` consecutive ones, for the shared pass."""
        windows = self.train_set()
        lengths = [len(part) for part in self.fit_parts]
        starts = np.cumsum([0] + lengths[:-1])
        return SharedBlocks(windows.rows.numpy(), self.window, windows.starts + self.window - 1,
                            [(int(a), int(a + n)) for a, n in zip(starts, lengths)], block)

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
    train = check_series(train, None, f"{name} (training series)")
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


# --- scoring ---------------------------------------------------------

@dataclass
class SplitScores:
    fit: np.ndarray
    val: np.ndarray
    test: np.ndarray | None
    test_seconds: float  # wall time to score the test series


def score_splits(model: torch.nn.Module, splits: AnomalySplits, device: torch.device) -> SplitScores:
    """One score per step of every split: each validation part continues its fit part, and each test series
    continues its training series (a pooled set's members each their own). A streamable model scores through
    its shared pass."""
    network = series_network(model, device)
    fit = np.concatenate([score_series_with(network, part, splits.window, None) for part in splits.fit_parts])
    val = np.concatenate([score_series_with(network, part, splits.window, before) if len(part)
                          else fit[:0] for before, part in zip(splits.fit_parts, splits.val_parts)])
    start = time.perf_counter()
    tests = [score_series_with(network, part, splits.window, before) for part, before in splits.test_parts()]
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


def _compared(threshold: Threshold, flags: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """One threshold method's fit and the unadjusted and point-adjusted test metrics of its decisions."""
    flagged = flags.astype(np.int8)
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
    flags, thresholds = decision_rule(threshold.to_dict()).run(test)  # the test series continues the reference
    if labels is None:
        report["test"] = {"n": len(test), "predicted_rate": float(np.mean(flags)),
                          "note": "no test labels: nothing to evaluate against"}
        return threshold, report
    report["test"] = anomaly_report(labels, test, thresholds, pa_k=options.pa_k)
    report["thresholds_compared"] = {
        method: {"error": candidate} if isinstance(candidate, str) else _compared(
            candidate, flags if method == options.threshold else decision_rule(candidate.to_dict()).run(test)[0],
            labels)
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


def write_scores_csv(scores: np.ndarray, threshold: Threshold, labels: np.ndarray | None) -> bytes:
    """One row per test step: step, score, the threshold it was compared with, predicted (score > threshold) and
    the label when known."""
    flags, thresholds = decision_rule(threshold.to_dict()).run(scores)
    columns = [np.arange(len(scores)), scores, thresholds, flags.astype(np.int8)]
    header = "step,score,threshold,predicted"
    if labels is not None:
        columns.append(labels)
        header += ",label"
    buffer = io.StringIO()
    table = np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])
    np.savetxt(buffer, table, delimiter=",", header=header, comments="", fmt=["%d", "%.9g", "%.9g", "%d"] + (
        ["%d"] if labels is not None else []))
    return buffer.getvalue().encode()


# --- the task ---------------------------------------------------------------------------------

class AnomalyTask(Task):
    """Reconstruct each window's last step: MSE on that step only; selection on the validation loss; one score
    per test step, a threshold fitted on validation (or training) scores only, and the metric report."""

    name = TASK
    options_class = AnomalyOptions
    # Paper-spec §1.3 (the paper's training recipe: batch 128, x0.75 learning rate on plateaus, early stopping
    # after 5 epochs; validation = the last 20 % of the training series), and density 0.25 as its AD configs.
    defaults = {"window": DEFAULT_WINDOW, "epochs": 50, "batch_size": 128, "patience": 5,
                "lr_decay_on_plateau": True, "val_fraction": 0.2, "d_model": None}
    # The SBT uses Step-T attention and no norms; the dense baseline full attention and LayerNorm over time.
    model_defaults = {"sbt": {"attention": "step_t", "norm": "none", "density": 0.25},
                      "dense": {"attention": "full", "norm": "layer_time"}}
    auto_help = {"d_model": f"2 x the channels, at least {MIN_D_MODEL}, rounded up to a multiple of n_heads",
                 "paper_anomaly_ratio": "the paper's for SMD, MSL and SMAP, else 0.01"}
    data_help = ("SMD/<machine>, ASD/<entity>, SMAP, MSL (pooled) or SMAP/<channel>, a folder with train.*, test.* "
                 "and test_label.*, or TRAIN,TEST[,LABELS] (csv, txt or npy)")
    canonical_data = staticmethod(canonical_anomaly_spec)
    validation_objective = ReportedMetric("loss", MINIMIZE, "validation reconstruction MSE")
    test_metrics = (ReportedMetric("auc_pr", MAXIMIZE, "AUC-PR"), ReportedMetric("vus_pr", MAXIMIZE, "VUS-PR"),
                    ReportedMetric("f1", MAXIMIZE, "F1 at the trained threshold"),
                    ReportedMetric("best_f1", MAXIMIZE, "oracle F1 (threshold chosen on test labels)", oracle=True))

    # --- data -------------------------------------------------------------------------------------------
    def load(self, data: str, missing_value: float | None = None) -> DataSource:
        spec = self.canonical_data(data)
        return DataSource(spec, load_anomaly(spec, missing_value=missing_value))

    def complete_model(self, fields: dict[str, Any], source: DataSource,
                       options: TaskOptions) -> dict[str, Any]:
        """The detector reconstructs every channel; ``d_model`` by default is the paper's 2 x channels."""
        n_channels = source.data.n_channels
        fields = self.channels_in_and_out(fields, n_channels)
        if fields.get("d_model") is None:
            heads, width = fields["n_heads"], max(2 * n_channels, MIN_D_MODEL)
            fields["d_model"] = width + (-width % heads) if isinstance(heads, int) and heads > 0 else width
        return fields

    def prepare(self, source: DataSource, run: RunConfig, state: dict[str, Any] | None = None) -> AnomalySplits:
        data: AnomalyData = source.data
        scaler = ChannelScaler.from_dict(state["scaler"]) if state else None
        splits = split_and_scale(data.train, data.test, data.labels, window=run.model.max_len,
                                 val_fraction=run.train.val_fraction, stride=run.train.stride, name=data.name,
                                 scaler=scaler, files=data.files, member_lengths=data.train_lengths,
                                 member_test_lengths=data.test_lengths)
        if state is None:  # before training: a POT threshold needs enough reference scores
            options = AnomalyOptions.from_dict(run.task_options)
            options.check_reference_size(*splits.reference_size(options))
        return splits

    # --- what the output means -----------------------------------------------------------------------------
    def datasets(self, data: AnomalySplits, run: RunConfig):
        train = data.train_blocks(run.train.batch_size) if trains_shared(run.model) else data.train_set()
        return train, data.val_set()

    def training_loss(self, model, batch):
        if isinstance(batch, SharedBlock):
            return shared_block_loss(model, batch)
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

    # --- the report -------------------------------------------------------------------------------------------
    def report(self, run: RunConfig, model: torch.nn.Module, data: AnomalySplits, device: torch.device) -> TaskReport:
        options = AnomalyOptions.from_dict(run.task_options)
        val_set = data.val_set()
        val_loss = self.evaluate(model, val_set, EVAL_BATCH, device) if val_set is not None else {}
        scores = score_splits(model, data, device)
        threshold, report = detection_report(scores, data, options)
        n_test = 0 if scores.test is None else len(scores.test)
        metrics: dict[str, Any] = {
            "window": run.model.max_len, "stride": run.train.stride, "val": val_loss, **report,
            "n_train": len(data.fit), "n_val": len(data.val), "n_test": n_test,
            "test_scoring_seconds": round(scores.test_seconds, 3),
            "context_rule": CONTEXT_RULE,
            "selection": "lowest validation reconstruction loss; validation = the last val_fraction of the training "
                         "series, held out of training",
            "metric_notes": METRIC_NOTES,
        }
        files = {}
        if scores.test is not None:
            files["test_scores.csv"] = write_scores_csv(scores.test, threshold, data.labels)
            metrics["scores_file"] = "test_scores.csv"
        return TaskReport(metrics, files)

    def inference_state(self, run, state, run_dir, checkpoint, epoch) -> dict[str, Any]:
        """For the best checkpoint, the threshold fitted when the run finished (from metrics.json, when it
        belongs to that checkpoint)."""
        metrics_path = Path(run_dir) / "metrics.json"
        if checkpoint != "best" or not metrics_path.is_file():
            return {}
        recorded = read_json(metrics_path, "run metrics")
        # A resume interrupted after improving leaves an older run's metrics beside a newer best checkpoint.
        if (isinstance(recorded, dict) and isinstance(recorded.get("threshold"), dict)
                and recorded.get("best_epoch") == epoch):
            return {"threshold": recorded["threshold"]}
        return {}


# --- scikit-learn / PyOD style estimator -------------------------------------------------------

class SBTAnomalyDetector(OutlierMixin, SBTEstimator):
    """Sparse binary (or dense) Transformer anomaly detector for one multivariate series, PyOD style.

    ``fit(X)`` trains on ``X`` (n_steps, n_channels), holding out its last ``val_fraction`` to select
    the epoch and fit the threshold. ``decision_function(X)`` gives one anomaly score per step (higher
    is more anomalous), ``predict(X)`` 1 for anomalies and 0 otherwise (score > ``threshold_``),
    ``score_samples(X)`` the negated score (scikit-learn's convention: lower is more abnormal).
    ``context`` (raw rows preceding ``X``, e.g. the training series) fills the windows of X's first
    ``window - 1`` steps; without it the first row stands in for the steps before it.

    As in PyOD: ``decision_scores_`` (the training series' scores), ``labels_`` (0/1 of those),
    ``threshold_``, ``predict_proba`` (``linear`` or ``unify``), ``predict_confidence`` and
    ``fit_predict_score``. Unlike PyOD, ``contamination`` is the fraction of the *held-out validation*
    scores above the threshold (the threshold is fitted on the end of the training series the model did not
    train on, so that it is not biased low by training scores); with ``threshold_scores="train"`` it is the
    fraction of the training part's scores, PyOD's meaning.
    """

    task_class = AnomalyTask
    excluded_options = ("pa_k", "paper_anomaly_ratio")  # settings of the test report: fit has no test data

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True  # one series, (n_steps, n_channels)
        return tags

    def fit(self, X, y=None):
        """Train on the series ``X`` (n_steps, n_channels); ``y`` is ignored (unsupervised)."""
        array = check_series(X, None, "X", one_d=False)
        if len(array) < 2:
            raise DataError(f"X: n_samples = {len(array)}: a series of at least a window of steps is needed to train")
        source = DataSource(IN_MEMORY, AnomalyData("X", array, None, None, {}))
        return self._fit_source(source)

    def _fitted(self, task, splits: AnomalySplits, device) -> None:
        options = AnomalyOptions.from_dict(self.run_config_.task_options)
        scores = score_splits(self.model_, splits, device)
        reference, fitted_on = reference_scores(scores, splits, options)
        self.threshold_info_ = options.fit(reference, fitted_on)
        self.threshold_ = self.threshold_info_.value
        self.decision_scores_ = np.concatenate([scores.fit, scores.val])  # PyOD: the training series' scores
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(np.int8)

    def _scale(self, rows: np.ndarray) -> np.ndarray:
        return self.scaler_.transform_rows(rows)

    def decision_function(self, X, context=None) -> np.ndarray:
        """One anomaly score per step of ``X`` (higher is more anomalous)."""
        network, scaled, before = self._network_inputs(X, context)
        return score_series_with(network, scaled, self.config_.max_len, before)

    def channel_errors(self, X, context=None) -> np.ndarray:
        """The squared reconstruction error of every step and channel (n_steps, n_channels), on the scaled
        values: which channels made a step's score (its mean over the row is ``decision_function``'s)."""
        network, scaled, before = self._network_inputs(X, context)
        return channel_errors_with(network, scaled, self.config_.max_len, before)

    def _network_inputs(self, X, context):
        self._check_fitted()
        name = type(self).__name__
        scaled = self._scale(check_series(X, self.n_features_in_, "X", one_d=False, owner=name))
        before = None if context is None else self._scale(check_series(context, self.n_features_in_, "context",
                                                                       owner=name))
        return series_network(self.model_, self.device_), scaled, before

    def score_samples(self, X, context=None) -> np.ndarray:
        """The negated anomaly score (scikit-learn's convention: the lower, the more abnormal)."""
        return -self.decision_function(X, context)

    def predict(self, X, context=None) -> np.ndarray:
        """1 where the score exceeds the threshold (an anomaly), else 0: ``threshold_`` at every step, or for
        ``threshold="relative"`` the threshold that follows X's score level from the end of the training series."""
        scores = self.decision_function(X, context)  # checks that the detector is fitted
        return decision_rule(self.threshold_info_.to_dict()).run(scores)[0].astype(np.int8)

    def predict_proba(self, X, method: str = "linear", context=None) -> np.ndarray:
        """(n_steps, 2): the probability of normal and of anomalous per step, from the score relative to the
        training scores: ``linear`` min-max scales it to [0, 1], ``unify`` maps its z-score through the Gaussian
        error function (Kriegel et al., 2011)."""
        scores = self.decision_function(X, context)
        train = self.decision_scores_
        if method == "linear":
            spread = train.max() - train.min()
            anomalous = (scores - train.min()) / (spread if spread > 0 else 1.0)
        elif method == "unify":
            std = train.std()
            anomalous = erf((scores - train.mean()) / ((std if std > 0 else 1.0) * np.sqrt(2)))
        else:
            raise SBTSError(f"method must be linear or unify, got {method!r}")
        anomalous = np.clip(anomalous, 0.0, 1.0)
        return np.column_stack([1 - anomalous, anomalous])

    def predict_confidence(self, X, context=None) -> np.ndarray:
        """The confidence in [0, 1] of each step's 0/1 prediction (ExCeeD, Perini et al., 2020): how likely the
        prediction stays the same under the uncertainty of where the score ranks among the training scores."""
        scores = self.decision_function(X, context)
        train = np.sort(self.decision_scores_)
        n = len(train)
        rank = np.searchsorted(train, scores, side="right")  # training scores at or below each score
        outlier_probability = (1 + rank) / (2 + n)  # Bayesian estimate with a uniform prior
        expected_outliers = int(round(n * float(np.mean(self.labels_))))
        confidence = 1 - binom.cdf(n - expected_outliers, n, outlier_probability)
        return np.where(decision_rule(self.threshold_info_.to_dict()).run(scores)[0], confidence, 1 - confidence)

    def fit_predict_score(self, X, y, scoring: str = "roc_auc_score") -> float:
        """Fit on ``X`` and score its training-series anomaly scores against the labels ``y`` (0/1 per step):
        ``roc_auc_score`` or ``average_precision_score``."""
        metrics = {"roc_auc_score": roc_auc_score, "average_precision_score": average_precision_score}
        if scoring not in metrics:
            raise SBTSError(f"scoring must be one of {', '.join(metrics)}, got {scoring!r}")
        labels = np.asarray(y)
        if labels.shape != (len(np.asarray(X)),):
            raise SBTSError(f"y needs one 0/1 label per step of X ({len(np.asarray(X))}), got shape {labels.shape}")
        self.fit(X)
        return float(metrics[scoring](labels, self.decision_scores_))

    def stream(self, context=None) -> CachedScoreStream | ScoreStream:
        """Score observations one at a time: ``stream.update(x_t)`` equals ``decision_function`` on the whole
        stream (with the same context). A streamable model (``config_.streamable``) costs one step per
        observation, in numpy with per-layer caches; another recomputes the window in torch."""
        self._check_fitted()
        if self.config_.streamable:
            return CachedScoreStream(self._step_stream(), self._scale, context)
        return ScoreStream(last_step_function(self.model_, self.device_), self.config_.max_len, self.n_features_in_,
                           self._scale, context)

    def _inference_state(self) -> dict[str, Any]:
        return {"threshold": self.threshold_info_.to_dict()}
