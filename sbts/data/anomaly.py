"""Anomaly-detection datasets: SMD, ASD, NASA SMAP/MSL and the user's own train/test(/labels) files.

Spec forms (archive names are case-insensitive):

* ``SMD/<machine>``, ``ASD/<entity>``: ``<data dir>/anomaly/SMD/ServerMachineDataset/{train,test,test_label}/
  <machine>.txt[.gz]`` and ``<data dir>/anomaly/ASD/{train,test,test_label}/<entity>.txt[.gz]``.
* ``SMAP``, ``MSL``: the pooled benchmark, ``<data dir>/anomaly/SMAP_MSL/{train,test}/<chan>.npy[.gz]``
  concatenated in sorted ``chan_id`` order over the channels that ``labeled_anomalies.csv`` lists exactly once
  for that spacecraft (so SMAP leaves out P-2, listed twice, and MSL leaves out T-10, which has no row).
* ``SMAP/<chan>``, ``MSL/<chan>``: one channel, labelled from ``labeled_anomalies.csv``.
* Anything else is a path: a folder holding ``train.<ext>``, ``test.<ext>`` and optionally ``test_label.<ext>`` or
  ``labels.<ext>`` (ext: ``csv``, ``txt`` or ``npy``, each optionally ``.gz``), or ``TRAIN,TEST[,LABELS]`` file
  paths. Write ``./SMAP`` for a folder that happens to be named like an archive.

Text files hold numbers separated by commas or by whitespace (taken from the first line), one time step a line,
with an optional first line of non-numeric column names (dropped) and no index column. ``.npy`` files hold a
(T, D) or (T,) numeric array and are read without unpickling. Any file may be gzip-compressed (by suffix or
magic bytes). Every problem raises :class:`~sbts.errors.DataError` with one line naming the file (and, for text,
``<file>:<line>: column <c>``). Values are returned unscaled. Missing-value codes (``-9999``) and a given
``missing_value`` in a train or test file are reported and interpolated over time within that file
(:func:`~sbts.data.tables.read_series_table`); files past the input limit ``max_input_bytes`` are refused
(:mod:`sbts.data.limits`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbts.data.locations import is_path_like, no_such_path, not_under_data_dir, require_data_dir, resolve_data_dir
from sbts.data.tables import ReadOptions, Table, read_bytes, read_series, read_series_table, read_table, shown
from sbts.errors import DataError, one_line

__all__ = ["AnomalyData", "available_anomaly_datasets", "canonical_anomaly_spec", "load_anomaly", "read_series"]

_USER_EXTS = (".csv", ".txt", ".npy")
_SHOWN_NAMES = 5

# Entity archives (same OmniAnomaly layout) -> folder under the data dir and what one member is called.
_ENTITY_ARCHIVES = {"SMD": (("anomaly", "SMD", "ServerMachineDataset"), "machine"),
                    "ASD": (("anomaly", "ASD"), "entity")}
_NASA_FOLDER = ("anomaly", "SMAP_MSL")
_NASA_CSV = "labeled_anomalies.csv"
# Columns of every channel (telemetry value + one-hot commands): tells the spacecraft of a channel with no label row.
_SPACECRAFT_WIDTH = {"SMAP": 25, "MSL": 55}
_ARCHIVES = (*_ENTITY_ARCHIVES, *_SPACECRAFT_WIDTH)
_NAME_SPEC_RE = re.compile(r"^(smd|asd|smap|msl)(?:/([A-Za-z0-9][A-Za-z0-9_.\-]*))?$", re.IGNORECASE)
_SPEC_FORMS = "SMD/<machine>, ASD/<entity>, SMAP, MSL, SMAP/<chan>, MSL/<chan>, a folder or TRAIN,TEST[,LABELS]"


@dataclass
class AnomalyData:
    """A multivariate series split in time: ``train`` (unlabelled) and ``test`` with per-step 0/1 ``labels``.

    ``files`` maps each role (``train``, ``test``, ``labels`` when there are labels) to ``{"path", "sha256"}``.
    For a pooled set (``SMAP``, ``MSL``) ``path`` is the folder and ``sha256`` is the sha256 of the text made of
    one ``"<sha256 of member file>  <member file name>\\n"`` line per member in concatenation order (what
    ``sha256sum <members...> | sha256sum`` prints there); ``channels`` then lists those members and
    ``train_lengths`` and ``test_lengths`` the number of rows of each, so that a task can split and score every
    member on its own.
    """

    name: str
    train: np.ndarray
    test: np.ndarray
    labels: np.ndarray | None
    files: dict[str, dict[str, str]]
    channels: list[str] | None = None
    train_lengths: list[int] | None = None
    test_lengths: list[int] | None = None

    @property
    def n_channels(self) -> int:
        """Number of columns (dimensions) of the series."""
        return int(self.train.shape[1])


# --------------------------------------------------------------------------------------------------
# Reading one file
# --------------------------------------------------------------------------------------------------


def _read_split(train_path: Path, test_path: Path, options: ReadOptions) -> tuple[Table, Table]:
    train, test = (read_series_table(path, "none", options) for path in (train_path, test_path))
    if train.values.shape[1] != test.values.shape[1]:
        raise DataError(f"{train_path} has {train.values.shape[1]} columns but {test_path} has "
                        f"{test.values.shape[1]}; train and test must match")
    return train, test


def _read_labels(path: Path, test: Table, options: ReadOptions) -> Table:
    """A one-column table of 0/1, one per test row."""
    labels = read_table(path, max_input_bytes=options.max_input_bytes)
    if labels.values.shape[1] != 1:
        raise DataError(f"{path}: expected one label per row (one column), found {labels.values.shape[1]} columns")
    bad = np.flatnonzero((labels.values[:, 0] != 0) & (labels.values[:, 0] != 1))
    if len(bad):
        row = int(bad[0])
        raise DataError(f"{labels.where(row, 0)}: label {labels.values[row, 0]:g} is not 0 or 1")
    if len(labels.values) != len(test.values):
        raise DataError(f"{path}: {len(labels.values)} labels but the test series {test.path} has "
                        f"{len(test.values)} rows")
    return labels


def _as_labels(table: Table) -> np.ndarray:
    return table.values[:, 0].astype(np.int8)


# --------------------------------------------------------------------------------------------------
# User files
# --------------------------------------------------------------------------------------------------


def _one_file(folder: Path, stems: tuple[str, ...], required: bool) -> Path | None:
    found = [folder / f"{stem}{ext}{gz}" for stem in stems for ext in _USER_EXTS for gz in ("", ".gz")]
    found = [p for p in found if p.is_file()]
    if len(found) > 1:
        raise DataError(f"{folder}: ambiguous, found {', '.join(p.name for p in found)}; keep only one")
    if not found and required:
        raise DataError(f"{folder}: no {stems[0]} file (expected {stems[0]}.csv, .txt or .npy, optionally .gz)")
    return found[0] if found else None


def _user_files(spec: str) -> dict[str, Path]:
    """Role -> path for a folder or a ``TRAIN,TEST[,LABELS]`` spec."""
    if "," in spec:
        pieces = [piece.strip() for piece in spec.split(",")]
        if len(pieces) not in (2, 3) or not all(pieces):
            raise DataError(f"{spec!r}: expected 'TRAIN,TEST' or 'TRAIN,TEST,LABELS' file paths")
        return dict(zip(("train", "test", "labels"), (Path(piece).expanduser() for piece in pieces)))
    folder = Path(spec).expanduser()
    if not folder.exists():
        if is_path_like(spec, _ARCHIVES):
            raise no_such_path(spec)
        raise DataError(f"{spec!r}: no such file or folder and not a dataset; expected one of: {_SPEC_FORMS}")
    if not folder.is_dir():
        raise DataError(f"{folder}: is a file; give a folder with train.<ext> and test.<ext>, or TRAIN,TEST[,LABELS]")
    files = {"train": _one_file(folder, ("train",), True), "test": _one_file(folder, ("test",), True),
             "labels": _one_file(folder, ("test_label", "labels"), False)}
    return {role: path for role, path in files.items() if path is not None}


def _load_user(spec: str, name: str, options: ReadOptions) -> AnomalyData:
    paths = _user_files(spec)
    train, test = _read_split(paths["train"], paths["test"], options)
    files = {"train": train.record(), "test": test.record()}
    labels = None
    if "labels" in paths:
        label_table = _read_labels(paths["labels"], test, options)
        labels, files["labels"] = _as_labels(label_table), label_table.record()
    return AnomalyData(name, train.values, test.values, labels, files)


# --------------------------------------------------------------------------------------------------
# Named datasets
# --------------------------------------------------------------------------------------------------


def _natural_key(name: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _few(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN_NAMES])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > _SHOWN_NAMES else shown or "none"


def _find(folder: Path, stem: str, suffix: str) -> Path | None:
    """``<folder>/<stem><suffix>`` or its ``.gz`` twin, whichever exists (plain first)."""
    return next((p for p in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix}.gz") if p.is_file()), None)


def _require(folder: Path, stem: str, suffix: str) -> Path:
    path = _find(folder, stem, suffix)
    if path is None:
        raise DataError(f"{folder / stem}{suffix}[.gz]: file not found")
    return path


def _stems(folder: Path, suffix: str) -> set[str]:
    if not folder.is_dir():
        return set()
    return {p.name.removesuffix(".gz").removesuffix(suffix) for p in folder.iterdir()
            if p.name.removesuffix(".gz").endswith(suffix) and p.is_file()}


def _entities(base: Path) -> list[str]:
    """Members of an SMD/ASD-style archive with train, test and test_label files."""
    found = _stems(base / "train", ".txt") & _stems(base / "test", ".txt") & _stems(base / "test_label", ".txt")
    return sorted(found, key=_natural_key)


def _load_entity(archive: str, entity: str, root: Path, options: ReadOptions) -> AnomalyData:
    parts, kind = _ENTITY_ARCHIVES[archive]
    base = root.joinpath(*parts)
    if not base.is_dir():
        raise DataError(f"{base}: folder not found; {not_under_data_dir(archive, root)}")
    if _find(base / "train", entity, ".txt") is None:
        raise DataError(f"unknown {archive} {kind} {entity!r} in {base}; available: {_few(_entities(base))}")
    train, test = _read_split(*(_require(base / role, entity, ".txt") for role in ("train", "test")), options)
    labels = _read_labels(_require(base / "test_label", entity, ".txt"), test, options)
    files = {"train": train.record(), "test": test.record(), "labels": labels.record()}
    return AnomalyData(f"{archive}/{entity}", train.values, test.values, _as_labels(labels), files)


@dataclass(frozen=True)
class _LabelRow:
    """One row of labeled_anomalies.csv; ``sequences`` are inclusive [start, end] test-row ranges."""

    line: int
    chan: str
    spacecraft: str
    sequences: tuple[tuple[int, int], ...]
    num_values: int


def _parse_sequences(where: str, text: str) -> tuple[tuple[int, int], ...]:
    try:
        ranges = json.loads(text)
    except json.JSONDecodeError:
        ranges = None
    ok = isinstance(ranges, list) and all(
        isinstance(r, list) and len(r) == 2 and all(type(v) is int and v >= 0 for v in r) and r[0] <= r[1]
        for r in ranges)
    if not ok:
        raise DataError(f"{where}: anomaly_sequences {shown(text)} is not a list of [start, end] row ranges")
    return tuple((start, end) for start, end in ranges)


def _read_label_csv(path: Path, options: ReadOptions) -> tuple[dict[str, list[_LabelRow]], str]:
    """Rows of labeled_anomalies.csv by channel, and the file's sha256."""
    raw, digest = read_bytes(path, options.max_input_bytes)
    try:
        reader = csv.reader(io.StringIO(raw.decode("utf-8-sig")))
        header = [name.strip() for name in next(reader, [])]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable CSV file: {one_line(exc)}") from None
    needed = ("chan_id", "spacecraft", "anomaly_sequences", "num_values")
    missing = [name for name in needed if name not in header]
    if missing:
        raise DataError(f"{path}:1: header lacks column(s) {', '.join(missing)}")
    index = {name: header.index(name) for name in needed}
    rows: dict[str, list[_LabelRow]] = {}
    try:
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            where = f"{path}:{reader.line_num}"
            if len(cells) != len(header):
                raise DataError(f"{where}: expected {len(header)} fields, found {len(cells)}")
            chan, spacecraft, num_values = (cells[index[k]].strip() for k in ("chan_id", "spacecraft", "num_values"))
            if spacecraft not in _SPACECRAFT_WIDTH:
                raise DataError(f"{where}: unknown spacecraft {shown(spacecraft)} (expected SMAP or MSL)")
            if not num_values.isdecimal():
                raise DataError(f"{where}: num_values {shown(num_values)} is not a row count")
            sequences = _parse_sequences(where, cells[index["anomaly_sequences"]])
            rows.setdefault(chan, []).append(_LabelRow(reader.line_num, chan, spacecraft, sequences, int(num_values)))
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: {one_line(exc)}") from None
    return rows, digest


