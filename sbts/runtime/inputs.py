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
from sbts.runtime.model import ClassifierRuntime, RuntimeModel


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


def write_predictions(model: RuntimeModel, cases: list[np.ndarray], labels: list[str] | None, source: str | Path,
                      output: str | Path | None, *, proba: bool = False) -> None:
    """One CSV row per case: its index, prediction (and label, and class probabilities if asked)."""
    if not isinstance(model, ClassifierRuntime):
        raise DataError(f"{source}: predict supports classification models; this one is {model.task!r}")
    probabilities = model.predict_proba(cases, str(source))
    predicted = model.class_names(probabilities)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case", "prediction"] + (["label"] if labels else []) +
                    ([f"p_{c}" for c in model.classes] if proba else []))
    for i, prediction in enumerate(predicted):
        writer.writerow([i, prediction] + ([labels[i]] if labels else []) +
                        ([f"{p:.6g}" for p in probabilities[i]] if proba else []))
    if output is None:
        sys.stdout.write(buffer.getvalue())
    else:
        atomic_write_bytes(output, buffer.getvalue().encode())
    if labels:
        accuracy = float(np.mean([p == label for p, label in zip(predicted, labels)]))
        print(f"sbts: accuracy {accuracy:.4f} on {len(labels)} labelled cases of {source}", file=sys.stderr)
