"""Tests for the .ts reader: small hand-written files, every error case, and the real UEA files."""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import numpy as np
import pytest

from sbts.data.ts_format import TSData, read_ts
from sbts.errors import DataError

HEADER = """\
# A comment line
@problemName Toy
@timeStamps false
@missing true
@univariate false
@dimensions 2
@equalLength false
@classLabel true a b
@data
"""


def write(tmp_path: Path, text: str, name: str = "Toy_TRAIN.ts") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def assert_data_error(path: Path, line: int | None, *fragments: str) -> str:
    """read_ts(path) raises a one-line DataError naming the file (and ``line``) and the fragments."""
    with pytest.raises(DataError) as info:
        read_ts(path)
    msg = str(info.value)
    assert "\n" not in msg and "\r" not in msg, msg
    assert str(path) in msg, msg
    if line is not None:
        assert f"{path}:{line}:" in msg, msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


# ---------------------------------------------------------------------------------------------------
# Valid files
# ---------------------------------------------------------------------------------------------------


def test_equal_length(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "1,2,3:4,5,6:a\n7,8,9:10,11,12:b\n")
    data = read_ts(path)
    assert isinstance(data, TSData)
    assert data.n_channels == 2 and data.problem_name == "Toy" and data.path == path
    assert data.class_labels == ["a", "b"]
    assert list(data.labels) == ["a", "b"]
    assert data.labels.dtype.kind in "OU"
    assert data.lengths.tolist() == [3, 3]
    assert data.series[0].dtype == np.float64
    np.testing.assert_array_equal(data.series[1], [[7, 8, 9], [10, 11, 12]])


def test_unequal_lengths_across_cases_and_dimensions(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "1,2:3,4:a\n1,2,3,4:5:b\n")
    data = read_ts(path)
    assert data.lengths.tolist() == [2, 4]
    np.testing.assert_array_equal(data.series[0], [[1, 2], [3, 4]])
    # The shorter dimension is padded at the end with NaN to the case's longest dimension.
    np.testing.assert_array_equal(data.series[1], [[1, 2, 3, 4], [5, np.nan, np.nan, np.nan]])


def test_missing_values(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "1,?,3:NaN,5,nan:a\n?,2:3, ? :b\n")
    data = read_ts(path)
    np.testing.assert_array_equal(data.series[0], [[1, np.nan, 3], [np.nan, 5, np.nan]])
    np.testing.assert_array_equal(data.series[1], [[np.nan, 2], [3, np.nan]])


def test_infinity_is_accepted_by_the_reader(tmp_path: Path) -> None:
    data = read_ts(write(tmp_path, HEADER + "1,inf:-Infinity,2:a\n"))
    assert np.isposinf(data.series[0][0, 1]) and np.isneginf(data.series[0][1, 0])


def test_gzip_by_suffix_and_by_magic(tmp_path: Path) -> None:
    text = HEADER + "1,2:3,4:a\n5,6:7,8:b\n"
    gz = tmp_path / "Toy_TRAIN.ts.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    disguised = tmp_path / "Disguised_TRAIN.ts"  # gzip content without the .gz suffix
    disguised.write_bytes(gzip.compress(text.encode()))
    for path in (gz, disguised):
        data = read_ts(path)
        assert len(data.series) == 2
        np.testing.assert_array_equal(data.series[1], [[5, 6], [7, 8]])


def test_crlf_blank_lines_comments_and_bom(tmp_path: Path) -> None:
    text = "\ufeff" + HEADER.replace("@data", "\n@data\n# comment after data") + "1,2:3,4:a\n\n   \n5,6:7,8:b\n"
    path = write(tmp_path, text.replace("\n", "\r\n"))
    data = read_ts(path)
    assert data.labels.tolist() == ["a", "b"]
    np.testing.assert_array_equal(data.series[1], [[5, 6], [7, 8]])


