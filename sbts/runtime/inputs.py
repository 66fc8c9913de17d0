"""Input files for ``sbts predict`` and the CSV it writes (numpy and the standard library only)."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import numpy as np

from sbts.atomic import atomic_write_bytes
from sbts.data.ts_format import read_ts
from sbts.errors import DataError
from sbts.runtime.model import AnomalyRuntime, ClassifierRuntime, ForecastRuntime, RuntimeModel


def read_cases(path: str | Path) -> tuple[list[np.ndarray], list[str] | None]:
    """Cases (n_channels, length_i) and their labels when the file has them.

    ``.ts`` / ``.ts.gz``: the UEA format. ``.npy``: a float array (cases, channels, length), read
    without pickle.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".ts", ".ts.gz")):
        ts = read_ts(path)
        labels = [str(label) for label in ts.labels]
        return ts.series, labels if any(labels) else None
    if name.endswith(".npy"):
        try:
            array = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"{path}: file not found") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable .npy array ({str(exc).splitlines()[0]})") from None
        if array.ndim != 3 or array.dtype.kind not in "iuf":  # complex would silently lose its imaginary part
            raise DataError(f"{path}: expected a real-valued array (cases, channels, length), got {array.dtype} "
                            f"{array.shape}")
        return [case.astype(np.float64) for case in array], None
    raise DataError(f"{path}: unknown input type (use .ts, .ts.gz or .npy)")


def _write(text: str, output: str | Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        atomic_write_bytes(output, text.encode())


def write_anomaly_scores(model: AnomalyRuntime, series: np.ndarray, source: str | Path, output: str | Path | None,
                         context: np.ndarray | None = None, context_source: str | Path = "context") -> None:
    """One CSV row per step of the series: step, score and, when the model has a threshold, predicted (0/1)."""
    scores = model.decision_function(series, context, str(source), str(context_source))
    threshold = model.threshold
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["step", "score"] + (["predicted"] if threshold is not None else []))
    for step, score in enumerate(scores):
        writer.writerow([step, f"{score:.9g}"] + ([int(score > threshold)] if threshold is not None else []))
    _write(buffer.getvalue(), output)
    if threshold is not None:
        print(f"sbts: {int(np.sum(scores > threshold))} of {len(scores)} steps of {source} above the threshold "
              f"{threshold:.6g}", file=sys.stderr)


def write_forecasts(model: ForecastRuntime, series: np.ndarray, source: str | Path, output: str | Path | None,
                    context: np.ndarray | None = None, context_source: str | Path = "context") -> None:
    """One CSV row per step of the series and one more: ``step`` and each variable's one-step-ahead forecast of
    that step from the rows before it; the last row (step n) forecasts the step after the series. Without
    context the first step has no history and its cells are empty."""
    every = model.predict_every_step(series, context, str(source), str(context_source))
    forecasts = np.concatenate([every, model.predict(series, str(source), context, str(context_source))[None]])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["step"] + model.columns)
    for step, row in enumerate(forecasts):
        writer.writerow([step] + ["" if np.isnan(v) else f"{v:.9g}" for v in row])
    _write(buffer.getvalue(), output)


def write_predictions(model: RuntimeModel, cases: list[np.ndarray], labels: list[str] | None, source: str | Path,
                      output: str | Path | None, *, proba: bool = False) -> None:
    """One CSV row per case: its index, prediction (and label, and class probabilities if asked)."""
    if not isinstance(model, ClassifierRuntime):
        raise DataError(f"{source}: this is a {model.task!r} model; per-case predictions are for classification")
    probabilities = model.predict_proba(cases, str(source))
    predicted = model.class_names(probabilities)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case", "prediction"] + (["label"] if labels else []) +
                    ([f"p_{c}" for c in model.classes] if proba else []))
    for i, prediction in enumerate(predicted):
        writer.writerow([i, prediction] + ([labels[i]] if labels else []) +
                        ([f"{p:.6g}" for p in probabilities[i]] if proba else []))
    _write(buffer.getvalue(), output)
    if labels:
        accuracy = float(np.mean([p == label for p, label in zip(predicted, labels)]))
        print(f"sbts: accuracy {accuracy:.4f} on {len(labels)} labelled cases of {source}", file=sys.stderr)
