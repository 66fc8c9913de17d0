"""Reader for the sktime/aeon ``.ts`` time-series format (UEA/UCR archives).

Layout: optional ``#`` comment lines and ``@`` header lines, then ``@data``, then one case per line.
In a case, dimensions are separated by ``:`` and values by ``,``; when the file has labels the last
``:``-separated field is the label. ``?`` or ``NaN`` marks a missing value, and cases (and even the
dimensions of one case) may have different lengths.

Every problem with the file raises :class:`~sbts.errors.DataError` with one line of the form
``<file>:<line>: <what>`` so that the user can open the file at the culprit.

A file larger than the input limit is refused unread, and a gzip file once its decompressed lines pass it
(:mod:`sbts.data.limits`). Missing-value codes (``-9999``, found per dimension over all cases by the rule of
:mod:`sbts.data.missing`) and a user-given ``missing_value`` become NaN like ``?``, one warning line per
dimension and value, so the usual filling of missing values (:func:`~sbts.data.preprocessing.fill_missing`)
handles them.
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from sbts.data.limits import check_file_size, input_limit, over_limit, size_text
from sbts.data.missing import find_missing_codes
from sbts.errors import DataError, one_line

__all__ = ["TSData", "read_ts"]

_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
_MISSING_TOKEN = "?"


@dataclass
class TSData:
    """The cases of one ``.ts`` file.

    ``series[i]`` is a float64 array of shape ``(n_channels, length_i)``; NaN marks a missing value
    (and the end padding of a dimension shorter than the case's longest one). ``labels`` holds the
    label string of each case (empty strings when the file has no labels).
    """

    series: list[np.ndarray]
    labels: np.ndarray
    class_labels: list[str] | None
    n_channels: int
    problem_name: str | None
    path: Path

    @property
    def lengths(self) -> np.ndarray:
        """Length (time steps) of each case, shape ``(n_cases,)``."""
        return np.array([s.shape[1] for s in self.series], dtype=np.int64)

    @property
    def n_cases(self) -> int:
        return len(self.series)


@dataclass
class _Header:
    problem_name: str | None = None
    dimensions: int | None = None
    univariate: bool | None = None
    # None: not declared; True/False: declared by "@classLabel true|false".
    class_label: bool | None = None
    class_labels: list[str] | None = None
    target_label: bool = False


def _looks_gzip(path: Path, head: bytes) -> bool:
    return path.suffix.lower() == ".gz" or head.startswith(_GZIP_MAGIC)


def _open_binary(path: Path, limit: int) -> BinaryIO:
    """Open ``path`` for reading bytes, transparently decompressing gzip (by suffix or magic); a file larger
    than ``limit`` is refused."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a .ts file")
    check_file_size(path, limit)
    try:
        with path.open("rb") as probe:
            head = probe.read(2)
        if _looks_gzip(path, head):
            return gzip.open(path, "rb")  # type: ignore[return-value]
        return path.open("rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot read file: {one_line(exc.strerror or exc)}") from exc