def test_case_insensitive_headers(tmp_path: Path) -> None:
    text = "@PROBLEMNAME Toy\n@timestamps false\n@Dimensions 2\n@CLASSLABEL TRUE x y\n@DATA\n1,2:3,4:x\n"
    data = read_ts(write(tmp_path, text))
    assert data.problem_name == "Toy" and data.class_labels == ["x", "y"] and data.n_channels == 2


def test_header_without_classlabel_takes_last_field_as_label(tmp_path: Path) -> None:
    data = read_ts(write(tmp_path, "@problemName Toy\n@data\n1,2:3,4:cat\n5,6:7,8:dog\n"))
    assert data.class_labels is None
    assert data.n_channels == 2
    assert data.labels.tolist() == ["cat", "dog"]


def test_classlabel_false_means_no_labels(tmp_path: Path) -> None:
    data = read_ts(write(tmp_path, "@dimensions 2\n@classLabel false\n@data\n1,2:3,4\n5,6:7,8\n"))
    assert data.class_labels is None and data.n_channels == 2
    assert data.labels.tolist() == ["", ""]


def test_univariate_and_target_label(tmp_path: Path) -> None:
    data = read_ts(write(tmp_path, "@univariate true\n@targetLabel true\n@data\n1,2,3:0.5\n4,5:1.5\n"))
    assert data.n_channels == 1 and data.labels.tolist() == ["0.5", "1.5"]
    assert data.lengths.tolist() == [3, 2]


