"""Forecasting data loading: the table reader's date column, user files of every form, every bad input, the split
rules on synthetic series, and the real ETT/weather/exchange_rate/illness files."""

from __future__ import annotations

import gzip
import io
import re
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import real_data_dir

from sbts.data import tables
from sbts.data.forecasting import (SPLIT_METHODS, ForecastData, SplitBounds, available_forecasting_datasets,
                                   canonical_forecasting_spec, load_forecasting, split_bounds)
from sbts.data.uea import sha256_file
from sbts.errors import ConfigError, DataError

VALUES = np.array([[0.5, -1.0], [1.5, 3.25], [2.0, 1e-3], [3.0, 4.0], [-7.5, 0.0]])
HOUR = np.timedelta64(3600, "s")


def write(path: Path, text: str | bytes, gz: bool = False) -> Path:
    data = text.encode() if isinstance(text, str) else text
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def hourly(n: int, start: str = "2016-07-01", step: np.timedelta64 = HOUR) -> np.ndarray:
    return np.datetime64(start, "s") + np.arange(n) * step


def as_text(values: np.ndarray, dates: np.ndarray | None = None, header: list[str] | None = None, sep: str = ",",
            date_sep: str = " ") -> str:
    """Rows of ``values`` (and a leading date column written ``YYYY-MM-DD<date_sep>HH:MM:SS``)."""
    lines = [sep.join(header)] if header else []
    for i, row in enumerate(values):
        cells = [repr(float(v)) for v in row]
        if dates is not None:
            cells.insert(0, str(dates[i]).replace("T", date_sep))
        lines.append(sep.join(cells))
    return "\n".join(lines) + "\n"


def as_npy(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, values)
    return buffer.getvalue()