def _nasa_base(root: Path) -> Path:
    base = root.joinpath(*_NASA_FOLDER)
    if not (base / _NASA_CSV).is_file():
        raise DataError(f"{base / _NASA_CSV}: file not found; {not_under_data_dir('SMAP/MSL', root)}")
    return base


def _channel_paths(base: Path, chan: str) -> tuple[Path, Path]:
    return _require(base / "train", chan, ".npy"), _require(base / "test", chan, ".npy")


def _channel_labels(csv_path: Path, rows: list[_LabelRow], test: Table) -> np.ndarray:
    """0/1 per test row from the channel's csv rows (several rows: the union of their ranges)."""
    n_test = len(test.values)
    labels = np.zeros(n_test, dtype=np.int8)
    for row in rows:
        where = f"{csv_path}:{row.line}"
        if row.num_values != n_test:
            raise DataError(f"{where}: num_values {row.num_values} for {row.chan}, but {test.path} has {n_test} rows")
        for start, end in row.sequences:
            if end >= n_test:
                raise DataError(f"{where}: anomaly range [{start}, {end}] of {row.chan} lies outside its {n_test} "
                                f"test rows (0..{n_test - 1})")
            labels[start:end + 1] = 1
    return labels


def _unlabelled_spacecraft(table: Table) -> str | None:
    """The spacecraft whose channels have this many columns."""
    return next((sc for sc, width in _SPACECRAFT_WIDTH.items() if width == table.values.shape[1]), None)


