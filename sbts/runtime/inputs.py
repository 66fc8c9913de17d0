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
from sbts.data.tables import npy_array, read_bytes, read_series_table
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
        array = npy_array(path, read_bytes(path)[0])
        if array.ndim != 3 or array.dtype.kind not in "iuf":  # complex would silently lose its imaginary part
            raise DataError(f"{path}: expected a real-valued array (cases, channels, length), got {array.dtype} "
                            f"{array.shape}")
        return [case.astype(np.float64) for case in array], None
    raise DataError(f"{path}: unknown input type (use .ts, .ts.gz or .npy)")


def read_series(path: str | Path, columns: list[str] | None = None) -> np.ndarray:
    """A series file for a detector or forecaster (csv, txt or npy; a leading date column is skipped). Named
    columns must be ``columns`` (the model's variables), in that order, when the model has names. Missing-value
    codes (``-9999``) are found and interpolated as the training loaders do (``sbts.data.missing``)."""
    table = read_series_table(path, date_column="auto")
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


BAD_ROW_ACTIONS = ("fail", "skip")


def stream_rows(path: str, n_channels: int, columns: list[str] | None, on_bad_row: str = "fail"):
    """(line number, row) for each data line of a csv or whitespace file, or of standard input (``-``), as it
    arrives (``tail -f log.csv | sbts predict m.sbts --stream --input -``). A first line that is not numbers is
    a header: its names must be ``columns`` when the model has names (a leading date column is skipped). A
    malformed row is reported on stderr with its line and skipped, or ends the stream (``on_bad_row``)."""
    if on_bad_row not in BAD_ROW_ACTIONS:
        raise DataError(f"on_bad_row must be one of {', '.join(BAD_ROW_ACTIONS)}, got {on_bad_row!r}")
    where = "standard input" if path == "-" else str(path)
    try:  # opened now, not at the first row: a missing file fails before any output is written
        handle = sys.stdin if path == "-" else open(path, encoding="utf-8", newline="")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return _rows(handle, where, n_channels, columns, on_bad_row, close=path != "-")


def _rows(handle, where: str, n_channels: int, columns: list[str] | None, on_bad_row: str, close: bool):
    skip_first = False
    with handle if close else _NoClose(handle):
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            fields = [f.strip() for f in (text.split(",") if "," in text else text.split())]
            if skip_first:
                fields = fields[1:]
            try:
                row = np.array([float(f) for f in fields], dtype=np.float64)
            except ValueError:
                if number == 1:  # a header
                    skip_first = len(fields) == n_channels + 1
                    names = fields[1:] if skip_first else fields
                    if columns is not None and names != columns:
                        raise DataError(f"{where}: line 1: columns {','.join(names)} are not the model's variables "
                                        f"{','.join(columns)} (in that order)") from None
                    continue
                row = None
            problem = ("not numbers" if row is None else f"{len(row)} values, the model takes {n_channels}"
                       if len(row) != n_channels else "a non-finite value" if not np.isfinite(row).all() else None)
            if problem is not None:
                message = f"{where}: line {number}: bad row ({problem})"
                if on_bad_row == "fail":
                    raise DataError(message)
                print(f"sbts: warning: {message}; skipped", file=sys.stderr, flush=True)
                continue
            yield number, row


class _NoClose:
    """Standard input in a ``with`` block, left open."""

    def __init__(self, handle):
        self.handle = handle

    def __enter__(self):
        return self.handle

    def __exit__(self, *exc) -> None:
        return None

