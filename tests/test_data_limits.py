"""Hardening of the data loaders: missing-value codes (-9999), the input size limit and decompression bombs."""

from __future__ import annotations

import gzip
import io
import time
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import real_data_dir

from sbts.data import uea
from sbts.data.anomaly import load_anomaly
from sbts.data.forecasting import load_forecasting, split_bounds
from sbts.data.limits import DEFAULT_MAX_INPUT_BYTES, MAX_INPUT_BYTES_ENV
from sbts.data.missing import MissingValueWarning, find_missing_codes
from sbts.data.tables import read_series, read_table
from sbts.data.ts_format import read_ts
from sbts.errors import ConfigError, DataError

MIB = 1 << 20


def rows_text(rows: list[list[float]], header: str | None = None) -> str:
    lines = ([header] if header else []) + [",".join(f"{v:g}" for v in row) for row in rows]
    return "\n".join(lines) + "\n"


def missing_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, MissingValueWarning)]


# A series with codes: column a holds a run of -9999 inside and one at the end; column b one -9999 at the start
# (the file's convention, repeated elsewhere, even though b has it once); column c a real spike (not a code).
SERIES = [[1.0, -9999.0, 0.1],
          [2.0, 11.0, 0.2],
          [-9999.0, 12.0, 0.3],
          [-9999.0, 13.0, 50.0],
          [5.0, 14.0, 0.5],
          [-9999.0, 15.0, 0.6]]


def write_series(tmp_path: Path, name: str = "series.csv", rows: list[list[float]] = SERIES) -> Path:
    path = tmp_path / name
    path.write_text(rows_text(rows, header=",".join("abc"[:len(rows[0])])))
    return path


# --------------------------------------------------------------------------------------------------
# Missing-value codes
# --------------------------------------------------------------------------------------------------


def test_codes_are_reported_per_column_and_interpolated_over_time(tmp_path: Path) -> None:
    path = write_series(tmp_path)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        values = read_series(path)
    lines = missing_warnings(record)
    assert lines == [
        f"{path}:4: column 1 (a): value -9999 in 3 cells (first here), a missing-value code far outside the "
        f"column's other values 1..5: treated as missing, interpolated linearly over time (the nearest valid value "
        f"at the start and end)",
        f"{path}:2: column 2 (b): value -9999 in 1 cell (first here), a missing-value code far outside the "
        f"column's other values 11..15: treated as missing, interpolated linearly over time (the nearest valid "
        f"value at the start and end)",
    ]
    # a: 2 -> (3, 4) -> 5 inside, the last cell takes the last valid value; b: the first takes the first valid one.
    np.testing.assert_allclose(values[:, 0], [1, 2, 3, 4, 5, 5])
    np.testing.assert_allclose(values[:, 1], [11, 11, 12, 13, 14, 15])
    np.testing.assert_allclose(values[:, 2], [0.1, 0.2, 0.3, 50.0, 0.5, 0.6])  # the spike is data
    assert read_table(path).values[2, 0] == -9999  # the raw table keeps what the file says


def test_predict_inputs_lose_their_codes_as_training_series_do(tmp_path: Path) -> None:
    from sbts.runtime.inputs import read_series as read_predict_input

    path = write_series(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingValueWarning)
        np.testing.assert_array_equal(read_predict_input(path, columns=list("abc")), read_series(path))


def test_what_is_not_a_code() -> None:
    scaled = np.array([-1.0] * 50 + list(np.linspace(0.40, 0.41, 50)))  # a scaled channel's minimum, far out
    lone = np.array([-9999.0] + [1.0, 2.0, 3.0])  # far out but only once in the file
    near = np.array([-999.0, -999.0] + list(np.linspace(0, 1000, 10)))  # within the column's own range
    flat = np.array([500.0, 500.0, 7.0, 7.0, 7.0])  # the rest is constant: no scale to judge by
    for column in (scaled, lone, near, flat):
        assert find_missing_codes([column]) == []
    two_codes = np.array([-9999.0, -999.0, -999.0, 1.0, 2.0, 3.0])
    found = find_missing_codes([two_codes, lone])
    assert [(code.column, code.value, code.rows.tolist()) for code in found] == [
        (0, -9999.0, [0]), (0, -999.0, [1, 2]), (1, -9999.0, [0])]  # -9999 is repeated across the file


