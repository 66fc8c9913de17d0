"""Reading one numeric table (a series file) from text or ``.npy``, plain or gzipped.

Text files hold numbers separated by commas or by whitespace (taken from the first line), one time step a line,
with an optional first line of non-numeric column names and, on request, a leading date column
(``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM[:SS]`` or the same with ``T``; in a whitespace-separated file the date must
be one token, so write it with ``T``). ``.npy`` files hold a (T, D) or (T,) numeric array and are read without
unpickling. Any file may be gzip-compressed (by suffix or magic bytes). Every problem raises
:class:`~sbts.errors.DataError` with one line naming the file (and, for text, ``<file>:<line>: column <c>``).
Values are returned unscaled.

Files larger than the input limit (and gzip files that decompress past it) are refused before they are read
whole: see :mod:`sbts.data.limits` (``max_input_bytes=`` or ``$SBTS_MAX_INPUT_BYTES``). :func:`read_series_table`
also treats missing-value codes (``-9999``: the rule is in :mod:`sbts.data.missing`) and a user-given
``missing_value`` as missing: each column's missing cells are reported in one warning line and linearly
interpolated over the rows (time); leading and trailing ones take the nearest valid value.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import tokenize
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sbts.data.limits import check_file_size, gunzip_limited, input_limit
from sbts.data.missing import find_missing_codes
from sbts.data.preprocessing import fill_missing
from sbts.errors import DataError, one_line

__all__ = ["DATE_COLUMN_MODES", "ReadOptions", "Table", "is_date", "is_number", "read_bytes", "read_series",
           "read_series_table", "read_table", "shown", "without_missing"]

GZIP_MAGIC = b"\x1f\x8b"
NPY_MAGIC = b"\x93NUMPY"
_BOM = b"\xef\xbb\xbf"
_SHOWN_CHARS = 30

# "auto": the first column holds dates when the first data row's first cell is a date and not a number.
DATE_COLUMN_MODES = ("auto", "none", "required")
# Whole seconds only: dates are kept as datetime64[s], and numpy would silently drop a fraction.
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?)?")
_DATE_FORMS = "YYYY-MM-DD[ HH:MM[:SS]]"


@dataclass
class Table:
    """A file's values, shape (rows, columns), and the 1-based line of each row (None for .npy).

    ``dates`` (datetime64[s], one per row) is set when the file has a leading date column, which is then not
    part of ``values``; ``columns`` holds the header's names of the value columns when the file has a header.
    """

    path: Path
    values: np.ndarray
    line_numbers: list[int] | None
    sha256: str
    dates: np.ndarray | None = None
    columns: list[str] | None = None

    def line(self, row: int) -> str:
        """Where a row is: ``<file>:<line>``, or ``<file>: row <row> (0-based)`` for .npy."""
        if self.line_numbers is None:
            return f"{self.path}: row {row} (0-based)"
        return f"{self.path}:{self.line_numbers[row]}"

    def where(self, row: int, column: int) -> str:
        """Where a value is; ``column`` indexes ``values``, the message counts the file's columns from 1."""
        if self.line_numbers is None:
            return f"{self.path}: row {row}, column {column} (0-based)"
        date_columns = 0 if self.dates is None else 1
        return f"{self.path}:{self.line_numbers[row]}: column {column + 1 + date_columns}"

    def record(self) -> dict[str, str]:
        return {"path": str(self.path.resolve()), "sha256": self.sha256}


def shown(cell: str) -> str:
    """A cell quoted for a message, cut short when long."""
    return repr(cell if len(cell) <= _SHOWN_CHARS else cell[:_SHOWN_CHARS] + "...")


@dataclass(frozen=True)
class ReadOptions:
    """How a loader reads its series files: the user's missing value (None: codes only) and the input limit
    (None: ``$SBTS_MAX_INPUT_BYTES`` or the default, see :mod:`sbts.data.limits`)."""

    missing_value: float | None = None
    max_input_bytes: int | None = None


def read_bytes(path: Path, max_input_bytes: int | None = None) -> tuple[bytes, str]:
    """The file's content (decompressed when gzip, by suffix or magic bytes) and the sha256 of the file itself;
    a file, or its decompressed content, larger than the input limit is refused."""
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a file")
    limit = input_limit(max_input_bytes)
    check_file_size(path, limit)  # also says when there is no file
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read file: {one_line(exc.strerror or exc)}") from exc
    digest = hashlib.sha256(raw).hexdigest()  # of the bytes parsed, so the record cannot describe another version
    if path.suffix.lower() == ".gz" or raw.startswith(GZIP_MAGIC):
        raw = gunzip_limited(path, raw, limit)
    return raw, digest


def split_cells(line: str, delimiter: str | None) -> list[str]:
    return line.split() if delimiter is None else [cell.strip() for cell in line.split(delimiter)]


def is_number(cell: str) -> bool:
    if "_" in cell:  # float() accepts "1_000"; numpy's parser does not
        return False
    try:
        float(cell)
    except ValueError:
        return False
    return True


