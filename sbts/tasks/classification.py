"""Multivariate time series classification (paper-spec §1.2, §5.1).

Data flow: .ts files -> fill missing values -> z-score per channel with statistics of the training
part only -> pad to a common length with a key-padding mask -> model -> per-step logits averaged
over the valid (non-padded) steps -> cross-entropy / accuracy.

Validation is a stratified split held out of the training set and disjoint from it (the official
code's validation overlaps training). Both the CLI (``train_run``) and the scikit-learn style
``SBTClassifier`` go through ``prepare_classification`` and the shared ``Trainer``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from sbts.config import ModelConfig, RunConfig, TrainConfig, check_positive_int
from sbts.data.preprocessing import ChannelScaler, fill_missing, pad_to_length
from sbts.errors import ConfigError, DataError, SBTSError
from sbts.models import create_model, model_config
from sbts.tasks.runs import TaskHooks, TrainedRun, fit_run, load_run_model, reload_trained, training_record
from sbts.training import FitResult, Trainer, atomic_write_json, seed_everything

TASK = "classification"

# Paper-spec §1.2: the SBT uses the fixed random Q/K/V activation mask (a = 0.5); the dense model full attention.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "sbt": {"attention": "qkv_mask", "qkv_density": 0.5, "norm": "batch"},
    "dense": {"attention": "full", "norm": "batch"},
}


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

    @property
    def padded(self) -> bool:
        return any(bool(part.tensors[1].any()) for part in (self.train, self.val, self.test) if part is not None)


def as_series_list(X: Any, where: str = "X") -> list[np.ndarray]:
    """Accept (n_cases, n_channels, n_timepoints) arrays or a list of (n_channels, length_i) arrays."""
    if isinstance(X, np.ndarray) and X.dtype != object:
        if X.ndim != 3:
            raise SBTSError(f"{where}: expected shape (n_cases, n_channels, n_timepoints), got {X.shape}")
        return [np.asarray(case, dtype=np.float64) for case in X]
    series = [np.asarray(case, dtype=np.float64) for case in X]
    for i, case in enumerate(series):
        if case.ndim != 2:
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


def _tensors(series: list[np.ndarray], scaler: ChannelScaler, max_len: int, y: np.ndarray) -> TensorDataset:
    X, padding = pad_to_length(scaler.transform(series), max_len)
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
                           val_indices: Sequence[int] | None = None,
                           scaler: ChannelScaler | None = None) -> ClassificationData:
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
    if max_len is None:
        max_len = max(lengths)
    elif max_len < max(lengths):
        raise DataError(f"{where_train}: series of up to {max(lengths)} steps do not fit max_len {max_len}")
    test = None
    if test_series is not None:
        test = _tensors(test_series, scaler, max_len, encode_labels(test_labels, classes, where_test))
    val = _tensors([train_series[i] for i in val_idx], scaler, max_len, y[val_idx]) if len(val_idx) else None
    return ClassificationData(classes, scaler, max_len, train_series[0].shape[0],
                              _tensors(fit_series, scaler, max_len, y[fit_idx]), val, test, val_idx.tolist())


class ClassificationTask:
    """Per-step logits averaged over valid steps; cross-entropy; selection on (accuracy, -loss)."""

    @staticmethod
    def logits(model: torch.nn.Module, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        padding_mask = padding if padding.any() else None  # unpadded batches take the plain path
        per_step = model(x, padding_mask)
        valid = (~padding).unsqueeze(-1).to(per_step.dtype)
        return (per_step * valid).sum(1) / valid.sum(1)

    def training_loss(self, model, batch):
        x, padding, y = batch
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

    @staticmethod
    def selection_key(metrics: dict[str, float]) -> tuple[float, ...]:
        return (metrics["accuracy"], -metrics["loss"])


def build_model_config(model_name: str, overrides: dict[str, Any], *, n_channels: int, n_classes: int,
                       max_len: int, padded: bool = False) -> ModelConfig:
    """The model for a dataset; ``padded`` says that some series are shorter than ``max_len``."""
    if not isinstance(model_name, str):
        raise ConfigError(f"model name must be a string, got {model_name!r}")
    for key, value in (("in_channels", n_channels), ("out_dim", n_classes), ("max_len", max_len)):
        if key in overrides and overrides[key] != value:  # a config written for other data
            raise ConfigError(f"model {key} is {overrides[key]!r} in the config, but the data gives {value}")
    fields = {**MODEL_DEFAULTS.get(model_name, {}), **overrides,
              "in_channels": n_channels, "out_dim": n_classes, "max_len": max_len}
    config = model_config(model_name, **fields)
    if padded and config.needs_fixed_length:
        raise ConfigError(f"attention {config.attention} with norm {config.norm} needs series of one length (step_t "
                          f"and layer_time do), but these have unequal lengths (up to {max_len}); use attention full "
                          "or qkv_mask and norm batch or none")
    return config


class SBTClassifier(ClassifierMixin, BaseEstimator):
    """scikit-learn style classifier: ``fit(X, y)``, ``predict``, ``predict_proba``, ``score``.

    ``X`` is (n_cases, n_channels, n_timepoints) like aeon, or a list of (n_channels, length_i)
    arrays for unequal lengths. ``model`` is a registered name (``"sbt"`` or ``"dense"``).
    """

    def __init__(self, model: str = "sbt", density: float = 0.5, d_model: int = 64, n_heads: int = 2,
                 n_layers: int = 2, d_ff: int = 256, attention: str | None = None, qkv_density: float = 0.5,
                 norm: str = "batch", epochs: int = 100, batch_size: int = 8, lr: float = 1e-3, patience: int = 0,
                 val_fraction: float = 0.1, max_len: int | None = None, seed: int = 0, device: str = "auto",
                 verbose: bool = False):
        self.model = model
        self.density = density
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.d_ff = d_ff
        self.attention = attention
        self.qkv_density = qkv_density
        self.norm = norm
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.patience = patience
        self.val_fraction = val_fraction
        self.max_len = max_len
        self.seed = seed
        self.device = device
        self.verbose = verbose

    def _model_overrides(self) -> dict[str, Any]:
        overrides = {"d_model": self.d_model, "n_heads": self.n_heads, "n_layers": self.n_layers, "d_ff": self.d_ff,
                     "qkv_density": self.qkv_density, "norm": self.norm, "seed": self.seed}
        if self.model != "dense":
            overrides["density"] = self.density
        if self.attention is not None:
            overrides["attention"] = self.attention
        return overrides

    def fit(self, X, y):
        series = as_series_list(X)
        if len(y) != len(series):
            raise SBTSError(f"X has {len(series)} cases but y has {len(y)} labels")
        train_config = TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, patience=self.patience,
                                   val_fraction=self.val_fraction, seed=self.seed, device=self.device)
        self.classes_ = np.unique(np.asarray(y))  # scikit-learn's order; labels keep their type
        data = prepare_classification(series, [str(label) for label in y], classes=[str(c) for c in self.classes_],
                                      val_fraction=self.val_fraction, seed=self.seed, max_len=self.max_len)
        self.config_ = build_model_config(self.model, self._model_overrides(), n_channels=data.n_channels,
                                          n_classes=len(data.classes), max_len=data.max_len, padded=data.padded)
        seed_everything(self.seed)
        model = create_model(self.config_)
        trainer = Trainer(model, ClassificationTask(), train_config, verbose=self.verbose)
        result = trainer.fit(data.train, data.val)
        self.model_, self.scaler_, self.max_len_ = trainer.model.eval(), data.scaler, data.max_len
        self.n_features_in_ = data.n_channels
        self.history_, self.best_epoch_ = result.history, result.best_epoch
        return self

    def _dataset(self, X) -> TensorDataset:
        if not hasattr(self, "model_"):
            raise SBTSError("this SBTClassifier is not fitted yet; call fit(X, y) first")
        series = fill_missing(as_series_list(X), "X")
        if series[0].shape[0] != self.n_features_in_:
            raise SBTSError(f"X has {series[0].shape[0]} channels; the model was fitted on {self.n_features_in_}")
        lengths = {s.shape[1] for s in series}
        if max(lengths) > self.max_len_:
            raise SBTSError(f"X has series of length {max(lengths)}, longer than the fitted max_len {self.max_len_}; "
                            "refit with max_len set")
        if self.config_.needs_fixed_length and lengths != {self.max_len_}:
            raise SBTSError(f"this model ({self.config_.attention} attention, {self.config_.norm} norm) takes series "
                            f"of exactly {self.max_len_} steps; X has lengths {sorted(lengths)[:5]}")
        return _tensors(series, self.scaler_, self.max_len_, np.zeros(len(series), dtype=np.int64))

    def predict_proba(self, X) -> np.ndarray:
        dataset = self._dataset(X)
        device = next(self.model_.parameters()).device
        logits = ClassificationTask().predict_logits(self.model_, dataset, 256, device)
        return torch.softmax(logits, 1).numpy()

    def predict(self, X) -> np.ndarray:
        best = self.predict_proba(X).argmax(1)  # first: raises the "not fitted" error
        return self.classes_[best]

    def export(self, path: str | Path, float_dtype: str = "float32"):
        """Write the fitted model as a ``.sbts`` artifact for ``sbts.runtime`` (class names become strings)."""
        from sbts.export.artifact import export_model

        if not hasattr(self, "model_"):
            raise SBTSError("this SBTClassifier is not fitted yet; call fit(X, y) first")
        return export_model(self.model_, path, task=TASK, inference_state={"classes": [str(c) for c in self.classes_]},
                            scaler=self.scaler_, float_dtype=float_dtype)


# --- runs: the CLI's ``sbts train classification`` and ``sbts evaluate`` -------------------------

def _load_data(data_spec: str, train: TrainConfig, *, classes: list[str] | None = None,
               val_indices: Sequence[int] | None = None, max_len: int | None = None,
               scaler: ChannelScaler | None = None) -> tuple[ClassificationData, dict[str, dict[str, str]]]:
    """Read, split, scale and pad a dataset; also return the files read with their SHA-256."""
    from sbts.data import load_classification, sha256_file

    train_file, test_file = load_classification(data_spec)
    files = {split: {"path": str(ts.path), "sha256": sha256_file(ts.path)}
             for split, ts in (("train", train_file), ("test", test_file))}
    data = prepare_classification(
        train_file.series, list(train_file.labels), test_series=test_file.series, test_labels=list(test_file.labels),
        classes=classes or train_file.class_labels, val_fraction=train.val_fraction, seed=train.seed,
        max_len=max_len, where_train=str(train_file.path), where_test=str(test_file.path),
        val_indices=val_indices, scaler=scaler)
    return data, files


def _resolve_run_config(spec: dict[str, Any]) -> tuple[RunConfig, ClassificationData, dict[str, Any]]:
    from sbts.data import canonical_spec

    train = TrainConfig.from_dict(spec.get("train", {}), "train config")
    if spec.get("task_options"):
        raise ConfigError(f"classification has no task options; got {', '.join(sorted(spec['task_options']))}")
    if train.stride != 1:
        raise ConfigError(f"stride={train.stride}: classification trains on whole cases, not windows (stride 1)")
    data_spec = canonical_spec(spec["data"])
    max_len = spec.get("model", {}).get("max_len")
    if max_len is not None:
        check_positive_int(max_len, "model max_len")
    data, files = _load_data(data_spec, train, max_len=max_len)
    model = build_model_config(spec["model_name"], spec.get("model", {}), n_channels=data.n_channels,
                               n_classes=len(data.classes), max_len=data.max_len, padded=data.padded)
    run = RunConfig(task=TASK, data=data_spec, model=model, train=train, model_name=spec["model_name"])
    return run, data, {"classes": data.classes, "scaler": data.scaler.to_dict(), "val_indices": data.val_indices,
                       "files": files}


def _reload_data(run: RunConfig, task_state: dict[str, Any]) -> ClassificationData:
    """The run's data exactly as it was split and scaled when the run started (the files must not change)."""
    data, files = _load_data(run.data, run.train, classes=task_state["classes"],
                             val_indices=task_state["val_indices"], max_len=run.model.max_len,
                             scaler=ChannelScaler.from_dict(task_state["scaler"]))
    for split, recorded in task_state.get("files", {}).items():
        if files[split]["sha256"] != recorded["sha256"]:
            raise DataError(f"{files[split]['path']}: differs from the {split} file this run was trained on "
                            f"({recorded['path']}, sha256 {recorded['sha256'][:12]}...); its split and scaling no "
                            "longer apply")
    return data


