"""Forecasting datasets: the ETT archive, weather, exchange_rate, illness and the user's own series files.

Spec forms (names are case-insensitive):

* ``ETT/ETTh1``, ``ETT/ETTh2``, ``ETT/ETTm1``, ``ETT/ETTm2``: ``<data dir>/forecasting/ETT-small/<name>.csv[.gz]``
  (a date column, then HUFL, HULL, MUFL, MULL, LUFL, LULL, OT).
* ``weather``, ``exchange_rate``, ``illness``: ``<data dir>/forecasting/<name>/<name>.txt[.gz]`` (headerless
  comma-separated numbers, no dates).
* Anything else is a path: one series file, or ``TRAIN,TEST`` / ``TRAIN,VAL,TEST`` split files, concatenated in
  time order. Write ``./weather`` for a file that happens to be named like a dataset.

Series files are csv, txt or npy, each optionally gzipped (format: :mod:`sbts.data.tables`); a text file may start
with a header line and a date column, whose dates must increase strictly (across split files too). Every problem
raises :class:`~sbts.errors.DataError` with one line naming the file (and line). Values are returned unscaled, in
time order; :func:`split_bounds` cuts them into train, validation and test rows. Missing-value codes (weather's
``-9999``) and a given ``missing_value`` are reported and interpolated over time within each file
(:func:`~sbts.data.tables.read_series_table`); files past the input limit ``max_input_bytes`` are refused
(:mod:`sbts.data.limits`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sbts.data.locations import is_path_like, no_such_path, not_under_data_dir, require_data_dir, resolve_data_dir
from sbts.data.tables import ReadOptions, Table, is_date, read_series_table
from sbts.errors import ConfigError, DataError

__all__ = ["SPLIT_METHODS", "ForecastData", "SplitBounds", "available_forecasting_datasets",
           "canonical_forecasting_spec", "load_forecasting", "split_bounds"]

_ETT_ARCHIVE = "ETT"
_ETT_SPECS = tuple(f"{_ETT_ARCHIVE}/{name}" for name in ("ETTh1", "ETTh2", "ETTm1", "ETTm2"))
# Canonical name -> (folder under <data dir>/forecasting, file name, date column mode of read_table).
_ARCHIVE_FILES = ({spec: ("ETT-small", f"{spec.removeprefix('ETT/')}.csv", "required") for spec in _ETT_SPECS}
                  | {name: (name, f"{name}.txt", "none") for name in ("weather", "exchange_rate", "illness")})
_NAMES = {spec.lower(): spec for spec in _ARCHIVE_FILES}
_SPLIT_FILE_ROLES = {2: ("train", "test"), 3: ("train", "val", "test")}

SPLIT_METHODS = ("auto", "informer", "fraction", "dates")
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)  # train, validation, test
_DAY_S = 86_400
# The Informer benchmark split of ETT: 12 months train, 4 validation, 4 test, months of 30 days.
_INFORMER_MONTHS = (12, 16, 20)
_FRACTION_TOLERANCE = 1e-6


@dataclass
class ForecastData:
    """One multivariate series in time order, unscaled.

    ``files`` maps each role to ``{"path", "sha256"}``: ``series`` for one file, ``train``, ``val`` (when given)
    and ``test`` for split files, whose row counts ``file_lengths`` then lists in that order.
    ``line_numbers`` holds the 1-based line of each row in its file (None when a file is .npy), for messages.
    """

    name: str
    values: np.ndarray
    columns: list[str]
    dates: np.ndarray | None
    files: dict[str, dict[str, str]]
    file_lengths: list[int] | None = None
    line_numbers: list[int] | None = field(default=None, repr=False)

    @property
    def n_channels(self) -> int:
        return int(self.values.shape[1])

    @property
    def n_steps(self) -> int:
        return int(self.values.shape[0])

    def where(self, row: int) -> str:
        """``<file>:<line>`` of a row (``<file>: row <r> (0-based)`` without line numbers)."""
        lengths = self.file_lengths or [self.n_steps]
        starts = np.cumsum([0] + lengths)
        index = int(np.searchsorted(starts, row, side="right")) - 1
        path = list(self.files.values())[index]["path"]
        if self.line_numbers is None:
            return f"{path}: row {row - int(starts[index])} (0-based)"
        return f"{path}:{self.line_numbers[row]}"


@dataclass(frozen=True)
class SplitBounds:
    """Rows ``[0, train_end)`` train, ``[train_end, val_end)`` validation (may be empty), ``[val_end, test_end)``
    test; rows from ``test_end`` on are unused. ``method``: ``informer``, ``fraction``, ``dates`` or ``files``."""

    train_end: int
    val_end: int
    test_end: int
    method: str

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def _date_text(date: np.datetime64) -> str:
    return str(date).replace("T", " ")


def _check_increasing(table: Table) -> None:
    bad = np.flatnonzero(np.diff(table.dates) <= np.timedelta64(0, "s"))
    if len(bad):
        row = int(bad[0]) + 1
        raise DataError(f"{table.line(row)}: date {_date_text(table.dates[row])} is not after "
                        f"{_date_text(table.dates[row - 1])} on line {table.line_numbers[row - 1]}; dates must "
                        f"be strictly increasing")


def _check_split_files_match(tables: list[Table]) -> None:
    first = tables[0]
    for table in tables[1:]:
        if table.values.shape[1] != first.values.shape[1]:
            raise DataError(f"{first.path} has {first.values.shape[1]} columns but {table.path} has "
                            f"{table.values.shape[1]}; split files must match")
        if (table.dates is None) != (first.dates is None):
            dated, undated = (first, table) if first.dates is not None else (table, first)
            raise DataError(f"{dated.path} has a date column but {undated.path} has none; give dates in every "
                            f"split file or in none")
    named = [table for table in tables if table.columns is not None]
    for table in named[1:]:
        if table.columns != named[0].columns:
            raise DataError(f"{named[0].path} names its columns {', '.join(named[0].columns)} but {table.path} "
                            f"names them {', '.join(table.columns)}; split files must match")


def _check_files_follow(tables: list[Table]) -> None:
    """Each split file's first date comes after the previous file's last."""
    for before, after in zip(tables, tables[1:]):
        last = len(before.dates) - 1
        if after.dates[0] <= before.dates[last]:
            raise DataError(f"{after.line(0)}: date {_date_text(after.dates[0])} is not after "
                            f"{_date_text(before.dates[last])}, the last date of {before.line(last)}; split "
                            f"files must follow each other in time")


def _from_tables(name: str, tables: list[Table], roles: tuple[str, ...]) -> ForecastData:
    """One series from its file(s), checked: matching split files, dates increasing, at least 2 rows."""
    _check_split_files_match(tables)
    if tables[0].dates is not None:
        for table in tables:
            _check_increasing(table)
        _check_files_follow(tables)
    if len(tables) == 1 and len(tables[0].values) < 2:
        raise DataError(f"{tables[0].path}: 1 row; a forecasting series needs at least 2")
    columns = next((table.columns for table in tables if table.columns is not None), None)
    n_channels = tables[0].values.shape[1]
    line_numbers = None
    if all(table.line_numbers is not None for table in tables):
        line_numbers = [line for table in tables for line in table.line_numbers]
    return ForecastData(
        name=name,
        values=tables[0].values if len(tables) == 1 else np.concatenate([table.values for table in tables]),
        columns=list(columns) if columns is not None else [f"x{i}" for i in range(n_channels)],
        dates=None if tables[0].dates is None else np.concatenate([table.dates for table in tables]),
        files={role: table.record() for role, table in zip(roles, tables)},
        file_lengths=None if len(tables) == 1 else [len(table.values) for table in tables],
        line_numbers=line_numbers,
    )


def _user_paths(spec: str) -> list[Path]:
    if "," in spec:
        pieces = [piece.strip() for piece in spec.split(",")]
        if len(pieces) not in _SPLIT_FILE_ROLES or not all(pieces):
            raise DataError(f"{spec!r}: expected 'TRAIN,TEST' or 'TRAIN,VAL,TEST' file paths")
        return [Path(piece).expanduser() for piece in pieces]
    path = Path(spec).expanduser()
    if not path.exists():
        if is_path_like(spec, (_ETT_ARCHIVE,)):
            raise no_such_path(spec)
        raise DataError(f"{spec!r}: no such file and not a known dataset; known names: {', '.join(_ARCHIVE_FILES)}; "
                        f"or give a series file or TRAIN,[VAL,]TEST files")
    return [path]


def _find(folder: Path, file_name: str) -> Path | None:
    """``<folder>/<file_name>`` or its ``.gz`` twin, whichever exists (plain first)."""
    return next((p for p in (folder / file_name, folder / f"{file_name}.gz") if p.is_file()), None)


def _load_named(name: str, root: Path, options: ReadOptions) -> ForecastData:
    folder_name, file_name, date_column = _ARCHIVE_FILES[name]
    folder = root / "forecasting" / folder_name
    path = _find(folder, file_name)
    if path is None:
        raise DataError(f"{folder / file_name}[.gz]: file not found; {not_under_data_dir(name, root)}")
    return _from_tables(name, [read_series_table(path, date_column, options)], ("series",))


# --------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------


def _duration(seconds: int) -> str:
    for unit, size in (("d", _DAY_S), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _needs_dates(data: ForecastData, method: str) -> np.ndarray:
    if data.dates is None:
        raise ConfigError(f"split method {method!r} needs dates, but {data.name} has no date column; use 'fraction'")
    return data.dates


def _informer_split(data: ForecastData) -> SplitBounds:
    steps = np.diff(_needs_dates(data, "informer")).astype(np.int64)  # seconds
    step = int(steps[0])
    irregular = np.flatnonzero(steps != step)
    if len(irregular):
        row = int(irregular[0]) + 1
        raise DataError(f"{data.where(row)}: {_duration(int(steps[row - 1]))} after the row before, but the series' "
                        f"step is {_duration(step)} (its first two rows); split method 'informer' needs a regular "
                        f"series")
    if _DAY_S % step:
        raise DataError(f"{data.name}: its step of {_duration(step)} does not divide a day; split method 'informer' "
                        f"counts months of 30 days in steps")
    month = 30 * (_DAY_S // step)
    train_end, val_end, test_end = (months * month for months in _INFORMER_MONTHS)
    if data.n_steps < test_end:
        raise DataError(f"{data.name}: split method 'informer' needs {test_end} rows (20 months of 30 days at a "
                        f"{_duration(step)} step), but the series has {data.n_steps}")
    return SplitBounds(train_end, val_end, test_end, "informer")


def _fraction_split(data: ForecastData, fractions: Sequence[float]) -> SplitBounds:
    try:
        f_train, f_val, f_test = (float(f) for f in fractions)
    except (TypeError, ValueError):
        raise ConfigError(f"split fractions must be three numbers (train, val, test), not {fractions!r}") from None
    if not all(math.isfinite(f) and f >= 0 for f in (f_train, f_val, f_test)):
        raise ConfigError(f"split fractions {fractions!r} must be non-negative numbers")
    if abs(f_train + f_val + f_test - 1) > _FRACTION_TOLERANCE:
        raise ConfigError(f"split fractions {fractions!r} must sum to 1, not {f_train + f_val + f_test:g}")
    if f_train == 0 or f_test == 0:
        raise ConfigError(f"split fractions {fractions!r}: the train and test fractions must be above 0")
    # The forecasting literature's convention: train and test rounded down, validation takes the rest.
    n = data.n_steps
    train, test = int(n * f_train), int(n * f_test)
    if train == 0 or test == 0:
        raise DataError(f"{data.name}: {n} rows leave the train or the test split empty with fractions "
                        f"{f_train:g}/{f_val:g}/{f_test:g}")
    return SplitBounds(train, n - test, n, "fraction")


def _as_date(key: str, value: object) -> np.datetime64:
    text = str(value).strip()
    if not is_date(text):
        raise ConfigError(f"{key} {value!r} is not a date (expected YYYY-MM-DD[ HH:MM[:SS]])")
    return np.datetime64(text, "s")


def _dates_split(data: ForecastData, train_end: object, val_end: object, test_end: object) -> SplitBounds:
    dates = _needs_dates(data, "dates")
    if train_end is None or val_end is None:
        raise ConfigError("split method 'dates' needs train_end and val_end (test_end is optional)")
    given = {key: _as_date(key, value) for key, value in
             (("train_end", train_end), ("val_end", val_end), ("test_end", test_end)) if value is not None}
    keys = list(given)
    for before, after in zip(keys, keys[1:]):
        if given[after] <= given[before]:
            raise ConfigError(f"{after} {_date_text(given[after])} must be after {before} {_date_text(given[before])}")
    # Dates increase strictly, so the rows before a date are those up to its insertion point.
    ends = {key: int(np.searchsorted(dates, date, side="left")) for key, date in given.items()}
    ends.setdefault("test_end", data.n_steps)
    span = f"{data.name} runs from {_date_text(dates[0])} to {_date_text(dates[-1])}"
    if ends["train_end"] == 0:
        raise ConfigError(f"train_end {_date_text(given['train_end'])} leaves no train rows: {span}")
    if ends["test_end"] == ends["val_end"]:
        raise ConfigError(f"val_end {_date_text(given['val_end'])} leaves no test rows: {span}")
    return SplitBounds(ends["train_end"], ends["val_end"], ends["test_end"], "dates")


def _files_split(lengths: list[int]) -> SplitBounds:
    train_end = lengths[0]
    val_end = train_end + (lengths[1] if len(lengths) == 3 else 0)
    return SplitBounds(train_end, val_end, sum(lengths), "files")


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def canonical_forecasting_spec(spec: str) -> str:
    """The spec in one spelling: ``ett/etth1`` -> ``ETT/ETTh1``, ``Weather`` -> ``weather``; a path spec becomes
    its absolute form (the file, or the comma-separated file paths); an unknown name that is no file stays."""
    spec = str(spec).strip()
    if not spec:
        raise DataError("empty dataset spec")
    if spec.lower() in _NAMES:
        return _NAMES[spec.lower()]
    if "," in spec:
        return ",".join(str(Path(piece.strip()).expanduser().resolve()) for piece in spec.split(","))
    path = Path(spec).expanduser()
    if not path.exists() and not is_path_like(spec, (_ETT_ARCHIVE,)):
        return spec  # a mistyped name, kept so that loading it lists the known names
    return str(path.resolve())


def load_forecasting(spec: str, data_dir: str | Path | None = None, *, missing_value: float | None = None,
                     max_input_bytes: int | None = None) -> ForecastData:
    """Load a series for forecasting (spec forms: see the module doc); values are not scaled. ``missing_value``:
    a number that marks a missing cell (besides the codes found by :mod:`sbts.data.missing`);
    ``max_input_bytes``: the input limit (:mod:`sbts.data.limits`)."""
    name = canonical_forecasting_spec(spec)
    options = ReadOptions(missing_value, max_input_bytes)
    if name in _ARCHIVE_FILES:
        return _load_named(name, require_data_dir(name, data_dir), options)
    paths = _user_paths(str(spec).strip())
    tables = [read_series_table(path, "auto", options) for path in paths]
    roles = ("series",) if len(paths) == 1 else _SPLIT_FILE_ROLES[len(paths)]
    return _from_tables(name, tables, roles)


def available_forecasting_datasets(data_dir: str | Path | None = None) -> list[str]:
    """Every named dataset whose file is under the data dir (``data_dir`` or ``$SBTS_DATA_DIR``); [] when unset."""
    root = resolve_data_dir(data_dir)
    if root is None:
        return []
    return [name for name, (folder, file_name, _) in _ARCHIVE_FILES.items()
            if _find(root / "forecasting" / folder, file_name) is not None]


def split_bounds(data: ForecastData, method: str = "auto", *, fractions: Sequence[float] | None = None,
                 train_end: str | None = None, val_end: str | None = None, test_end: str | None = None) -> SplitBounds:
    """Train/validation/test row bounds of a series.

    ``informer``: 12/4/4 months of 30 days, counted in rows of the series' (regular) step; ``fraction``: train
    ``int(n * f_train)`` rows, test ``int(n * f_test)``, validation the rest (``fractions``, default 0.7/0.1/0.2;
    refused for the other methods rather than ignored); ``dates``: rows dated before
    ``train_end`` train, before ``val_end`` validation, before ``test_end`` (default: the end) test; ``auto``: the
    split files' own split, ``informer`` for the ETT archive, else ``fraction``.
    """
    if method not in SPLIT_METHODS:
        raise ConfigError(f"unknown split method {method!r}; expected one of: {', '.join(SPLIT_METHODS)}")
    date_options = [key for key, value in (("train_end", train_end), ("val_end", val_end), ("test_end", test_end))
                    if value is not None]
    if date_options and method != "dates":
        raise ConfigError(f"{', '.join(date_options)} only apply to split method 'dates', not {method!r}")
    if data.file_lengths is not None:
        if method != "auto" or fractions is not None:
            what = "split fractions" if method == "auto" else f"split method {method!r}"
            raise ConfigError(f"{what} cannot be used with split files: their files are the split (use split 'auto')")
        return _files_split(data.file_lengths)
    if method == "auto":
        method = "informer" if data.name in _ETT_SPECS else "fraction"
    if fractions is not None and method != "fraction":
        raise ConfigError(f"split fractions apply to split method 'fraction', not {method!r}"
                          + (f" ({data.name}'s default)" if data.name in _ETT_SPECS else "")
                          + "; choose the split method 'fraction' to use them")
    if method == "informer":
        return _informer_split(data)
    if method == "fraction":
        return _fraction_split(data, DEFAULT_FRACTIONS if fractions is None else fractions)
    return _dates_split(data, train_end, val_end, test_end)