def is_date(cell: str) -> bool:
    """Whether a cell is an ISO-like date or date-time that exists on the calendar."""
    if _DATE_RE.fullmatch(cell) is None:
        return False
    try:
        np.datetime64(cell, "s")
    except ValueError:  # month 13, February 30, hour 25...
        return False
    return True


def _locate_text_problem(path: Path, lines: list[str], line_indices: list[int], delimiter: str | None,
                         width: int, width_source: str, has_dates: bool) -> None:
    """Raise a DataError for the first bad row or cell (the slow pass run only once the fast parser failed)."""
    for index in line_indices:
        cells = split_cells(lines[index], delimiter)
        if len(cells) != width:
            raise DataError(f"{path}:{index + 1}: expected {width} columns ({width_source}), found {len(cells)}")
        for column, cell in enumerate(cells, 1):
            if not cell:
                raise DataError(f"{path}:{index + 1}: column {column}: empty value")
            if column == 1 and has_dates:
                if not is_date(cell):
                    raise DataError(f"{path}:{index + 1}: column 1: not a date: {shown(cell)} (expected "
                                    f"{_DATE_FORMS})")
                continue
            if not is_number(cell):
                raise DataError(f"{path}:{index + 1}: column {column}: not a number: {shown(cell)}")
            if not math.isfinite(float(cell)):
                raise DataError(f"{path}:{index + 1}: column {column}: value {shown(cell)} is not finite (NaN or inf)")


def _has_date_column(path: Path, first_data_line: int, first_cell: str, date_column: str) -> bool:
    if date_column == "none":
        return False
    if is_date(first_cell):
        return True
    if date_column == "required":
        raise DataError(f"{path}:{first_data_line}: column 1: not a date: {shown(first_cell)} (expected "
                        f"{_DATE_FORMS})")
    return False


def parse_text(path: Path, raw: bytes, digest: str, date_column: str = "none") -> Table:
    """A Table from the bytes of a text file (see the module doc for the format)."""
    try:
        text = raw.removeprefix(_BOM).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file (bad byte at offset {exc.start}); expected numbers "
                        f"separated by commas or whitespace") from None
    lines = text.split("\n")
    line_indices = [i for i, line in enumerate(lines) if line.strip()]
    if not line_indices:
        raise DataError(f"{path}: empty file")
    first = lines[line_indices[0]]
    delimiter = "," if "," in first else None
    first_cells = split_cells(first, delimiter)
    width_source = f"as on line {line_indices[0] + 1}"
    header = None
    if not any(is_number(cell) for cell in first_cells):
        header = first_cells
        width_source = f"as in the header on line {line_indices[0] + 1}"
        line_indices = line_indices[1:]
        if not line_indices:
            raise DataError(f"{path}: no data rows after the header line")
    width = len(first_cells)
    first_data_cell = split_cells(lines[line_indices[0]], delimiter)[0]
    has_dates = _has_date_column(path, line_indices[0] + 1, first_data_cell, date_column)
    if has_dates and width < 2:
        raise DataError(f"{path}: only a date column; expected numeric columns after it")

    rows = [lines[i] for i in line_indices]
    date_cells = None
    if has_dates:  # cut each row at its first delimiter: the dates, and the numbers for the fast parser
        pieces = [row.split(delimiter, 1) for row in rows]
        if any(len(piece) < 2 for piece in pieces):
            _locate_text_problem(path, lines, line_indices, delimiter, width, width_source, has_dates)
        date_cells = [piece[0].strip() for piece in pieces]
        rows = [piece[1] for piece in pieces]
    try:
        values = np.loadtxt(rows, dtype=np.float64, delimiter=delimiter, comments=None, ndmin=2)
    except ValueError as exc:
        _locate_text_problem(path, lines, line_indices, delimiter, width, width_source, has_dates)
        raise DataError(f"{path}: {one_line(exc)}") from exc  # numpy rejected something the slow pass accepts
    if values.shape[1] + has_dates != width:  # only a header can disagree: numpy checks the data rows among themselves
        _locate_text_problem(path, lines, line_indices[:1], delimiter, width, width_source, has_dates)

    dates = None
    if date_cells is not None:
        dates = _parse_dates(path, date_cells, line_indices)
    columns = None
    if header is not None:
        columns = header[1:] if has_dates else header
    table = Table(path, values, [i + 1 for i in line_indices], digest, dates, columns)
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        row, column = (int(v) for v in bad[0])
        cell = split_cells(lines[line_indices[row]], delimiter)[column + has_dates]
        raise DataError(f"{table.where(row, column)}: value {shown(cell)} is not finite (NaN or inf)")
    return table


