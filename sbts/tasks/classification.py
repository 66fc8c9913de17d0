"""Multivariate time series classification (paper-spec §1.2, §5.1).

Data flow: .ts files -> fill missing values -> z-score per channel with statistics of the training
part only -> pad to a common length with a key-padding mask -> model -> per-step logits averaged
over the valid (non-padded) steps -> cross-entropy / accuracy.

Validation is a stratified split held out of the training set and disjoint from it (the official
code's validation overlaps training). With the option ``baselines`` the report adds MiniRocket, MultiRocket and
1-NN DTW fitted on the same scaled, padded training cases (``sbts.baselines.classification``).
``sbts train classification`` and ``SBTClassifier`` both run ``ClassificationTask``.

Lengths: the model is built for ``max_len`` steps; left at its default that is the longest series of the
train and test files, and for the estimator, which sees no test series, ``LENGTH_MARGIN`` times its
longest training series, so that longer series than those seen can still be predicted (exactly the
longest for the fixed-length models: step_t attention, layer_time norm). Only a learnable positional
table depends on it (its rows beyond the training lengths stay at their initial values); sinusoidal
positions and the Q/K/V masks of a step are the same for any ``max_len``. Batches are padded to their
data's longest series, not to ``max_len``, so the margin costs no computation.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from scipy.sparse import issparse
from sklearn.base import ClassifierMixin
from sklearn.exceptions import DataConversionWarning
from sklearn.model_selection import train_test_split
from sklearn.utils.multiclass import type_of_target
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from sbts.baselines.classification import classification_baselines
from sbts.config import ModelConfig, RunConfig, TaskOptions, check_positive_int, needs_fixed_length
from sbts.data import load_classification, sha256_file
from sbts.data.preprocessing import ChannelScaler, fill_missing, pad_to_length
from sbts.data.uea import canonical_spec
from sbts.errors import ConfigError, DataError, InputTypeError, SBTSError
from sbts.metrics.reported import MAXIMIZE, ReportedMetric
from sbts.tasks.base import EVAL_BATCH, DataSource, Task, TaskReport
from sbts.tasks.estimator import IN_MEMORY, SBTEstimator

TASK = "classification"
LENGTH_MARGIN = 2  # the estimator's default max_len: this many times its longest training series (module docstring)
# The default epoch budget. An SBT below SPARSE_BELOW learns its masks more slowly: recipe-classification-epochs
# (validation only) gains 4.9 points of validation accuracy at density 0.25 from 100 to 250 epochs, and none for
# dense or density 0.5; 250 is also the paper's SBT budget.
DEFAULT_EPOCHS = 100
SPARSE_EPOCHS = 250
SPARSE_BELOW = 0.5


@dataclass
class ClassificationOptions(TaskOptions):
    """What a classification run reports besides the model (``task_options`` of a run)."""

    baselines: bool = field(default=False, metadata={
        "help": "fit MiniRocket, MultiRocket and 1-NN DTW (aeon) on the same split and report them next to the model"})
    label_smoothing: float = field(default=0.0, metadata={
        "help": "training targets put this much probability on the other classes, shared evenly (0: one-hot)"})
    jitter: float = field(default=0.0, metadata={
        "help": "training augmentation: std of Gaussian noise added to the scaled series (0: none)"})
    scaling: float = field(default=0.0, metadata={
        "help": "training augmentation: std of a factor around 1 that multiplies each channel of a case (0: none)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.baselines, bool):
            raise ConfigError(f"baselines must be true or false, got {self.baselines!r}")
        for name, upper in (("label_smoothing", 1.0), ("jitter", None), ("scaling", None)):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0
                    or (upper is not None and value >= upper)):
                bound = f"in [0, {upper:g})" if upper is not None else "finite and >= 0"
                raise ConfigError(f"{name} must be a number {bound}, got {value!r}")

    @property
    def changes_training_cases(self) -> bool:
        return bool(self.label_smoothing or self.jitter or self.scaling)


@dataclass
class ClassificationData:
    classes: list[str]
    scaler: ChannelScaler
    max_len: int
    n_channels: int
    train: TensorDataset
    val: TensorDataset | None
    test: TensorDataset | None
    val_indices: list[int]
    files: dict[str, dict[str, str]]

    @property
    def padded(self) -> bool:
        return any(bool(part.tensors[1].any()) for part in (self.train, self.val, self.test) if part is not None)


@dataclass
class ClassificationSource:
    """Labelled cases as read: training cases and, from files, test cases."""

    train_series: list[np.ndarray]
    train_labels: list[str]
    classes: list[str]
    test_series: list[np.ndarray] | None = None
    test_labels: list[str] | None = None
    where_train: str = "train"
    where_test: str = "test"
    files: dict[str, dict[str, str]] | None = None

    @property
    def lengths(self) -> list[int]:
        return [s.shape[1] for s in self.train_series + (self.test_series or [])]

    @property
    def n_channels(self) -> int:
        return self.train_series[0].shape[0]


def as_series_list(X: Any, where: str = "X") -> list[np.ndarray]:
    """Accept (n_cases, n_channels, n_timepoints) arrays (aeon's layout), univariate (n_cases, n_timepoints)
    arrays, or a list of (n_channels, length_i) arrays (unequal lengths)."""
    if issparse(X):
        raise SBTSError(f"{where}: sparse input is not supported; pass a dense array")
    if not isinstance(X, (list, tuple)):  # arrays, DataFrames, anything with __array__
        X = np.asarray(X)
    if isinstance(X, np.ndarray):
        if X.dtype.kind == "c":
            raise SBTSError(f"{where}: Complex data not supported")
        if X.dtype == object:
            try:
                X = X.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise InputTypeError(f"{where}: expected real numbers ({exc})") from None
        if X.dtype.kind not in "iufb":
            raise SBTSError(f"{where}: expected real numbers, got dtype {X.dtype}")
        if X.ndim == 2:  # univariate: one channel per case
            X = X[:, None, :]
        if X.ndim != 3:
            raise SBTSError(f"{where}: expected shape (n_cases, n_channels, n_timepoints) or (n_cases, "
                            f"n_timepoints), got {X.shape}; Reshape your data: one univariate case is x[None]")
        if not X.shape[2]:
            raise SBTSError(f"{where}: no time steps: 0 feature(s) (shape={(X.shape[0], 0)}) while a minimum of 1 "
                            "is required.")
        if not len(X):
            raise SBTSError(f"{where}: no cases")
        return [np.asarray(case, dtype=np.float64) for case in X]
    try:
        series = [np.asarray(case, dtype=np.float64) for case in X]
    except (TypeError, ValueError) as exc:
        raise InputTypeError(f"{where}: expected arrays of real numbers ({exc})") from None
    series = [case[None] if case.ndim == 1 else case for case in series]
    for i, case in enumerate(series):
        if case.ndim != 2 or not case.shape[1]:
            raise SBTSError(f"{where}[{i}]: expected a (n_channels, length) array, got shape {case.shape}")
    if not series:
        raise SBTSError(f"{where}: no cases")
    channels = {case.shape[0] for case in series}
    if len(channels) != 1:
        raise SBTSError(f"{where}: cases have different numbers of channels {sorted(channels)}")
    return series


def encode_labels(labels: Sequence[Any], classes: list[str], where: str) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({str(label) for label in labels} - set(index))
    if unknown:
        raise DataError(f"{where}: class label {unknown[0]!r} does not occur in the training classes {classes}")
    return np.array([index[str(label)] for label in labels], dtype=np.int64)


def _tensors(series: list[np.ndarray], scaler: ChannelScaler, length: int, y: np.ndarray) -> TensorDataset:
    X, padding = pad_to_length(scaler.transform(series), length)
    return TensorDataset(torch.from_numpy(X), torch.from_numpy(padding), torch.from_numpy(y))


def split_validation(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified hold-out of ``val_fraction`` of the training cases (disjoint from training).

    Every class keeps at least one training case: classes with a single case stay in training, and
    when the remaining classes are too small to stratify the split is random among them.
    """
    indices = np.arange(len(y))
    if val_fraction <= 0:
        return indices, indices[:0]
    n_val = int(round(val_fraction * len(y)))
    if n_val < 1 or len(y) - n_val < len(np.unique(y)):
        raise ConfigError(f"val_fraction={val_fraction:g} of {len(y)} training cases leaves "
                          f"{'no validation case' if n_val < 1 else 'too few training cases for every class'}; "
                          "choose another val_fraction (0 disables validation)")
    counts = np.bincount(y)
    eligible = indices[counts[y] >= 2]
    try:
        _, val_idx = train_test_split(eligible, test_size=n_val, stratify=y[eligible], random_state=seed)
    except ValueError:  # classes too small to stratify this many validation cases
        warnings.warn("validation split could not be stratified (classes too small); using a random split")
        _, val_idx = train_test_split(eligible, test_size=n_val, random_state=seed)
        for label in np.unique(y[val_idx]):  # give back one case of any class left without training data
            members = val_idx[y[val_idx] == label]
            if len(members) == counts[label]:
                val_idx = val_idx[val_idx != members[0]]
    val_idx = np.sort(val_idx)
    return np.setdiff1d(indices, val_idx), val_idx


def check_labels(labels: Sequence[Any], where: str) -> None:
    """Classification needs a label on every case and at least two classes."""
    distinct = {str(label) for label in labels}
    if "" in distinct:
        raise DataError(f"{where}: cases without a class label (classification needs @classLabel true and a label "
                        "on every case)")
    if len(distinct) < 2:
        raise DataError(f"{where}: only one class ({next(iter(distinct))!r}); classification needs at least two")


def prepare_classification(train_series: list[np.ndarray], train_labels: Sequence[Any], *,
                           test_series: list[np.ndarray] | None = None, test_labels: Sequence[Any] | None = None,
                           classes: list[str] | None = None, val_fraction: float = 0.1, seed: int = 0,
                           max_len: int | None = None, where_train: str = "train", where_test: str = "test",
                           val_indices: Sequence[int] | None = None, scaler: ChannelScaler | None = None,
                           files: dict[str, dict[str, str]] | None = None) -> ClassificationData:
    check_labels(train_labels, where_train)
    train_series = fill_missing(train_series, where_train)
    if classes is None:
        classes = sorted({str(label) for label in train_labels})
    y = encode_labels(train_labels, classes, where_train)
    if val_indices is None:
        fit_idx, val_idx = split_validation(y, val_fraction, seed)
    else:
        val_idx = np.asarray(sorted(val_indices), dtype=np.int64)
        fit_idx = np.setdiff1d(np.arange(len(y)), val_idx)
    fit_series = [train_series[i] for i in fit_idx]
    if scaler is None:
        scaler = ChannelScaler().fit(fit_series)  # statistics of the training part only
    lengths = [s.shape[1] for s in train_series]
    if test_series is not None:
        test_series = fill_missing(test_series, where_test)
        if test_series[0].shape[0] != train_series[0].shape[0]:
            raise DataError(f"{where_test}: {test_series[0].shape[0]} channels, but {where_train} has "
                            f"{train_series[0].shape[0]}")
        lengths += [s.shape[1] for s in test_series]
    longest = max(lengths)
    if max_len is None:
        max_len = longest
    elif max_len < longest:
        raise DataError(f"{where_train}: series of up to {longest} steps do not fit max_len {max_len}")
    test = None
    if test_series is not None:
        test = _tensors(test_series, scaler, longest, encode_labels(test_labels, classes, where_test))
    val = _tensors([train_series[i] for i in val_idx], scaler, longest, y[val_idx]) if len(val_idx) else None
    return ClassificationData(classes, scaler, max_len, train_series[0].shape[0],
                              _tensors(fit_series, scaler, longest, y[fit_idx]), val, test, val_idx.tolist(),
                              files or {})


class AugmentedCases(Dataset):
    """The training cases as the optimiser sees them under a recipe: each draw gets fresh Gaussian noise (std
    ``jitter``) and a fresh factor per channel (around 1, std ``scaling``) on its valid steps, and a target that
    keeps ``1 - label_smoothing`` on its class and shares the rest over all classes (as ``F.cross_entropy``'s
    ``label_smoothing``). The draws come from torch's global generator, which checkpoints keep: a resumed run
    draws what an uninterrupted one would."""

    def __init__(self, cases: TensorDataset, n_classes: int, options: ClassificationOptions):
        self.cases, self.n_classes, self.options = cases, n_classes, options

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, padding, y = self.cases[index]
        valid = (~padding).unsqueeze(-1).to(x.dtype)
        if self.options.scaling:
            x = x * (1.0 + self.options.scaling * torch.randn(1, x.shape[-1], dtype=x.dtype))
        if self.options.jitter:
            x = x + self.options.jitter * torch.randn(x.shape, dtype=x.dtype) * valid
        smoothing = self.options.label_smoothing
        target = torch.full((self.n_classes,), smoothing / self.n_classes, dtype=x.dtype)
        target[y] += 1.0 - smoothing
        return x, padding, target


def _cases(part: TensorDataset | None) -> tuple[np.ndarray, np.ndarray] | None:
    """A split's scaled, zero-padded cases (n, T, C) and class indices, as the model sees them."""
    return None if part is None else (part.tensors[0].numpy(), part.tensors[2].numpy())


def baseline_report(data: ClassificationData, seed: int) -> dict[str, dict[str, Any]]:
    """The baselines fitted on the run's training cases, scored on its validation and test cases, at the run's
    torch threads; torch's thread count is restored after them (aeon's thread limits set the OpenMP count that
    torch reads back to the machine's cores: later runs of a 1-thread sweep worker oversubscribed its CPUs)."""
    threads = torch.get_num_threads()
    try:
        return classification_baselines(_cases(data.train), {"val": _cases(data.val), "test": _cases(data.test)},
                                        seed, n_jobs=threads)
    finally:
        torch.set_num_threads(threads)


class ClassificationTask(Task):
    """Per-step logits averaged over valid steps; cross-entropy; selection on (accuracy, -loss)."""

    name = TASK
    options_class = ClassificationOptions
    window_option = "max_len"
    cli_aliases = {"max_len": ("--window",)}  # the flag's name before the option tables
    excluded_train_options = ("stride",)  # a case is trained whole, not in windows
    # Paper-spec §1.2: the SBT uses the fixed random Q/K/V activation mask (a = 0.5); the dense model full attention.
    model_defaults = {"sbt": {"attention": "qkv_mask"}, "dense": {"attention": "full"}}
    auto_help = {"max_len": f"the longest series of the train and test files (estimator: {LENGTH_MARGIN} x its "
                            "longest, exactly the longest for step_t attention or layer_time norm)",
                 "epochs": f"{DEFAULT_EPOCHS}, {SPARSE_EPOCHS} for an sbt below density {SPARSE_BELOW}"}
    defaults = {"epochs": None}  # decided from the model: complete_train
    option_help = {"max_len": "the longest series the model takes"}
    state_keys = frozenset({"classes", "scaler", "val_indices"})
    data_help = "UEA/<Name>, a folder with <Name>_TRAIN.ts and <Name>_TEST.ts, a *_TRAIN.ts file, or TRAIN,TEST"
    canonical_data = staticmethod(canonical_spec)
    validation_objective = ReportedMetric("accuracy", MAXIMIZE, "validation accuracy")
    test_metrics = (ReportedMetric("accuracy", MAXIMIZE, "test accuracy"),)

    # --- data -------------------------------------------------------------------------------------------
    def load(self, data: str, missing_value: float | None = None) -> DataSource:
        spec = self.canonical_data(data)
        train_file, test_file = load_classification(spec, missing_value=missing_value)
        files = {split: {"path": str(ts.path), "sha256": sha256_file(ts.path)}
                 for split, ts in (("train", train_file), ("test", test_file))}
        check_labels(list(train_file.labels), str(train_file.path))
        classes = train_file.class_labels or sorted({str(label) for label in train_file.labels})
        return DataSource(spec, ClassificationSource(
            train_file.series, [str(label) for label in train_file.labels], classes, test_file.series,
            [str(label) for label in test_file.labels], str(train_file.path), str(test_file.path), files))

    def complete_model(self, fields: dict[str, Any], source: DataSource,
                       options: TaskOptions) -> dict[str, Any]:
        cases: ClassificationSource = source.data
        derived = {"in_channels": cases.n_channels, "out_dim": len(cases.classes)}
        for key, value in derived.items():
            if key in fields and fields[key] != value:  # a config written for other data
                raise ConfigError(f"model {key} is {fields[key]!r} in the config, but the data gives {value}")
        fields = {**fields, **derived}
        longest = max(cases.lengths)
        if fields.get("max_len") is None:
            fixed = needs_fixed_length(fields["attention"], fields["norm"])
            fields["max_len"] = LENGTH_MARGIN * longest if source.fit_only and not fixed else longest
        else:
            check_positive_int(fields["max_len"], "model max_len")
            if fields["max_len"] < longest:
                raise DataError(f"{cases.where_train}: series of up to {longest} steps do not fit max_len "
                                f"{fields['max_len']}")
        return fields

    def complete_train(self, fields: dict[str, Any], model: ModelConfig) -> dict[str, Any]:
        if "epochs" in fields:
            return fields
        sparse = model.linear == "sparse_binary" and model.density < SPARSE_BELOW
        return {**fields, "epochs": SPARSE_EPOCHS if sparse else DEFAULT_EPOCHS}

    def check_run(self, run: RunConfig, source: DataSource) -> None:
        if run.train.stride != 1:
            raise ConfigError(f"stride={run.train.stride}: classification trains on whole cases, not windows "
                              "(stride 1)")
        lengths = set(source.data.lengths)
        if run.model.needs_fixed_length and lengths != {run.model.max_len}:
            raise ConfigError(f"attention {run.model.attention} with norm {run.model.norm} needs series of one "
                              f"length (step_t and layer_time do), but these have unequal lengths ({min(lengths)} to "
                              f"{max(lengths)}); use attention full or qkv_mask and norm batch or none")

    def prepare(self, source: DataSource, run: RunConfig, state: dict[str, Any] | None = None) -> ClassificationData:
        cases: ClassificationSource = source.data
        state = state or {}
        return prepare_classification(
            cases.train_series, cases.train_labels, test_series=cases.test_series, test_labels=cases.test_labels,
            classes=state.get("classes", cases.classes), val_fraction=run.train.val_fraction, seed=run.train.seed,
            max_len=run.model.max_len, where_train=cases.where_train, where_test=cases.where_test,
            val_indices=state.get("val_indices"),
            scaler=ChannelScaler.from_dict(state["scaler"]) if "scaler" in state else None, files=cases.files)

    def task_state(self, data: ClassificationData) -> dict[str, Any]:
        return {"classes": data.classes, "scaler": data.scaler.to_dict(), "val_indices": data.val_indices,
                "files": data.files}

    def datasets(self, data: ClassificationData, run: RunConfig):
        options = ClassificationOptions.from_dict(run.task_options)
        train = AugmentedCases(data.train, len(data.classes), options) if options.changes_training_cases else data.train
        return train, data.val

    # --- what the output means -----------------------------------------------------------------------------
    @staticmethod
    def logits(model: torch.nn.Module, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        padding_mask = padding if padding.any() else None  # unpadded batches take the plain path
        per_step = model(x, padding_mask)
        valid = (~padding).unsqueeze(-1).to(per_step.dtype)
        return (per_step * valid).sum(1) / valid.sum(1)

    def training_loss(self, model, batch):
        x, padding, y = batch  # y: class indices, or class probabilities under a recipe (AugmentedCases)
        return F.cross_entropy(self.logits(model, x, padding), y)

    @torch.no_grad()
    def predict_logits(self, model, dataset: TensorDataset, batch_size: int, device: torch.device) -> torch.Tensor:
        was_training = model.training
        model.eval()
        out = [self.logits(model, x.to(device), padding.to(device)).cpu()
               for x, padding, *_ in DataLoader(dataset, batch_size=batch_size)]
        model.train(was_training)
        return torch.cat(out)

    def evaluate(self, model, dataset, batch_size, device) -> dict[str, float]:
        logits = self.predict_logits(model, dataset, batch_size, device)
        y = dataset.tensors[2]
        return {"accuracy": float((logits.argmax(1) == y).float().mean()),
                "loss": float(F.cross_entropy(logits, y)), "n": int(len(y))}

    def selection_key(self, metrics: dict[str, float]) -> tuple[float, ...]:
        return (metrics["accuracy"], -metrics["loss"])

    # --- the report -------------------------------------------------------------------------------------------
    def report(self, run: RunConfig, model: torch.nn.Module, data: ClassificationData,
               device: torch.device) -> TaskReport:
        val = self.evaluate(model, data.val, EVAL_BATCH, device) if data.val is not None else {}
        test = self.evaluate(model, data.test, EVAL_BATCH, device) if data.test is not None else {}
        metrics: dict[str, Any] = {
            "val": val, "test": test, "classes": data.classes, "max_len": run.model.max_len,
            "n_train": len(data.train), "n_val": 0 if data.val is None else len(data.val),
            "n_test": 0 if data.test is None else len(data.test),
            "selection": "best validation accuracy (ties: lower validation loss); validation held out of training",
        }
        if ClassificationOptions.from_dict(run.task_options).baselines:
            metrics["baselines"] = baseline_report(data, run.train.seed)
        return TaskReport(metrics)

    def inference_state(self, run, state, run_dir, checkpoint, epoch) -> dict[str, Any]:
        return {"classes": list(state["classes"])}


class SBTClassifier(ClassifierMixin, SBTEstimator):
    """scikit-learn style classifier of multivariate series: ``fit(X, y)``, ``predict``, ``predict_proba``,
    ``score``.

    ``X`` is (n_cases, n_channels, n_timepoints) as in aeon, (n_cases, n_timepoints) for univariate series,
    or a list of (n_channels, length_i) arrays for unequal lengths; NaN marks a missing value (interpolated).
    Series longer than the fitted ``max_len`` (see ``sbts.tasks.classification``) are refused with the
    length and the limit. With ``baselines=True``, ``baselines_`` holds MiniRocket, MultiRocket and 1-NN DTW
    fitted on the same training cases and scored on the validation cases."""

    task_class = ClassificationTask
    # aeon's capability tags, so that aeon users see what the classifier handles.
    _tags = {"capability:multivariate": True, "capability:unequal_length": True, "capability:missing_values": True,
             "X_inner_type": ["numpy3D", "np-list"], "algorithm_type": "deeplearning", "python_dependencies": "torch"}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True  # univariate (n_cases, n_timepoints)
        tags.input_tags.three_d_array = True  # (n_cases, n_channels, n_timepoints)
        tags.input_tags.allow_nan = True  # missing values are interpolated
        return tags

    def fit(self, X, y=None):
        if y is None:
            raise SBTSError("SBTClassifier requires y to be passed, but the target y is None")
        series = as_series_list(X)
        labels = np.asarray(y)
        if labels.ndim == 2 and labels.shape[1] == 1:  # a column vector: scikit-learn ravels it, with a warning
            warnings.warn("A column-vector y was passed when a 1d array was expected: it was ravelled",
                          DataConversionWarning)
            labels = labels.ravel()
        if labels.ndim != 1 or len(labels) != len(series):
            raise SBTSError(f"X has {len(series)} cases but y has {len(labels)} labels (shape {labels.shape}); y needs "
                            "one label per case")
        if type_of_target(labels) == "continuous":
            raise SBTSError("y holds continuous values; a classifier needs class labels (use a regressor for "
                            "continuous targets)")
        self.classes_ = np.unique(labels)  # scikit-learn's order; labels keep their type
        names = [str(c) for c in self.classes_]
        if len(set(names)) != len(names):
            raise SBTSError(f"class labels {list(self.classes_)} are not distinct as strings")
        text = [str(label) for label in labels]
        check_labels(text, "y")
        source = DataSource(IN_MEMORY, ClassificationSource(fill_missing(series, "X"), text, names, where_train="X",
                                                            files={}), fit_only=True)
        return self._fit_source(source)

    def _fitted(self, task, data: ClassificationData, device) -> None:
        self.max_len_ = data.max_len
        if ClassificationOptions.from_dict(self.run_config_.task_options).baselines:  # fit has no test cases
            self.baselines_ = baseline_report(data, self.run_config_.train.seed)

    def _dataset(self, X) -> TensorDataset:
        self._check_fitted()
        series = fill_missing(as_series_list(X), "X")
        if series[0].shape[0] != self.n_features_in_:
            raise SBTSError(f"X has {series[0].shape[0]} channels; the model was fitted on {self.n_features_in_}")
        lengths = {s.shape[1] for s in series}
        if max(lengths) > self.max_len_:
            raise SBTSError(f"X has a series of {max(lengths)} steps; this model takes at most {self.max_len_} "
                            "(max_len: refit with a larger one)")
        if self.config_.needs_fixed_length and lengths != {self.max_len_}:
            raise SBTSError(f"this model ({self.config_.attention} attention, {self.config_.norm} norm) takes series "
                            f"of exactly {self.max_len_} steps; X has lengths {sorted(lengths)[:5]}")
        return _tensors(series, self.scaler_, max(lengths), np.zeros(len(series), dtype=np.int64))

    def predict_proba(self, X) -> np.ndarray:
        dataset = self._dataset(X)
        logits = ClassificationTask().predict_logits(self.model_, dataset, EVAL_BATCH, self.device_)
        return torch.softmax(logits, 1).numpy()

    def predict(self, X) -> np.ndarray:
        self._check_fitted()
        return self.classes_[self.predict_proba(X).argmax(1)]

    def decision_function(self, X) -> np.ndarray:
        """The logits (n_cases, n_classes), averaged over each case's steps; for two classes, as scikit-learn,
        one score per case (the second class's logit minus the first's: positive means ``classes_[1]``)."""
        dataset = self._dataset(X)
        logits = ClassificationTask().predict_logits(self.model_, dataset, EVAL_BATCH, self.device_).numpy()
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def _inference_state(self) -> dict[str, Any]:
        return {"classes": [str(c) for c in self.classes_]}