def load_error(spec: str, error: type[Exception] = DataError, **kwargs: object) -> str:
    with pytest.raises(error) as info:
        load_forecasting(spec, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


def split_error(data: ForecastData, error: type[Exception] = ConfigError, **kwargs: object) -> str:
    with pytest.raises(error) as info:
        split_bounds(data, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


def series(n: int, dates: np.ndarray | None = None, name: str = "synthetic") -> ForecastData:
    """An in-memory series for the split rules (only its length, dates and name matter to them)."""
    return ForecastData(name, np.zeros((n, 1)), ["x0"], dates, {"series": {"path": name, "sha256": ""}})


# ---------------------------------------------------------------------------------------------------
# The table reader's date column
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["2016-07-01 00:00:00", "2016-07-01T00:00:00", "2016-07-01T00:00", "2016-07-01"])
def test_date_forms(tmp_path: Path, cell: str) -> None:
    path = write(tmp_path / "s.csv", f"date,a\n{cell},1.0\n2016-07-02,2.0\n")
    table = tables.read_table(path, date_column="auto")
    assert table.dates.dtype == np.dtype("datetime64[s]")
    assert table.dates.tolist() == np.array(["2016-07-01", "2016-07-02"], dtype="datetime64[s]").tolist()
    assert table.columns == ["a"] and table.values[:, 0].tolist() == [1.0, 2.0]


def test_date_column_modes(tmp_path: Path) -> None:
    dated = write(tmp_path / "dated.csv", as_text(VALUES, hourly(5)))
    undated = write(tmp_path / "undated.csv", as_text(VALUES, header=["a", "b"]))
    assert tables.read_table(dated, "required").values.tolist() == VALUES.tolist()
    assert tables.read_table(dated, "auto").columns is None  # no header line
    auto = tables.read_table(undated, "auto")
    assert auto.dates is None and auto.columns == ["a", "b"]
    with pytest.raises(DataError, match=re.escape(f"{dated}:1: column 1: not a number: '2016-07-01 00:00:00'")):
        tables.read_table(dated)  # the default, "none", as the anomaly loaders read
    with pytest.raises(DataError, match=re.escape(f"{undated}:2: column 1: not a date: '0.5'")):
        tables.read_table(undated, "required")
    npy = write(tmp_path / "s.npy", as_npy(VALUES))
    assert tables.read_table(npy, "auto").dates is None
    with pytest.raises(DataError, match="a .npy array has no date column"):
        tables.read_table(npy, "required")
    with pytest.raises(ValueError, match="date_column must be one of"):
        tables.read_table(dated, "maybe")


def test_where_counts_the_date_column(tmp_path: Path) -> None:
    path = write(tmp_path / "s.csv", as_text(VALUES, hourly(5), header=["date", "a", "b"]))
    table = tables.read_table(path, "auto")
    assert table.where(1, 1) == f"{path}:3: column 3" and table.line(0) == f"{path}:2"


def test_whitespace_separated_dates_are_one_token(tmp_path: Path) -> None:
    path = write(tmp_path / "s.txt", as_text(VALUES, hourly(5), sep=" ", date_sep="T"))
    table = tables.read_table(path, "auto")
    assert table.dates[1] == np.datetime64("2016-07-01T01:00:00") and table.values.tolist() == VALUES.tolist()


# ---------------------------------------------------------------------------------------------------
# User files: every form
# ---------------------------------------------------------------------------------------------------


FORMATS = {  # name -> (file suffix, content, has dates, columns)
    "csv-dates-header": (".csv", as_text(VALUES, hourly(5), header=["date", "a", "b"]), True, ["a", "b"]),
    "csv-dates": (".csv", as_text(VALUES, hourly(5), date_sep="T"), True, ["x0", "x1"]),
    "csv-header": (".csv", as_text(VALUES, header=["a", "b"]), False, ["a", "b"]),
    "txt": (".txt", as_text(VALUES), False, ["x0", "x1"]),
    "txt-whitespace": (".txt", as_text(VALUES, sep="\t "), False, ["x0", "x1"]),
    "npy": (".npy", as_npy(VALUES), False, ["x0", "x1"]),
}


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_one_file_in_every_format(tmp_path: Path, fmt: str, gz: bool) -> None:
    suffix, content, has_dates, columns = FORMATS[fmt]
    path = write(tmp_path / f"series{suffix}{'.gz' if gz else ''}", content, gz)
    data = load_forecasting(str(path))
    assert data.name == str(path.resolve()) == canonical_forecasting_spec(str(path))
    assert data.values.dtype == np.float64 and data.values.tolist() == VALUES.tolist()
    assert (data.n_steps, data.n_channels) == (5, 2) and data.columns == columns
    assert (data.dates is not None) == has_dates
    if has_dates:
        assert data.dates.tolist() == hourly(5).tolist()
    assert data.files == {"series": {"path": str(path.resolve()), "sha256": sha256_file(path)}}
    assert data.file_lengths is None


def test_one_npy_column_is_one_channel(tmp_path: Path) -> None:
    path = write(tmp_path / "s.npy", as_npy(np.arange(4.0)))
    data = load_forecasting(str(path))
    assert data.values.shape == (4, 1) and data.columns == ["x0"]


@pytest.mark.parametrize("with_val", [False, True])
def test_split_files(tmp_path: Path, with_val: bool) -> None:
    dates = hourly(9)
    parts = [(0, 4), (4, 6), (6, 9)] if with_val else [(0, 4), (4, 9)]
    roles = ["train", "val", "test"] if with_val else ["train", "test"]
    rows = np.arange(18.0).reshape(9, 2)
    paths = []
    for role, (start, end) in zip(roles, parts):
        header = ["date", "a", "b"] if role == "train" else None  # a header in one file names every channel
        paths.append(write(tmp_path / f"{role}.csv.gz", as_text(rows[start:end], dates[start:end], header), gz=True))
    spec = ",".join(str(p) for p in paths)
    data = load_forecasting(spec)
    assert data.name == ",".join(str(p.resolve()) for p in paths)
    assert data.values.tolist() == rows.tolist() and data.dates.tolist() == dates.tolist()
    assert data.columns == ["a", "b"] and list(data.files) == roles
    assert data.files["test"]["sha256"] == sha256_file(paths[-1])
    assert data.file_lengths == [end - start for start, end in parts]
    expected = (4, 6, 9) if with_val else (4, 4, 9)
    assert split_bounds(data) == SplitBounds(*expected, "files")
    for method in ("informer", "fraction", "dates"):
        assert f"split method {method!r} cannot be used with split files" in split_error(data, method=method)
    assert "split fractions cannot be used with split files" in split_error(data, fractions=(0.6, 0.2, 0.2))


def test_split_files_without_dates_may_mix_formats(tmp_path: Path) -> None:
    train = write(tmp_path / "train.npy", as_npy(VALUES[:3]))
    test = write(tmp_path / "test.txt", as_text(VALUES[3:]))
    data = load_forecasting(f"{train}, {test}")
    assert data.values.tolist() == VALUES.tolist() and data.dates is None and data.file_lengths == [3, 2]
    assert data.where(1) == f"{train.resolve()}: row 1 (0-based)"
    assert data.where(4) == f"{test.resolve()}: row 1 (0-based)"


# ---------------------------------------------------------------------------------------------------
# User files: bad input
# ---------------------------------------------------------------------------------------------------


DATED = "date,a\n2016-07-01 00:00:00,1\n2016-07-01 01:00:00,2\n"


@pytest.mark.parametrize("content,expected", [
    ("1,2\n3,x\n", r":2: column 2: not a number: 'x'"),
    ("1,2\n3,nan\n", r":2: column 2: value 'nan' is not finite \(NaN or inf\)"),
    ("1,2\ninf,3\n", r":2: column 1: value 'inf' is not finite"),
    ("1,2\n3,4\n5\n", r":3: expected 2 columns \(as on line 1\), found 1"),
    ("a,b\n1,2\n3,4,5\n", r":3: expected 2 columns \(as in the header on line 1\), found 3"),
    ("", r": empty file$"),
    ("\n \n", r": empty file$"),
    ("date,a,b\n", r": no data rows after the header line$"),
    ("1,2\n", r": 1 row; a forecasting series needs at least 2$"),
    ("date,a\n2016-07-01,1\n", r": 1 row; a forecasting series needs at least 2$"),
    (DATED + "2016-07-01 02:00:00,x\n", r":4: column 2: not a number: 'x'"),
    (DATED + "2016-07-01 02:00:00,-inf\n", r":4: column 2: value '-inf' is not finite"),
    (DATED + "2016-07-01 02:00:00,3,4\n", r":4: expected 2 columns \(as in the header on line 1\), found 3"),
    (DATED + "2016-07-01 02:00:00\n", r":4: expected 2 columns \(as in the header on line 1\), found 1"),
    (DATED + "yesterday,3\n", r":4: column 1: not a date: 'yesterday' \(expected YYYY-MM-DD\[ HH:MM\[:SS\]\]\)"),
    (DATED + "2016-02-30 00:00:00,3\n", r":4: column 1: not a date: '2016-02-30 00:00:00'"),
    (DATED + "2016-07-01 02:00:00.5,3\n", r":4: column 1: not a date: '2016-07-01 02:00:00.5'"),
    (DATED + "NaT,3\n", r":4: column 1: not a date: 'NaT'"),
    (DATED + "7,3\n", r":4: column 1: not a date: '7'"),
    (DATED + ",3\n", r":4: column 1: empty value"),
    (DATED + "2016-07-01 01:00:00,3\n", r":4: date 2016-07-01 01:00:00 is not after 2016-07-01 01:00:00 on line 3; "
                                        r"dates must be strictly increasing"),
    (DATED + "\n2016-06-30,3\n", r":5: date 2016-06-30 00:00:00 is not after 2016-07-01 01:00:00 on line 3"),
    ("date\n2016-07-01\n2016-07-02\n", r": only a date column; expected numeric columns after it"),
])
def test_bad_file_names_file_and_line(tmp_path: Path, content: str, expected: str) -> None:
    path = write(tmp_path / "series.csv", content)
    assert re.search("^" + re.escape(str(path)) + expected, load_error(str(path)))


def test_bad_gz_and_npy(tmp_path: Path) -> None:
    path = write(tmp_path / "series.csv.gz", DATED + "2016-07-01 02:00:00,?\n", gz=True)
    assert load_error(str(path)) == f"{path}:4: column 2: not a number: '?'"
    path = write(tmp_path / "series.csv.gz", b"not gzip")
    assert load_error(str(path)).startswith(f"{path}: corrupted gzip file")
    path = write(tmp_path / "series.npy", as_npy(np.array([[1.0], [np.nan]])))
    assert load_error(str(path)) == f"{path}: row 1, column 0 (0-based): value nan is not finite (NaN or inf)"
    path = write(tmp_path / "one.npy", as_npy(np.ones((1, 3))))
    assert load_error(str(path)) == f"{path}: 1 row; a forecasting series needs at least 2"


def test_bad_split_files(tmp_path: Path) -> None:
    dates = hourly(6)
    train = write(tmp_path / "train.csv", as_text(VALUES[:3], dates[:3]))
    narrow = write(tmp_path / "narrow.csv", as_text(VALUES[3:, :1], dates[3:5]))
    assert load_error(f"{train},{narrow}") == f"{train} has 2 columns but {narrow} has 1; split files must match"
    undated = write(tmp_path / "undated.csv", as_text(VALUES[3:]))
    assert load_error(f"{undated},{train}") == (f"{train} has a date column but {undated} has none; give dates in "
                                                f"every split file or in none")
    early = write(tmp_path / "early.csv", "\n" + as_text(VALUES[3:], dates[2:4]))
    assert load_error(f"{train},{early}") == (f"{early}:2: date 2016-07-01 02:00:00 is not after 2016-07-01 "
                                              f"02:00:00, the last date of {train}:3; split files must follow each "
                                              f"other in time")
    later = write(tmp_path / "later.csv", as_text(VALUES[3:], dates[3:5]))
    assert load_error(f"{later},{train},{later}").startswith(f"{train}:1: date 2016-07-01 00:00:00 is not after")
    named = write(tmp_path / "named.csv", as_text(VALUES[:3], dates[:3], header=["date", "a", "b"]))
    renamed = write(tmp_path / "renamed.csv", as_text(VALUES[3:], dates[3:5], header=["date", "b", "a"]))
    assert load_error(f"{named},{renamed}") == (f"{named} names its columns a, b but {renamed} names them b, a; "
                                                f"split files must match")
    assert "expected 'TRAIN,TEST' or 'TRAIN,VAL,TEST'" in load_error(f"{train},{later},{later},{later}")
    assert "expected 'TRAIN,TEST'" in load_error(f"{train},")
    assert load_error(f"{train},{tmp_path / 'nope.csv'}") == f"{tmp_path / 'nope.csv'}: file not found"
    assert load_error(f"{tmp_path},{train}") == f"{tmp_path}: is a folder, expected a file"


def test_unknown_name_lists_the_known_ones() -> None:
    for spec in ("ETT/ETTh3", canonical_forecasting_spec("ETT/ETTh3")):  # as given, and as the task passes it on
        message = load_error(spec)
        assert message.startswith("'ETT/ETTh3': no such file and not a known dataset; known names: ETT/ETTh1, "
                                  "ETT/ETTh2")
        assert "weather, exchange_rate, illness" in message
    with pytest.raises(DataError, match="empty dataset spec"):
        canonical_forecasting_spec("  ")


def test_a_missing_path_is_named_as_such() -> None:
    assert load_error("./typo_dir") == "no such file or directory: ./typo_dir"
    assert load_error("data/typo.csv") == "no such file or directory: data/typo.csv"
    absolute = canonical_forecasting_spec("./typo_dir")  # what the task passes on
    assert absolute == str(Path("typo_dir").resolve())
    assert load_error(absolute) == f"no such file or directory: {absolute}"


# ---------------------------------------------------------------------------------------------------
# Named datasets on a small synthetic data dir
# ---------------------------------------------------------------------------------------------------


def test_canonical_names() -> None:
    assert canonical_forecasting_spec(" ett/etth1 ") == "ETT/ETTh1"
    assert canonical_forecasting_spec("ETT/ETTM2") == "ETT/ETTm2"
    assert canonical_forecasting_spec("Exchange_Rate") == "exchange_rate"
    assert canonical_forecasting_spec("./weather") == str(Path("weather").resolve())


def test_named_datasets_in_a_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ett = tmp_path / "forecasting" / "ETT-small"
    ett.mkdir(parents=True)
    write(ett / "ETTh1.csv.gz", as_text(VALUES, hourly(5), header=["date", "HUFL", "OT"]), gz=True)
    (tmp_path / "forecasting" / "illness").mkdir()
    write(tmp_path / "forecasting" / "illness" / "illness.txt", as_text(VALUES))
    data = load_forecasting("ett/etth1", data_dir=tmp_path)
    assert data.name == "ETT/ETTh1" and data.columns == ["HUFL", "OT"] and data.dates[0] == hourly(1)[0]
    assert data.files["series"]["path"] == str((ett / "ETTh1.csv.gz").resolve())
    illness = load_forecasting("ILLNESS", data_dir=tmp_path)
    assert illness.name == "illness" and illness.columns == ["x0", "x1"] and illness.dates is None
    assert available_forecasting_datasets(tmp_path) == ["ETT/ETTh1", "illness"]
    assert load_error("weather", data_dir=tmp_path) == (f"{tmp_path / 'forecasting' / 'weather' / 'weather.txt'}"
                                                        f"[.gz]: file not found; weather is not under the data dir "
                                                        f"{tmp_path} (set SBTS_DATA_DIR or pass --data-dir "
                                                        f"(data_dir= in Python) to use another)")
    write(ett / "ETTh2.csv", as_text(VALUES, header=["date", "a", "b"]))  # ETT must have dates
    assert load_error("ETT/ETTh2", data_dir=tmp_path) == f"{ett / 'ETTh2.csv'}:2: column 1: not a date: '0.5' " \
                                                         f"(expected YYYY-MM-DD[ HH:MM[:SS]])"
    monkeypatch.delenv("SBTS_DATA_DIR", raising=False)
    assert load_error("ETT/ETTh1") == ("dataset 'ETT/ETTh1': no data dir; set SBTS_DATA_DIR or pass --data-dir "
                                       "(data_dir= in Python)")
    assert available_forecasting_datasets() == []
    monkeypatch.setenv("SBTS_DATA_DIR", str(tmp_path))
    assert load_forecasting("ETT/ETTh1").values.tolist() == VALUES.tolist()


# ---------------------------------------------------------------------------------------------------
# Split rules
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("step_s,expected", [
    (3600, (8640, 11520, 14400)),  # ETTh: 24 steps a day
    (900, (34560, 46080, 57600)),  # ETTm: 96 steps a day
    (86_400, (360, 480, 600)),
])
def test_informer_split(step_s: int, expected: tuple[int, int, int]) -> None:
    n = expected[2] + 7  # the rows after the 20 months are unused
    data = series(n, hourly(n, step=np.timedelta64(step_s, "s")))
    assert split_bounds(data, "informer") == SplitBounds(*expected, "informer")
    short = series(expected[2] - 1, data.dates[:expected[2] - 1])
    message = split_error(short, DataError, method="informer")
    assert f"split method 'informer' needs {expected[2]} rows (20 months of 30 days" in message
    assert message.endswith(f"but the series has {expected[2] - 1}")


def test_informer_split_needs_a_regular_step_dividing_a_day(tmp_path: Path) -> None:
    dates = hourly(6)
    dates[4:] += np.timedelta64(1800, "s")
    path = write(tmp_path / "s.csv", "date,a\n" + as_text(np.zeros((6, 1)), dates))
    message = split_error(load_forecasting(str(path)), DataError, method="informer")
    assert message == (f"{path.resolve()}:6: 90 min after the row before, but the series' step is 1 h (its first "
                       f"two rows); split method 'informer' needs a regular series")
    seven_hours = series(3000, hourly(3000, step=7 * HOUR))
    assert "its step of 7 h does not divide a day" in split_error(seven_hours, DataError, method="informer")
    weekly = series(3000, hourly(3000, step=7 * 24 * HOUR))
    assert "its step of 7 d does not divide a day" in split_error(weekly, DataError, method="informer")
    assert "split method 'informer' needs dates, but synthetic has no date column" in split_error(
        series(20_000), method="informer")


def test_auto_split_is_informer_for_ett_else_fraction() -> None:
    dates = hourly(17_420)
    assert split_bounds(series(17_420, dates, name="ETT/ETTh1")) == SplitBounds(8640, 11520, 14400, "informer")
    assert split_bounds(series(17_420, dates)) == SplitBounds(12194, 13936, 17420, "fraction")


def test_fraction_split() -> None:
    assert split_bounds(series(7588), "fraction") == SplitBounds(5311, 6071, 7588, "fraction")  # exchange_rate
    assert split_bounds(series(100), fractions=(0.6, 0.2, 0.2)) == SplitBounds(60, 80, 100, "fraction")
    assert split_bounds(series(10), fractions=(0.5, 0.0, 0.5)) == SplitBounds(5, 5, 10, "fraction")
    assert split_bounds(series(7588)).to_dict() == {"train_end": 5311, "val_end": 6071, "test_end": 7588,
                                                    "method": "fraction"}
    for bad, expected in [((0.7, 0.1), "must be three numbers"), ((0.7, "x", 0.2), "must be three numbers"),
                          ((0.8, 0.1, 0.2), "must sum to 1, not 1.1"),
                          ((1.2, -0.4, 0.2), "must be non-negative"), ((0.7, float("nan"), 0.3), "non-negative"),
                          ((0.0, 0.5, 0.5), "train and test fractions must be above 0"),
                          ((0.9, 0.1, 0.0), "train and test fractions must be above 0")]:
        assert expected in split_error(series(100), fractions=bad), bad
    assert "3 rows leave the train or the test split empty" in split_error(series(3), DataError,
                                                                          fractions=(0.9, 0.0, 0.1))


def test_fractions_are_refused_by_the_other_methods_not_ignored() -> None:
    dates = hourly(17_420)
    ett = series(17_420, dates, name="ETT/ETTh1")
    assert split_error(ett, fractions=(0.6, 0.2, 0.2)) == (
        "split fractions apply to split method 'fraction', not 'informer' (ETT/ETTh1's default); choose the split "
        "method 'fraction' to use them")
    assert "not 'dates'" in split_error(series(100, hourly(100)), method="dates", fractions=(0.6, 0.2, 0.2),
                                        train_end="2016-07-02", val_end="2016-07-03")
    assert split_bounds(ett, "fraction", fractions=(0.6, 0.2, 0.2)) == SplitBounds(10452, 13936, 17420, "fraction")


def test_dates_split() -> None:
    data = series(100, hourly(100, start="2020-01-01", step=24 * HOUR))  # 2020-01-01 .. 2020-04-09
    assert split_bounds(data, "dates", train_end="2020-02-01", val_end="2020-03-01") == SplitBounds(
        31, 60, 100, "dates")
    assert split_bounds(data, "dates", train_end="2020-02-01 00:00:01", val_end="2020-03-01T00:00",
                        test_end="2020-04-01") == SplitBounds(32, 60, 91, "dates")
    assert "leaves no train rows: synthetic runs from 2020-01-01 00:00:00 to 2020-04-09 00:00:00" in split_error(
        data, method="dates", train_end="2020-01-01", val_end="2020-02-01")
    assert "val_end 2020-05-01 00:00:00 leaves no test rows" in split_error(
        data, method="dates", train_end="2020-02-01", val_end="2020-05-01")
    assert "val_end 2020-02-01 00:00:00 must be after train_end 2020-02-01 00:00:00" in split_error(
        data, method="dates", train_end="2020-02-01", val_end="2020-02-01")
    assert "test_end 2020-02-15 00:00:00 must be after val_end 2020-03-01 00:00:00" in split_error(
        data, method="dates", train_end="2020-02-01", val_end="2020-03-01", test_end="2020-02-15")
    assert "val_end 'March' is not a date (expected YYYY-MM-DD[ HH:MM[:SS]])" in split_error(
        data, method="dates", train_end="2020-02-01", val_end="March")
    assert "needs train_end and val_end" in split_error(data, method="dates", train_end="2020-02-01")
    assert "split method 'dates' needs dates" in split_error(series(100), method="dates", train_end="2020-02-01",
                                                             val_end="2020-03-01")
    assert "train_end only apply to split method 'dates', not 'auto'" in split_error(data, train_end="2020-02-01")


def test_unknown_split_method() -> None:
    assert SPLIT_METHODS == ("auto", "informer", "fraction", "dates")
    assert split_error(series(10), method="random") == ("unknown split method 'random'; expected one of: auto, "
                                                         "informer, fraction, dates")


# ---------------------------------------------------------------------------------------------------
# The real datasets
# ---------------------------------------------------------------------------------------------------


@pytest.mark.data
def test_real_etth1() -> None:
    data = load_forecasting("ETT/ETTh1", data_dir=real_data_dir())
    assert (data.n_steps, data.n_channels) == (17420, 7)
    assert data.columns == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    assert data.dates[0] == np.datetime64("2016-07-01T00:00:00") and data.dates[1] - data.dates[0] == HOUR
    assert data.files["series"]["sha256"] == sha256_file(Path(data.files["series"]["path"]))
    assert split_bounds(data) == SplitBounds(8640, 11520, 14400, "informer")


@pytest.mark.data
def test_real_ettm1_loads_fast() -> None:
    start = time.perf_counter()
    data = load_forecasting("ett/ettm1", data_dir=real_data_dir())
    seconds = time.perf_counter() - start
    print(f"ETTm1 ({data.n_steps} rows) loaded in {seconds:.3f} s")  # about 0.15 s; not asserted (machines vary)
    assert (data.n_steps, data.n_channels) == (69680, 7)
    assert split_bounds(data, "informer") == SplitBounds(34560, 46080, 57600, "informer")


@pytest.mark.data
def test_real_headerless_sets() -> None:
    root = real_data_dir()
    exchange = load_forecasting("exchange_rate", data_dir=root)
    assert (exchange.n_steps, exchange.n_channels) == (7588, 8) and exchange.dates is None
    assert split_bounds(exchange) == SplitBounds(5311, 6071, 7588, "fraction")
    weather = load_forecasting("weather", data_dir=root)
    assert (weather.n_steps, weather.n_channels) == (52696, 21) and weather.columns[-1] == "x20"
    illness = load_forecasting("illness", data_dir=root)
    assert (illness.n_steps, illness.n_channels) == (966, 7)
    assert available_forecasting_datasets(root) == ["ETT/ETTh1", "ETT/ETTh2", "ETT/ETTm1", "ETT/ETTm2", "weather",
                                                    "exchange_rate", "illness"]


@pytest.mark.data
def test_real_file_as_user_split_files(tmp_path: Path) -> None:
    """ETTh1 cut into train/val/test files at the Informer bounds loads back as the same series and split."""
    source = real_data_dir() / "forecasting" / "ETT-small" / "ETTh1.csv"
    lines = source.read_text().splitlines(keepends=True)
    header, rows = lines[0], lines[1:14401]
    paths = [write(tmp_path / "train.csv.gz", header + "".join(rows[:8640]), gz=True),
             write(tmp_path / "val.csv", "".join(rows[8640:11520])),
             write(tmp_path / "test.csv", header + "".join(rows[11520:]))]
    data = load_forecasting(",".join(str(p) for p in paths))
    whole = load_forecasting(str(source))
    np.testing.assert_array_equal(data.values, whole.values[:14400])
    assert data.columns == whole.columns and split_bounds(data) == SplitBounds(8640, 11520, 14400, "files")