def _load_channel(spacecraft: str, chan: str, root: Path, options: ReadOptions) -> AnomalyData:
    base = _nasa_base(root)
    csv_path = base / _NASA_CSV
    table, csv_digest = _read_label_csv(csv_path, options)
    rows = table.get(chan, [])
    if rows and rows[0].spacecraft != spacecraft:
        raise DataError(f"channel {chan} belongs to {rows[0].spacecraft}, not {spacecraft} (per {csv_path}:"
                        f"{rows[0].line}); use {rows[0].spacecraft}/{chan}")
    if not rows and _find(base / "train", chan, ".npy") is None:
        known = sorted((c for c, r in table.items() if r[0].spacecraft == spacecraft), key=_natural_key)
        raise DataError(f"unknown {spacecraft} channel {chan!r} in {base}; available: {_few(known)}")
    train, test = _read_split(*_channel_paths(base, chan), options)
    files = {"train": train.record(), "test": test.record()}
    name = f"{spacecraft}/{chan}"
    if not rows:
        if _unlabelled_spacecraft(train) != spacecraft:
            raise DataError(f"{train.path}: channel {chan} has no row in {csv_path} and {train.values.shape[1]} "
                            f"columns, but {spacecraft} channels have {_SPACECRAFT_WIDTH[spacecraft]}")
        warnings.warn(f"{spacecraft} channel {chan} has data but no row in {csv_path}: loaded without labels",
                      stacklevel=3)
        return AnomalyData(name, train.values, test.values, None, files)
    if len(rows) > 1:
        warnings.warn(f"{spacecraft} channel {chan} is listed {len(rows)} times in {csv_path} (lines "
                      f"{', '.join(str(r.line) for r in rows)}): labelled with the union of their ranges; the "
                      f"pooled {spacecraft} benchmark leaves it out", stacklevel=3)
    files["labels"] = {"path": str(csv_path.resolve()), "sha256": csv_digest}
    return AnomalyData(name, train.values, test.values, _channel_labels(csv_path, rows, test), files)