def _iter_lines(path: Path, limit: int) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` with line endings (LF or CRLF) removed, refused once the file's
    (decompressed) bytes pass ``limit``: lines are read with a size bound, so one endless line cannot
    fill memory.

    Lines are split on ``\\n`` only (not on the other characters ``str.splitlines`` treats as line
    breaks) so that our line numbers match those of an editor.
    """
    fh = _open_binary(path, limit)
    lineno = 0
    total = 0
    try:
        with fh:
            while raw := fh.readline(limit + 1 - total):
                lineno += 1
                total += len(raw)
                if total > limit:
                    raise over_limit(path, f"decompresses to more than {size_text(limit)}", limit)
                if lineno == 1 and raw.startswith(_BOM):
                    raw = raw[len(_BOM):]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    if raw.lstrip().startswith(b"#"):  # archive copies carry Latin-1 in comments; harmless
                        yield lineno, raw.decode("utf-8", errors="replace").rstrip("\r\n")
                        continue
                    raise DataError(
                        f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
                    ) from exc
                yield lineno, text.rstrip("\r\n")
    except (OSError, EOFError, zlib.error) as exc:
        # Corrupt or truncated gzip stream, or an I/O error part-way through.
        raise DataError(f"{path}:{lineno + 1}: cannot read file: {one_line(exc)}") from exc


def _parse_bool(path: Path, lineno: int, tag: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "false"):
        return v == "true"
    raise DataError(f"{path}:{lineno}: {tag} expects true or false, found {value.strip()!r}")


def _parse_header_line(path: Path, lineno: int, line: str, header: _Header) -> None:
    """Update ``header`` from one ``@tag value`` line (tags are case-insensitive)."""
    tag, _, rest = line.replace("\t", " ").partition(" ")
    key = tag.lower()
    words = rest.split()
    if key == "@problemname":
        header.problem_name = rest.strip() or None
    elif key == "@timestamps":
        if words and _parse_bool(path, lineno, tag, words[0]):
            raise DataError(f"{path}:{lineno}: timestamped .ts data (@timeStamps true) is not supported")
    elif key == "@univariate":
        if words:
            header.univariate = _parse_bool(path, lineno, tag, words[0])
    elif key == "@dimensions":
        try:
            dims = int(words[0]) if len(words) == 1 else -1
        except ValueError:
            dims = -1
        if dims < 1:
            raise DataError(f"{path}:{lineno}: @dimensions expects a positive integer, found {rest.strip()!r}")
        header.dimensions = dims
    elif key == "@classlabel":
        if not words:
            raise DataError(f"{path}:{lineno}: @classLabel expects true or false")
        header.class_label = _parse_bool(path, lineno, tag, words[0])
        if header.class_label and len(words) > 1:
            # Keep header order, drop accidental duplicates.
            header.class_labels = list(dict.fromkeys(words[1:]))
    elif key == "@targetlabel":
        if words:
            header.target_label = _parse_bool(path, lineno, tag, words[0])
    # @missing, @equalLength, @seriesLength and unknown tags carry nothing we rely on: the data
    # lines are authoritative (files in the wild do not always keep these in sync).


def _parse_values(path: Path, lineno: int, dim: int, text: str) -> list[float]:
    """Parse one dimension's comma-separated values; ``?`` and NaN become NaN."""
    tokens = text.split(",")
    if "?" not in text and "_" not in text:
        try:
            return list(map(float, tokens))  # fast path: the common, clean case
        except ValueError:
            pass
    values: list[float] = []
    for pos, tok in enumerate(tokens, start=1):
        t = tok.strip()
        if t == _MISSING_TOKEN:
            values.append(math.nan)
            continue
        if not t:
            raise DataError(f"{path}:{lineno}: dimension {dim}, value {pos}: empty value")
        try:
            # float() also accepts '1_000'; such tokens are not numbers in this format.
            if "_" in t:
                raise ValueError(t)
            values.append(float(t))
        except ValueError:
            raise DataError(f"{path}:{lineno}: dimension {dim}, value {pos}: not a number: {one_line(tok)!r}") from None
    return values


def _case_array(rows: list[list[float]]) -> np.ndarray:
    """Stack a case's dimensions into ``(n_channels, length)``, NaN-padding short ones at the end."""
    length = max(len(r) for r in rows)
    if all(len(r) == length for r in rows):
        return np.array(rows, dtype=np.float64)
    out = np.full((len(rows), length), np.nan, dtype=np.float64)
    for d, r in enumerate(rows):
        out[d, : len(r)] = r
    return out


def _mark_missing(path: Path, series: list[np.ndarray], case_lines: list[int], n_dims: int,
                  missing_value: float | None) -> None:
    """Set the missing-value codes and ``missing_value`` of every dimension to NaN in place, with a warning
    line each (see the module doc)."""
    lengths = [case.shape[1] for case in series]
    starts = np.cumsum([0] + lengths)
    pooled = [np.concatenate([case[dim] for case in series]) for dim in range(n_dims)]
    for code in find_missing_codes(pooled, missing_value):
        case = int(np.searchsorted(starts, code.rows[0], side="right")) - 1
        step = int(code.rows[0] - starts[case])
        code.warn(f"{path}:{case_lines[case]}: dimension {code.column + 1}, value {step + 1}",
                  "set to NaN like '?'")
        for index in np.unique(np.searchsorted(starts, code.rows, side="right") - 1):
            series[index][code.column, series[index][code.column] == code.value] = np.nan


def read_ts(path: str | Path, *, missing_value: float | None = None, max_input_bytes: int | None = None) -> TSData:
    """Read a ``.ts`` file (plain or gzip-compressed).

    Raises :class:`DataError` (one line, ``<file>:<line>: <what>``) for a missing/unreadable/non-UTF-8
    file, no ``@data`` section, a case with the wrong number of dimensions, a non-numeric value, an
    empty dimension, a missing or undeclared class label, or a file without cases, or larger than the input
    limit ``max_input_bytes`` (see :mod:`sbts.data.limits`). Infinite values are accepted here
    (preprocessing rejects them). Missing-value codes and ``missing_value`` become NaN (see the module doc).
    """
    path = Path(path)
    limit = input_limit(max_input_bytes)
    header = _Header()
    in_data = False
    n_dims: int | None = None
    has_label: bool | None = None
    series: list[np.ndarray] = []
    case_lines: list[int] = []
    labels: list[str] = []
    declared: set[str] | None = None
    last_lineno = 0

    for lineno, line in _iter_lines(path, limit):
        last_lineno = lineno
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not in_data:
            if not stripped.startswith("@"):
                raise DataError(f"{path}:{lineno}: expected a header line (@...) or @data before the data")
            if stripped.lower() == "@data":
                in_data = True
                n_dims = header.dimensions
                if n_dims is None and header.univariate:
                    n_dims = 1
                declared = set(header.class_labels) if header.class_labels else None
                if header.class_label or header.target_label:
                    has_label = True
                elif header.class_label is False:
                    has_label = False
                # else: undeclared, decided from the first case below.
                continue
            _parse_header_line(path, lineno, stripped, header)
            continue

        if stripped.startswith("@"):
            raise DataError(f"{path}:{lineno}: header line after @data: {one_line(stripped)[:40]!r}")
        fields = stripped.split(":")

        if has_label is None:
            # No @classLabel/@targetLabel: files that omit it still normally end with the label, so
            # take the last field as one unless @dimensions says the line has exactly that many.
            has_label = not (n_dims is not None and len(fields) == n_dims)
        if has_label:
            label_text = fields[-1].strip()
            dims_text = fields[:-1]
        else:
            label_text = ""
            dims_text = fields

        if n_dims is None:
            n_dims = len(dims_text)
            if n_dims == 0:
                raise DataError(f"{path}:{lineno}: case has no dimensions before the class label")
        if len(dims_text) != n_dims:
            source = "@dimensions" if header.dimensions is not None else "the first case"
            if has_label and len(fields) == n_dims and "," in fields[-1]:
                raise DataError(
                    f"{path}:{lineno}: missing class label: found {len(fields)} ':'-separated fields, "
                    f"expected {n_dims} dimensions ({source}) followed by a class label"
                )
            raise DataError(f"{path}:{lineno}: expected {n_dims} dimensions ({source}), found {len(dims_text)}")
        if has_label and not label_text:
            raise DataError(f"{path}:{lineno}: missing class label after the last dimension")
        if declared is not None and label_text not in declared:
            shown = " ".join(header.class_labels or [])
            raise DataError(f"{path}:{lineno}: class label {label_text!r} is not among the declared labels ({shown})")

        rows = []
        for d, text in enumerate(dims_text, start=1):
            if not text.strip():
                raise DataError(f"{path}:{lineno}: dimension {d} is empty")
            rows.append(_parse_values(path, lineno, d, text))
        series.append(_case_array(rows))
        case_lines.append(lineno)
        labels.append(label_text)

    if last_lineno == 0:
        raise DataError(f"{path}: empty file")
    if not in_data:
        raise DataError(f"{path}:{last_lineno}: no @data section found")
    if not series:
        raise DataError(f"{path}:{last_lineno}: no cases after @data")
    assert n_dims is not None
    _mark_missing(path, series, case_lines, n_dims, missing_value)
    return TSData(
        series=series,
        labels=np.array(labels, dtype=object),
        class_labels=list(header.class_labels) if header.class_labels else None,
        n_channels=n_dims,
        problem_name=header.problem_name,
        path=path,
    )