def test_a_given_missing_value_is_missing_wherever_it_is(tmp_path: Path) -> None:
    path = write_series(tmp_path, rows=[[1.0, 0.0], [0.0, 0.0], [3.0, 7.0]])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        values = read_series(path, missing_value=0)
    assert [line.split(": value")[0] for line in missing_warnings(record)] == [f"{path}:3: column 1 (a)",
                                                                            f"{path}:2: column 2 (b)"]
    assert "value 0 in 2 cells (first here), the given missing value" in missing_warnings(record)[1]
    np.testing.assert_allclose(values, [[1, 7], [2, 7], [3, 7]])
    with pytest.raises(ConfigError, match="missing_value must be a finite number"):
        read_series(path, missing_value=float("nan"))


def test_a_column_with_nothing_but_missing_values_is_an_error(tmp_path: Path) -> None:
    path = write_series(tmp_path, rows=[[1.0, -9999.0], [2.0, -9999.0]])
    with pytest.raises(DataError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingValueWarning)
        read_series(path, missing_value=-9999)
    assert str(info.value) == (f"{path}:2: column 2 (b): every value of the column is missing (-9999); nothing to "
                               f"interpolate from")


def test_forecasting_and_anomaly_loaders_interpolate_codes(tmp_path: Path) -> None:
    series = write_series(tmp_path)
    with pytest.warns(MissingValueWarning):
        forecast = load_forecasting(str(series))
    np.testing.assert_allclose(forecast.values[:, 0], [1, 2, 3, 4, 5, 5])
    folder = tmp_path / "detector"
    folder.mkdir()
    write_series(folder, "train.csv")
    write_series(folder, "test.csv", rows=[[1.0, 2.0, 3.0], [-7.0, 2.5, 3.5], [2.0, 3.0, 4.0]])
    with pytest.warns(MissingValueWarning) as record:
        data = load_anomaly(str(folder), missing_value=-7)
    assert [str(w.message).split(": value")[0] for w in record] == [
        f"{folder / 'train.csv'}:4: column 1 (a)", f"{folder / 'train.csv'}:2: column 2 (b)",
        f"{folder / 'test.csv'}:3: column 1 (a)"]
    np.testing.assert_allclose(data.train[:, 1], [11, 11, 12, 13, 14, 15])
    np.testing.assert_allclose(data.test[:, 0], [1, 1.5, 2])


def test_ts_codes_become_nan(tmp_path: Path) -> None:
    path = tmp_path / "Toy_TRAIN.ts"
    path.write_text("@problemName Toy\n@dimensions 2\n@classLabel true a b\n@data\n"
                    "1,2,3:5,6,7:a\n"
                    "4,-9999,6:-9999,8,9:b\n"
                    "7,8:9,10:a\n")
    with pytest.warns(MissingValueWarning) as record:
        data = read_ts(path, missing_value=8)
    assert [str(w.message).split(" in ")[0] for w in record] == [  # by dimension, the given value first
        f"{path}:7: dimension 1, value 2: value 8", f"{path}:6: dimension 1, value 2: value -9999",
        f"{path}:6: dimension 2, value 2: value 8", f"{path}:6: dimension 2, value 1: value -9999"]
    assert "set to NaN like '?'" in str(record[1].message) and "code far outside" in str(record[1].message)
    nan = np.nan
    np.testing.assert_array_equal(data.series[1], [[4, nan, 6], [nan, nan, 9]])
    np.testing.assert_array_equal(data.series[2], [[7, nan], [9, 10]])
    np.testing.assert_array_equal(data.series[0], [[1, 2, 3], [5, 6, 7]])


@pytest.mark.parametrize("task,places", [("forecasting", {"series.csv"}), ("anomaly", {"train.csv", "test.csv"}),
                                         ("classification", {"X_TRAIN.ts"})])