def _pooled_members(table: dict[str, list[_LabelRow]], spacecraft: str) -> list[str]:
    return sorted(chan for chan, rows in table.items() if len(rows) == 1 and rows[0].spacecraft == spacecraft)


def _members_record(folder: Path, tables: list[Table]) -> dict[str, str]:
    listing = "".join(f"{t.sha256}  {t.path.name}\n" for t in tables)
    return {"path": str(folder.resolve()), "sha256": hashlib.sha256(listing.encode()).hexdigest()}


def _load_pooled(spacecraft: str, root: Path, options: ReadOptions) -> AnomalyData:
    base = _nasa_base(root)
    csv_path = base / _NASA_CSV
    table, csv_digest = _read_label_csv(csv_path, options)
    members = _pooled_members(table, spacecraft)
    if not members:
        raise DataError(f"{csv_path}: no {spacecraft} channel listed exactly once")
    trains, tests, labels = [], [], []
    for chan in members:
        train, test = _read_split(*_channel_paths(base, chan), options)
        if trains and train.values.shape[1] != trains[0].values.shape[1]:
            raise DataError(f"{train.path} has {train.values.shape[1]} columns but {trains[0].path} has "
                            f"{trains[0].values.shape[1]}; pooled {spacecraft} channels must match")
        trains.append(train)
        tests.append(test)
        labels.append(_channel_labels(csv_path, table[chan], test))
    files = {"train": _members_record(base / "train", trains), "test": _members_record(base / "test", tests),
             "labels": {"path": str(csv_path.resolve()), "sha256": csv_digest}}
    train_values, test_values = np.concatenate([t.values for t in trains]), np.concatenate([t.values for t in tests])
    return AnomalyData(spacecraft, train_values, test_values, np.concatenate(labels), files, channels=members,
                       train_lengths=[len(t.values) for t in trains], test_lengths=[len(t.values) for t in tests])


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def canonical_anomaly_spec(spec: str) -> str:
    """The spec in one spelling: ``smd/machine-1-6`` -> ``SMD/machine-1-6``, ``smap/p-1`` -> ``SMAP/P-1``; a path
    spec becomes its absolute form (the folder, or the comma-separated file paths)."""
    spec = str(spec).strip()
    if not spec:
        raise DataError("empty dataset spec")
    match = _NAME_SPEC_RE.match(spec)
    if match is None:
        if "," in spec:
            return ",".join(str(Path(piece.strip()).expanduser().resolve()) for piece in spec.split(","))
        path = Path(spec).expanduser()
        if not path.exists() and not is_path_like(spec, _ARCHIVES):
            return spec  # neither a name nor a path: kept so that loading it lists the spec forms
        return str(path.resolve())
    archive, member = match.group(1).upper(), match.group(2)
    if member is None:
        if archive in _ENTITY_ARCHIVES:
            raise DataError(f"{spec!r}: name one {archive} {_ENTITY_ARCHIVES[archive][1]}, e.g. {archive}/<name>")
        return archive
    # SMD machines and ASD entities are lower-case (machine-1-6, omi-1), NASA channels upper-case (P-1).
    return f"{archive}/{member.lower() if archive in _ENTITY_ARCHIVES else member.upper()}"