HOOKS = TaskHooks(name=TASK, state_keys=frozenset({"classes", "scaler", "val_indices"}), resolve=_resolve_run_config,
                  reload=_reload_data, objective=lambda run: ClassificationTask(),
                  datasets=lambda data: (data.train, data.val))


def _summary(run: RunConfig, val: dict[str, float], test: dict[str, float], result: FitResult | None,
             data: ClassificationData, device: torch.device) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "task": TASK, "model": run.model_name, "dataset": run.data,
        "density": run.model.density, "sparsity": run.model.sparsity, "seed": run.train.seed,
        "val": val, "test": test, "classes": data.classes,
        "n_train": len(data.train), "n_val": 0 if data.val is None else len(data.val),
        "n_test": 0 if data.test is None else len(data.test),
        "selection": "best validation accuracy (ties: lower validation loss); validation held out of training",
    }
    return metrics | training_record(run, result, device)


def train_run(spec: dict[str, Any], run_dir: str | Path, *, resume: bool = False, verbose: bool = True,
              train_overrides: dict[str, Any] | None = None,
              on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train (or resume) a run in ``run_dir``; returns the metrics written to ``metrics.json``.

    On resume the saved ``config.json`` is authoritative; ``train_overrides`` may change only
    ``epochs``, ``patience`` and ``device``. If interrupted, returns ``{"interrupted": True, ...}``
    and the last checkpoint holds the finished epochs.
    """
    fitted = fit_run(HOOKS, spec, run_dir, resume=resume, verbose=verbose, train_overrides=train_overrides,
                     on_epoch_end=on_epoch_end)
    result, data, trainer = fitted.result, fitted.data, fitted.trainer
    if result.interrupted:
        return {"interrupted": True, "epochs": result.epochs_run, "run_dir": str(run_dir)}
    task = ClassificationTask()
    batch = fitted.run.train.batch_size * 8
    val = task.evaluate(trainer.model, data.val, batch, trainer.device) if data.val is not None else {}
    test = task.evaluate(trainer.model, data.test, batch, trainer.device)
    metrics = _summary(fitted.run, val, test, result, data, trainer.device)
    atomic_write_json(Path(run_dir) / "metrics.json", metrics)
    return metrics


def load_trained(run_dir: str | Path, checkpoint: str = "best") -> TrainedRun:
    """A saved run's model (on the CPU, eval mode) and what inference needs besides the weights."""
    run, model, state = load_run_model(HOOKS, run_dir, checkpoint)
    task_state = state["task_state"]
    return TrainedRun(run, model, state.get("epoch"), task_state,
                      inference_state={"classes": list(task_state["classes"])},
                      scaler=ChannelScaler.from_dict(task_state["scaler"]))


def evaluate_run(run_dir: str | Path, *, checkpoint: str = "best", device: str = "auto") -> dict[str, Any]:
    """Re-evaluate a saved run's checkpoint on its validation and test data (nothing is written)."""
    trained, data, model, torch_device = reload_trained(load_trained, HOOKS, run_dir, checkpoint, device)
    task = ClassificationTask()
    val = task.evaluate(model, data.val, 256, torch_device) if data.val is not None else {}
    test = task.evaluate(model, data.test, 256, torch_device)
    return _summary(trained.run, val, test, None, data, torch_device) | {"checkpoint": checkpoint,
                                                                          "epoch": trained.epoch}