def _parse_dates(path: Path, cells: list[str], line_indices: list[int]) -> np.ndarray:
    """datetime64[s] of every date cell; numpy parses them all at once once the pattern check has passed."""
    if all(_DATE_RE.fullmatch(cell) for cell in cells):
        try:
            return np.array(cells, dtype="datetime64[s]")
        except ValueError:
            pass  # a date off the calendar: found below
    row = next(row for row, cell in enumerate(cells) if not is_date(cell))
    if not cells[row]:
        raise DataError(f"{path}:{line_indices[row] + 1}: column 1: empty value")
    raise DataError(f"{path}:{line_indices[row] + 1}: column 1: not a date: {shown(cells[row])} (expected "
                    f"{_DATE_FORMS})")


# What numpy raises on a file that is not a readable .npy: a garbled header is parsed as a Python literal
# (tokenize's TokenError, SyntaxError), a short one ends early (EOFError), an object array would need pickle.
NPY_READ_ERRORS = (ValueError, EOFError, SyntaxError, tokenize.TokenError, UnicodeDecodeError, OverflowError,
                   MemoryError)


def npy_array(path: Path | str, raw: bytes) -> np.ndarray:
    """The array in the bytes of a .npy file, never unpickled; a file that is not one is a DataError."""
    try:
        return np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    except NPY_READ_ERRORS as exc:
        raise DataError(f"{path}: not a readable .npy array: {one_line(exc) or type(exc).__name__}") from None


def parse_npy(path: Path, raw: bytes, digest: str, date_column: str = "none") -> Table:
    """A Table from the bytes of a .npy file (never unpickled)."""
    if date_column == "required":
        raise DataError(f"{path}: a .npy array has no date column; give a text file whose first column is dates")
    array = npy_array(path, raw)
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path}: array dtype {array.dtype} is not numeric")
    if array.ndim not in (1, 2):
        raise DataError(f"{path}: array has shape {array.shape}; expected (T, D) or (T,)")
    if array.size == 0:
        raise DataError(f"{path}: empty array, shape {array.shape}")
    values = array.astype(np.float64).reshape(array.shape[0], -1)
    table = Table(path, values, None, digest)
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        row, column = (int(v) for v in bad[0])
        raise DataError(f"{table.where(row, column)}: value {values[row, column]} is not finite (NaN or inf)")
    return table


def read_table(path: str | Path, date_column: str = "none", max_input_bytes: int | None = None) -> Table:
    """A finite float64 (rows, columns) table from a text or .npy file, either plain or gzipped, as written.

    ``date_column``: ``"none"`` (every column is numeric), ``"auto"`` (a leading date column when the first data
    row starts with a date) or ``"required"`` (the first column must hold dates). ``max_input_bytes``: the input
    limit (see :mod:`sbts.data.limits`).
    """
    if date_column not in DATE_COLUMN_MODES:
        raise ValueError(f"date_column must be one of {', '.join(DATE_COLUMN_MODES)}, not {date_column!r}")
    path = Path(path)
    raw, digest = read_bytes(path, max_input_bytes)
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".npy") or raw.startswith(NPY_MAGIC):
        return parse_npy(path, raw, digest, date_column)
    return parse_text(path, raw, digest, date_column)


_INTERPOLATED = "interpolated linearly over time (the nearest valid value at the start and end)"


def _column_label(table: Table, column: int) -> str:
    return f" ({table.columns[column]})" if table.columns is not None else ""


def without_missing(table: Table, missing_value: float | None = None) -> Table:
    """The table with its missing cells (codes and ``missing_value``, see :mod:`sbts.data.missing`) reported and
    linearly interpolated over rows; leading and trailing ones take the nearest valid value."""
    codes = find_missing_codes(list(table.values.T), missing_value)
    if not codes:
        return table
    values = table.values.copy()
    for code in codes:
        first = int(code.rows[0])
        code.warn(f"{table.where(first, code.column)}{_column_label(table, code.column)}", _INTERPOLATED)
        values[code.rows, code.column] = np.nan
    for code in codes:
        if np.isnan(values[:, code.column]).all():
            raise DataError(f"{table.where(int(code.rows[0]), code.column)}{_column_label(table, code.column)}: "
                            f"every value of the column is missing ({code.value:g}); nothing to interpolate from")
    # fill_missing takes (channels, steps) cases; one case here, so its "case" in messages cannot arise: every
    # column has a value (checked above) and none is infinite (read_table refuses them).
    values = fill_missing([values.T], str(table.path))[0].T
    return replace(table, values=np.ascontiguousarray(values))


def read_series_table(path: str | Path, date_column: str = "none", options: ReadOptions = ReadOptions()) -> Table:
    """:func:`read_table` of a series file, with its missing cells interpolated (see :func:`without_missing`)."""
    return without_missing(read_table(path, date_column, options.max_input_bytes), options.missing_value)


def read_series(path: str | Path, *, missing_value: float | None = None,
                max_input_bytes: int | None = None) -> np.ndarray:
    """One series file (csv, txt or npy, plain or gzipped) as a finite float64 (n_steps, n_channels) array, its
    missing cells interpolated (see :func:`read_series_table`)."""
    return read_series_table(Path(path), "none", ReadOptions(missing_value, max_input_bytes)).values