def test_train_missing_value_is_the_runs_own_and_resume_reads_the_same(tmp_path: Path, capsys, task: str,
                                                                       places: set[str]) -> None:
    """``--missing-value`` reaches the task's loader, is recorded in the run (config.json), and a resumed run
    reads its files with it (their sha256 and the scaler are checked against the first reading)."""
    import json

    from conftest import synthetic_cases, write_ts

    from sbts.cli.main import main

    sentinel = 7.0  # inside the data's range: no rule would find it, only the user knows
    rng = np.random.default_rng(0)
    if task == "classification":
        series, labels = synthetic_cases(24)
        series[0][0, 3] = series[5][1, 2] = sentinel
        classes = sorted(set(labels))
        data = write_ts(tmp_path / "X_TRAIN.ts", series, labels, classes)
        write_ts(tmp_path / "X_TEST.ts", *synthetic_cases(12, seed=1), classes)
    else:
        rows = rng.uniform(0, 10, size=(120, 2))
        rows[[3, 40], 0] = sentinel
        folder = tmp_path / "detector" if task == "anomaly" else tmp_path
        folder.mkdir(exist_ok=True)
        for name in (["train.csv", "test.csv"] if task == "anomaly" else ["series.csv"]):
            (folder / name).write_text(rows_text(rows.tolist(), header="a,b"))
        if task == "anomaly":
            (folder / "test_label.csv").write_text("\n".join("1" if i in (50, 51) else "0" for i in range(120)) + "\n")
        data = folder if task == "anomaly" else folder / "series.csv"
    small = ["--epochs", "2", "--d-model", "8", "--n-heads", "2", "--device", "cpu", "--quiet"]
    if task != "classification":
        small += ["--window", "8"]
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", task, "--data", str(data), "--out", str(run), "--missing-value", "7", *small,
                 "--epochs", "1"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "the given missing value" in line]
    assert {Path(line.split("warning: ")[1].split(":")[0]).name for line in warned} == places, warned
    assert all(": column " in line or ": dimension " in line for line in warned), warned  # each names its cell
    assert json.loads((run / "config.json").read_text())["task_options"]["missing_value"] == sentinel
    assert main(["train", task, "--out", str(run), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2
    assert main(["train", task, "--data", str(data), "--out", str(tmp_path / "bad"), "--missing-value", "nan",
                 *small]) == 2
    assert "missing_value must be a finite number" in capsys.readouterr().err


def test_real_weather_codes_are_found_and_the_training_std_becomes_plausible() -> None:
    path = real_data_dir() / "forecasting" / "weather" / "weather.txt"
    if not path.is_file():
        pytest.skip(f"{path} is not in SBTS_DATA_DIR")
    raw = read_table(path).values
    with pytest.warns(MissingValueWarning) as record:
        data = load_forecasting("weather", data_dir=real_data_dir())
    counts = {int(str(w.message).split(": column ")[1].split(":")[0]): int(str(w.message).split(" in ")[1].split()[0])
              for w in record}
    assert counts == {12: 1, 19: 30, 21: 50} and sum(counts.values()) == 81 == int((raw == -9999).sum())
    assert not (data.values == -9999).any()
    train = split_bounds(data).train_end
    for column in (11, 20):  # wind speed (m/s) and CO2 (ppm): the two channels the codes blew up
        raw_std, std = raw[:train, column].std(), data.values[:train, column].std()
        clean = raw[:train, column][raw[:train, column] != -9999]
        assert std < raw_std / 20
        assert std == pytest.approx(clean.std(), rel=0.01)  # what the measured values alone give


# --------------------------------------------------------------------------------------------------
# Input size limit
# --------------------------------------------------------------------------------------------------


def test_a_sparse_2_gib_file_is_refused_by_its_size_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    with path.open("wb") as f:
        f.truncate(2 * 1024**3)  # sparse: costs no disk
    expected = (f"{path}: file is 2147483648 bytes (2.0 GiB), over the input limit of 1073741824 bytes (1.0 GiB); "
                f"raise the limit with SBTS_MAX_INPUT_BYTES or max_input_bytes=")
    start = time.perf_counter()
    for load in (lambda: load_forecasting(str(path)), lambda: load_anomaly(f"{path},{path}"),
                 lambda: read_ts(path)):
        with pytest.raises(DataError) as info:
            load()
        assert str(info.value) == expected
    assert time.perf_counter() - start < 1.0
    assert DEFAULT_MAX_INPUT_BYTES == 1024**3


def test_the_limit_from_the_argument_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_series(tmp_path)
    size = path.stat().st_size
    with pytest.raises(DataError, match=f"file is {size} bytes, over the input limit of 10 bytes"):
        load_forecasting(str(path), max_input_bytes=10)
    monkeypatch.setenv(MAX_INPUT_BYTES_ENV, "10")
    with pytest.raises(DataError, match="over the input limit of 10 bytes"):
        load_forecasting(str(path))
    with pytest.warns(MissingValueWarning):
        assert load_forecasting(str(path), max_input_bytes=size).n_steps == 6  # the argument wins
    monkeypatch.setenv(MAX_INPUT_BYTES_ENV, "1e9")
    with pytest.raises(ConfigError, match="SBTS_MAX_INPUT_BYTES='1e9' is not a positive whole number of bytes"):
        load_forecasting(str(path))
    with pytest.raises(ConfigError, match="max_input_bytes must be a positive whole number"):
        load_forecasting(str(path), max_input_bytes=0)


def gzip_bomb(path: Path, member_bytes: int, members: int) -> Path:
    """A gzip file of ``members`` copies of one member holding ``member_bytes`` zeros (gzip allows many)."""
    member = gzip.compress(bytes(member_bytes), compresslevel=9)
    with path.open("wb") as f:
        for _ in range(members):
            f.write(member)
    return path


def test_an_18_mb_gzip_bomb_is_refused_without_growing_memory(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = gzip_bomb(tmp_path / "bomb.csv.gz", 16 * MIB, 1150)  # about 18 MB on disk, 18 GiB inside
    assert 17 * MIB < bomb.stat().st_size < 19 * MIB
    limit = 24 * MIB  # above the file's own size, so only the decompression can pass it
    monkeypatch.setenv(MAX_INPUT_BYTES_ENV, str(limit))
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as info:
            load_forecasting(str(bomb))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(info.value) == (f"{bomb}: decompresses to more than 25165824 bytes (24.0 MiB), over the input limit "
                               f"of 25165824 bytes (24.0 MiB); raise the limit with SBTS_MAX_INPUT_BYTES or "
                               f"max_input_bytes=")
    assert peak < bomb.stat().st_size + 2 * limit  # the file, and at most the limit (plus a chunk) of output


def test_a_ts_gzip_bomb_of_one_endless_line_is_refused(tmp_path: Path) -> None:
    bomb = gzip_bomb(tmp_path / "Bomb_TRAIN.ts.gz", 8 * MIB, 4)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="decompresses to more than 1048576 bytes"):
            read_ts(bomb, max_input_bytes=MIB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MIB


def test_a_zip_member_past_the_limit_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "Toy.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Toy_TRAIN.ts", bytes(4 * MIB))
        zf.writestr("Toy_TEST.ts", b"@data\n")
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(DataError) as info:
        uea._extract_splits(archive, "Toy", "file:///Toy.zip", target, MIB)
    assert str(info.value).startswith("file:///Toy.zip: Toy_TRAIN.ts: holds more than 1048576 bytes (1.0 MiB), over "
                                      "the input limit")
    assert list(target.iterdir()) == []  # nothing half-written is left


def test_a_gzip_file_within_the_limit_reads_whole(tmp_path: Path) -> None:
    text = rows_text([[float(i), float(i % 7)] for i in range(20_000)], header="x,y")
    path = tmp_path / "many_members.csv.gz"
    half = len(text) // 2 + text[len(text) // 2:].index("\n") + 1
    path.write_bytes(gzip.compress(text[:half].encode()) + gzip.compress(text[half:].encode()))  # two members
    values = load_forecasting(str(path), max_input_bytes=len(text)).values
    np.testing.assert_array_equal(values, np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1))
    with pytest.raises(DataError, match=f"decompresses to more than {len(text) - 1} bytes"):
        load_forecasting(str(path), max_input_bytes=len(text) - 1)
