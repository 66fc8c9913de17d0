"""Input files for ``sbts predict`` and the CSV it writes (numpy and the standard library only).

The runtime classes (``sbts.runtime.model``) read their inputs and write their rows with these.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import numpy as np

from sbts.atomic import atomic_write_bytes
from sbts.data.tables import read_table
from sbts.data.ts_format import read_ts
from sbts.errors import DataError


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


def read_series(path: str | Path, columns: list[str] | None = None) -> np.ndarray:
    """A series file for a detector or forecaster (csv, txt or npy; a leading date column is skipped). Named
    columns must be ``columns`` (the model's variables), in that order, when the model has names."""
    table = read_table(path, date_column="auto")
    if table.columns is not None and columns is not None and table.columns != columns:
        raise DataError(f"{path}: columns {','.join(table.columns)} are not the model's variables "
                        f"{','.join(columns)} (in that order)")
    return table.values


def write_rows(header: list[str], rows, output: str | Path | None) -> None:
    """A CSV of ``rows`` under ``header``, to ``output`` (atomically) or standard output."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    text = buffer.getvalue()
    if output is None:
        sys.stdout.write(text)
    else:
        atomic_write_bytes(output, text.encode())