# ---------------------------------------------------------------------------------------------------
# Errors: one line, file and line number named
# ---------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    assert_data_error(tmp_path / "nope_TRAIN.ts", None, "not found")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert_data_error(tmp_path, None, "directory")


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # chmod 0 does not stop root (CI may run as root), so the permission error is injected.
    path = write(tmp_path, HEADER + "1:2:a\n")
    real_open = Path.open

    def denied(self: Path, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", denied)
    assert_data_error(path, None, "cannot read", "Permission denied")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "Empty_TRAIN.ts"
    path.write_bytes(b"")
    assert_data_error(path, None, "empty file")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "Bad_TRAIN.ts"
    path.write_bytes((HEADER + "1,2:3,4:a\n").encode() + b"1,2:3,4:\xff\n")
    assert_data_error(path, 11, "UTF-8")


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "Bad_TRAIN.ts.gz"
    path.write_bytes(b"this is not gzip")
    assert_data_error(path, 1, "cannot read")


def test_no_data_section(tmp_path: Path) -> None:
    assert_data_error(write(tmp_path, "@problemName Toy\n@dimensions 2\n"), 2, "no @data")


def test_data_line_before_data_section(tmp_path: Path) -> None:
    assert_data_error(write(tmp_path, "@problemName Toy\n1,2:3,4:a\n@data\n"), 2, "@data")


def test_wrong_dimension_count_vs_header(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "1,2:3,4:a\n1,2:3,4:5,6:a\n")
    assert_data_error(path, 11, "expected 2 dimensions", "found 3")


def test_wrong_dimension_count_vs_first_case(tmp_path: Path) -> None:
    path = write(tmp_path, "@classLabel true a\n@data\n1:2:3:a\n1:2:3:a\n1:2:a\n")
    assert_data_error(path, 5, "expected 3 dimensions", "first case", "found 2")


def test_non_numeric_value_names_token(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "1,2:3,4:a\n1,2:3,x7:b\n")
    assert_data_error(path, 11, "'x7'", "dimension 2", "value 2")


def test_empty_value(tmp_path: Path) -> None:
    assert_data_error(write(tmp_path, HEADER + "1,,2:3,4:a\n"), 10, "empty value")


def test_missing_class_label(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "1,2:3,4:a\n1,2:3,4\n")
    assert_data_error(path, 11, "missing class label")


def test_empty_class_label(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "1,2:3,4:a\n1,2:3,4:\n")
    assert_data_error(path, 11, "missing class label")


def test_undeclared_label(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "1,2:3,4:a\n\n1,2:3,4:zebra\n")
    assert_data_error(path, 12, "'zebra'", "declared")


def test_no_cases(tmp_path: Path) -> None:
    assert_data_error(write(tmp_path, HEADER + "\n# nothing here\n"), 11, "no cases")


def test_empty_dimension(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "1,2:3,4:a\n1,2::b\n")
    assert_data_error(path, 11, "dimension 2 is empty")
    path = write(tmp_path, HEADER + "1,2:3,4:a\n1,2: :b\n")
    assert_data_error(path, 11, "dimension 2 is empty")


def test_timestamps_rejected(tmp_path: Path) -> None:
    text = "@timeStamps true\n@classLabel true a\n@data\n(0,1),(1,2):a\n"
    assert_data_error(write(tmp_path, text), 1, "timestamp")


def test_bad_header_values(tmp_path: Path) -> None:
    assert_data_error(write(tmp_path, "@dimensions two\n@data\n1:a\n"), 1, "@dimensions")
    assert_data_error(write(tmp_path, "# c\n@classLabel maybe a b\n@data\n1:a\n"), 2, "true or false")


def test_header_after_data(tmp_path: Path) -> None:
    assert_data_error(write(tmp_path, HEADER + "1,2:3,4:a\n@dimensions 3\n"), 11, "header")


# ---------------------------------------------------------------------------------------------------
# Real data (needs SBTS_DATA_DIR)
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def uea_dir() -> Path:
    env = os.environ.get("SBTS_DATA_DIR")
    if not env:
        pytest.skip("SBTS_DATA_DIR is not set")
    path = Path(env) / "classification" / "UEA"
    if not path.is_dir():
        pytest.skip(f"{path} does not exist")
    return path


def _split_file(folder: Path, name: str, split: str) -> Path:
    for suffix in (".ts", ".ts.gz"):
        p = folder / name / f"{name}_{split}{suffix}"
        if p.exists():
            return p
    pytest.skip(f"{name} {split} not available under {folder}")


@pytest.mark.data
def test_real_japanese_vowels(uea_dir: Path) -> None:
    train = read_ts(_split_file(uea_dir, "JapaneseVowels", "TRAIN"))
    test = read_ts(_split_file(uea_dir, "JapaneseVowels", "TEST"))
    assert (len(train.series), len(test.series)) == (270, 370)
    assert train.n_channels == test.n_channels == 12
    lengths = np.concatenate([train.lengths, test.lengths])
    assert (lengths.min(), lengths.max()) == (7, 29)
    assert train.class_labels == [str(i) for i in range(1, 10)]
    assert len(set(train.labels)) == 9
    assert all(s.shape[0] == 12 for s in train.series)
    assert not any(np.isnan(s).any() for s in train.series + test.series)


@pytest.mark.data
def test_real_basic_motions(uea_dir: Path) -> None:
    train = read_ts(_split_file(uea_dir, "BasicMotions", "TRAIN"))
    test = read_ts(_split_file(uea_dir, "BasicMotions", "TEST"))
    assert (len(train.series), len(test.series)) == (40, 40)
    assert train.n_channels == 6 and set(train.lengths.tolist()) == {100}
    assert train.class_labels == ["Standing", "Running", "Walking", "Badminton"]
    assert set(test.labels) == set(train.class_labels)


@pytest.mark.data
def test_real_every_uea_file_parses(uea_dir: Path) -> None:
    files = sorted(p for p in uea_dir.rglob("*") if p.name.endswith((".ts", ".ts.gz")))
    assert files, f"no .ts files under {uea_dir}"
    start = time.perf_counter()
    for path in files:
        data = read_ts(path)
        assert len(data.series) > 0, path
        assert all(s.ndim == 2 and s.shape[0] == data.n_channels for s in data.series), path
        assert len(data.labels) == len(data.series), path
        if data.class_labels is not None:
            assert set(data.labels) <= set(data.class_labels), path
    assert time.perf_counter() - start < 30.0


def test_latin1_in_a_comment_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "Latin_TRAIN.ts"
    path.write_bytes(b"# Caf\xe9 dataset\n" + (HEADER + "1,2:3,4:a\n").encode())
    data = read_ts(path)
    assert data.n_cases == 1 and list(data.labels) == ["a"]