def load_anomaly(spec: str, data_dir: str | Path | None = None, *, missing_value: float | None = None,
                 max_input_bytes: int | None = None) -> AnomalyData:
    """Load a dataset for anomaly detection (spec forms: see the module doc); values are not scaled.
    ``missing_value``: a number that marks a missing cell of a train or test file (besides the codes found by
    :mod:`sbts.data.missing`); ``max_input_bytes``: the input limit (:mod:`sbts.data.limits`)."""
    name = canonical_anomaly_spec(spec)
    options = ReadOptions(missing_value, max_input_bytes)
    archive, _, member = name.partition("/")
    if _NAME_SPEC_RE.match(name) is None:
        return _load_user(str(spec).strip(), name, options)
    root = require_data_dir(name, data_dir)
    if archive in _ENTITY_ARCHIVES:
        return _load_entity(archive, member, root, options)
    if member:
        return _load_channel(archive, member, root, options)
    return _load_pooled(archive, root, options)


def available_anomaly_datasets(data_dir: str | Path | None = None) -> list[str]:
    """Every loadable named spec under the data dir (``data_dir`` or ``$SBTS_DATA_DIR``); [] when it is unset."""
    root = resolve_data_dir(data_dir)
    if root is None:
        return []
    specs = []
    for archive, (parts, _) in _ENTITY_ARCHIVES.items():
        specs += [f"{archive}/{entity}" for entity in _entities(root.joinpath(*parts))]
    base = root.joinpath(*_NASA_FOLDER)
    if not (base / _NASA_CSV).is_file():
        return specs
    table, _ = _read_label_csv(base / _NASA_CSV, ReadOptions())
    with_data = _stems(base / "train", ".npy") & _stems(base / "test", ".npy")
    channels: dict[str, list[str]] = {sc: [] for sc in _SPACECRAFT_WIDTH}
    for chan in sorted(with_data, key=_natural_key):
        if chan in table:
            channels[table[chan][0].spacecraft].append(chan)
        elif (spacecraft := _unlabelled_spacecraft(read_table(_require(base / "train", chan, ".npy")))) is not None:
            channels[spacecraft].append(chan)
    for spacecraft, chans in channels.items():
        members = _pooled_members(table, spacecraft)
        if members and set(members) <= with_data:
            specs.append(spacecraft)
        specs += [f"{spacecraft}/{chan}" for chan in chans]
    return specs
