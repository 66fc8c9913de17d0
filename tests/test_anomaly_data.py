"""Anomaly-detection data loading: user files of every form, every bad input, and the real SMD/ASD/SMAP/MSL data."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import real_data_dir

from sbts.data.anomaly import AnomalyData, available_anomaly_datasets, canonical_anomaly_spec, load_anomaly
from sbts.data.locations import DATA_DIR_HINT
from sbts.data.uea import sha256_file
from sbts.errors import DataError

TRAIN = np.array([[0.5, -1.0, 2.0], [1.5, 3.25, -0.125], [2.0, 0.0, 1e-3], [3.0, 4.0, 5.0]])
TEST = np.array([[1.0, 2.0, 3.0], [-4.5, 5.0, 6.0], [7.0, 8.0, 9.5]])
LABELS = np.array([0, 1, 1], dtype=np.int8)


def write(path: Path, text: str | bytes, gz: bool = False) -> Path:
    data = text.encode() if isinstance(text, str) else text
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def as_text(values: np.ndarray, sep: str = ",", header: list[str] | None = None) -> str:
    lines = [sep.join(header)] if header else []
    lines += [sep.join(repr(float(v)) if values.ndim > 1 else str(v) for v in np.atleast_1d(row)) for row in values]
    return "\n".join(lines) + "\n"


def as_npy(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, values)
    return buffer.getvalue()


def write_split(folder: Path, fmt: str, gz: bool, labels_stem: str | None = "test_label") -> Path:
    """train/test(/labels) in ``folder`` in one of the supported user formats."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = {"csv": ".csv", "csv-header": ".csv", "txt": ".txt", "npy": ".npy"}[fmt] + (".gz" if gz else "")
    roles = [("train", TRAIN), ("test", TEST)] + ([(labels_stem, LABELS)] if labels_stem else [])
    for stem, values in roles:
        if fmt == "npy":
            content: str | bytes = as_npy(values)
        elif fmt == "txt":
            content = as_text(values, sep=" \t ")
        else:
            header = (["label"] if values.ndim == 1 else ["a", "b", "c"]) if fmt == "csv-header" else None
            content = as_text(values, header=header)
        write(folder / f"{stem}{suffix}", content, gz)
    return folder


def load_error(spec: str, **kwargs: object) -> str:
    with pytest.raises(DataError) as info:
        load_anomaly(spec, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------------
# User files: every spec form
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("fmt", ["csv", "csv-header", "txt", "npy"])
def test_folder_spec_in_every_format(tmp_path: Path, fmt: str, gz: bool) -> None:
    folder = write_split(tmp_path / "data", fmt, gz)
    data = load_anomaly(str(folder))
    assert isinstance(data, AnomalyData)
    np.testing.assert_array_equal(data.train, TRAIN)
    np.testing.assert_array_equal(data.test, TEST)
    np.testing.assert_array_equal(data.labels, LABELS)
    assert data.train.dtype == np.float64 and data.labels.dtype == np.int8
    assert data.n_channels == 3 and data.channels is None
    assert data.name == str(folder.resolve())
    assert set(data.files) == {"train", "test", "labels"}
    for record in data.files.values():
        assert Path(record["path"]).is_absolute() and record["path"].startswith(str(folder.resolve()))
        assert record["sha256"] == sha256_file(Path(record["path"]))


@pytest.mark.parametrize("labels_name", ["labels.txt", "labels.npy.gz", None])
def test_comma_list_spec(tmp_path: Path, labels_name: str | None) -> None:
    train = write(tmp_path / "a.csv", as_text(TRAIN))
    test = write(tmp_path / "b.txt.gz", as_text(TEST, sep=" "), gz=True)
    spec = f"{train}, {test}"
    if labels_name:
        labels = write(tmp_path / labels_name, as_npy(LABELS) if ".npy" in labels_name else as_text(LABELS),
                       gz=labels_name.endswith(".gz"))
        spec += f",{labels}"
    data = load_anomaly(spec)
    np.testing.assert_array_equal(data.test, TEST)
    assert data.name == canonical_anomaly_spec(spec) == spec.replace(" ", "")
    if labels_name:
        np.testing.assert_array_equal(data.labels, LABELS)
    else:
        assert data.labels is None and set(data.files) == {"train", "test"}


def test_folder_without_labels_and_labels_named_labels(tmp_path: Path) -> None:
    assert load_anomaly(str(write_split(tmp_path / "none", "csv", False, labels_stem=None))).labels is None
    data = load_anomaly(str(write_split(tmp_path / "named", "csv", False, labels_stem="labels")))
    np.testing.assert_array_equal(data.labels, LABELS)


def test_gzip_detected_by_magic_bytes_and_npy_by_content(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", as_text(TRAIN), gz=True)  # gzipped, no .gz suffix
    test = write(tmp_path / "test.dat", as_npy(TEST))  # a .npy under another name
    data = load_anomaly(f"{train},{test}")
    np.testing.assert_array_equal(data.train, TRAIN)
    np.testing.assert_array_equal(data.test, TEST)


def test_text_variants(tmp_path: Path) -> None:
    """CRLF, a BOM, blank lines, spaces around commas, 1-D npy, and a one-column header."""
    write(tmp_path / "train.csv", "\ufeffx,y\r\n1, 2\r\n\r\n  \r\n3 ,4\r\n")
    write(tmp_path / "test.npy", as_npy(np.array([[5, 6], [7, 8]], dtype=np.int32)))
    write(tmp_path / "test_label.csv", "anomaly\n0\n1.0\n")
    data = load_anomaly(str(tmp_path))
    np.testing.assert_array_equal(data.train, [[1, 2], [3, 4]])
    assert data.test.dtype == np.float64 and data.labels.tolist() == [0, 1]
    write(tmp_path / "one.npy", as_npy(np.arange(4.0)))
    write(tmp_path / "two.txt", "7\n8\n")
    assert load_anomaly(f"{tmp_path / 'one.npy'},{tmp_path / 'two.txt'}").train.shape == (4, 1)


def test_canonical_spec() -> None:
    assert canonical_anomaly_spec("smd/Machine-1-6") == "SMD/machine-1-6"
    assert canonical_anomaly_spec(" asd/OMI-1 ") == "ASD/omi-1"
    assert canonical_anomaly_spec("smap") == "SMAP"
    assert canonical_anomaly_spec("Msl/t-10") == "MSL/T-10"
    assert canonical_anomaly_spec("./SMAP") == str(Path("SMAP").resolve())
    assert canonical_anomaly_spec("x.csv,y.csv") == f"{Path('x.csv').resolve()},{Path('y.csv').resolve()}"
    with pytest.raises(DataError, match="name one SMD machine"):
        canonical_anomaly_spec("SMD")
    with pytest.raises(DataError, match="empty dataset spec"):
        canonical_anomaly_spec("  ")


# ---------------------------------------------------------------------------------------------------
# User files: bad input
# ---------------------------------------------------------------------------------------------------


def bad_train(tmp_path: Path, name: str, content: str | bytes, gz: bool = False) -> tuple[Path, str]:
    """A split whose train file is ``content``; returns the train path and the spec."""
    path = write(tmp_path / name, content, gz)
    test = write(tmp_path / "good_test.csv", as_text(TEST))
    return path, f"{path},{test}"


@pytest.mark.parametrize("content,expected", [
    ("1,2,3\n4,5,6\n7,8\n", r":3: expected 3 columns \(as on line 1\), found 2"),
    ("a,b,c\n1,2,3\n4,5\n", r":3: expected 3 columns \(as in the header on line 1\), found 2"),
    ("a,b\n1,2,3\n", r":2: expected 2 columns \(as in the header on line 1\), found 3"),
    ("1,2,3\n\n4,abc,6\n", r":3: column 2: not a number: 'abc'"),
    ("1,2,3\n4,,6\n", r":2: column 2: empty value"),
    ("1,2,3\n4,5,1_0\n", r":2: column 3: not a number: '1_0'"),
    ("1,2,3\n4,5," + "x" * 100 + "\n", r":2: column 3: not a number: 'x{30}\.\.\.'"),
    ("1 2 3\n4 5 6\n7 8 nan\n", r":3: column 3: value 'nan' is not finite"),
    ("1,2,3\n-inf,5,6\n", r":2: column 1: value '-inf' is not finite"),
    ("1,2,3\n4,nan,x\n", r":2: column 2: value 'nan' is not finite"),
    ("", r": empty file"),
    ("\n  \n", r": empty file"),
    ("a,b,c\n", r": no data rows after the header line"),
    (b"1,2,3\n\xff\xfe,1,2\n", r": not a UTF-8 text file"),
])
def test_bad_text_names_file_line_and_column(tmp_path: Path, content: str | bytes, expected: str) -> None:
    path, spec = bad_train(tmp_path, "train.csv", content)
    assert re.search(re.escape(str(path)) + expected, load_error(spec))


def test_bad_text_inside_gzip_names_the_gz_file(tmp_path: Path) -> None:
    path, spec = bad_train(tmp_path, "train.csv.gz", "1,2,3\n4,5,?\n", gz=True)
    assert f"{path}:2: column 3: not a number: '?'" in load_error(spec)


@pytest.mark.parametrize("array,expected", [
    (np.zeros((2, 3, 1)), r": array has shape \(2, 3, 1\); expected \(T, D\) or \(T,\)"),
    (np.array([[1.0, "x"]], dtype=object), r": not a readable \.npy array: Object arrays cannot be loaded"),
    (np.array(["a", "b"]), r": array dtype <U1 is not numeric"),
    (np.zeros((0, 3)), r": empty array"),
    (np.array(2.0), r": array has shape \(\); expected"),
    (np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, np.inf, 9.0]]), r": row 2, column 1 \(0-based\): value inf "),
])
def test_bad_npy(tmp_path: Path, array: np.ndarray, expected: str) -> None:
    path, spec = bad_train(tmp_path, "train.npy", as_npy(array))
    assert re.search(re.escape(str(path)) + expected, load_error(spec))


def test_truncated_npy_and_npy_suffix_on_text(tmp_path: Path) -> None:
    path, spec = bad_train(tmp_path, "train.npy", as_npy(TRAIN)[:-7])
    assert f"{path}: not a readable .npy array: EOF" in load_error(spec)
    path, spec = bad_train(tmp_path, "train.npy", "1,2,3\n")
    assert f"{path}: not a readable .npy array" in load_error(spec)


def test_corrupted_gzip(tmp_path: Path) -> None:
    path, spec = bad_train(tmp_path, "train.csv.gz", gzip.compress(as_text(TRAIN).encode())[:-10])
    assert f"{path}: corrupted gzip file" in load_error(spec)
    path, spec = bad_train(tmp_path, "train.txt.gz", "1,2,3\n")  # .gz suffix, not gzip
    assert f"{path}: corrupted gzip file" in load_error(spec)


def test_missing_and_ambiguous_files(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", as_text(TRAIN))
    assert f"{tmp_path / 'nope.csv'}: file not found" in load_error(f"{train},{tmp_path / 'nope.csv'}")
    assert "expected 'TRAIN,TEST' or 'TRAIN,TEST,LABELS'" in load_error(f"{train},{train},{train},{train}")
    assert "expected 'TRAIN,TEST'" in load_error(f"{train},")
    assert f"{tmp_path}: no test file (expected test.csv, .txt or .npy" in load_error(str(tmp_path))
    write(tmp_path / "test.csv", as_text(TEST))
    write(tmp_path / "test.npy.gz", as_npy(TEST), gz=True)
    assert "ambiguous, found test.csv, test.npy.gz" in load_error(str(tmp_path))
    assert f"{train}: is a file" in load_error(str(train))
    assert load_error("nothing/here") == "no such file or directory: nothing/here"
    assert load_error("./SMAP") == "no such file or directory: ./SMAP"
    assert load_error("nothing").startswith("'nothing': no such file or folder and not a dataset; expected one of: "
                                            "SMD/<machine>")
    assert f"{tmp_path}: is a folder, expected a file" in load_error(f"{tmp_path},{train}")


def test_mismatched_columns_and_labels(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", as_text(TRAIN))
    test = write(tmp_path / "test.csv", as_text(TEST[:, :2]))
    assert f"{train} has 3 columns but {test} has 2; train and test must match" in load_error(f"{train},{test}")
    test = write(tmp_path / "test.csv", as_text(TEST))
    cases = [
        ("short.txt", "0\n1\n", r"short\.txt: 2 labels but the test series .*test\.csv has 3 rows"),
        ("two.txt", "0\n2\n1\n", r"two\.txt:2: column 1: label 2 is not 0 or 1"),
        ("half.csv", "label\n0\n\n0.5\n1\n", r"half\.csv:4: column 1: label 0\.5 is not 0 or 1"),
        ("wide.csv", "0,1\n1,0\n0,0\n", r"wide\.csv: expected one label per row \(one column\), found 2 columns"),
    ]
    for name, content, expected in cases:
        labels = write(tmp_path / name, content)
        assert re.search(expected, load_error(f"{train},{test},{labels}")), name
    labels = write(tmp_path / "neg.npy", as_npy(np.array([0, -1, 1])))
    assert f"{labels}: row 1, column 0 (0-based): label -1 is not 0 or 1" in load_error(f"{train},{test},{labels}")


# ---------------------------------------------------------------------------------------------------
# Named datasets on small synthetic copies of the archive layouts
# ---------------------------------------------------------------------------------------------------


def make_entity_archive(root: Path, entities: list[str], gz: bool = True) -> Path:
    base = root / "anomaly" / "SMD" / "ServerMachineDataset"
    for role in ("train", "test", "test_label"):
        (base / role).mkdir(parents=True)
    for entity in entities:
        suffix = ".txt.gz" if gz else ".txt"
        write(base / "train" / f"{entity}{suffix}", as_text(TRAIN), gz)
        write(base / "test" / f"{entity}{suffix}", as_text(TEST), gz)
        write(base / "test_label" / f"{entity}{suffix}", as_text(LABELS), gz)
    return base


def test_entity_archive_and_unknown_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_entity_archive(tmp_path, ["machine-1-1", "machine-1-10", "machine-1-2"])
    data = load_anomaly("smd/machine-1-2", data_dir=tmp_path)
    assert data.name == "SMD/machine-1-2" and data.labels.tolist() == LABELS.tolist()
    message = load_error("SMD/machine-9-9", data_dir=tmp_path)
    assert "unknown SMD machine 'machine-9-9'" in message
    assert "available: machine-1-1, machine-1-2, machine-1-10" in message
    (tmp_path / "anomaly/SMD/ServerMachineDataset/test_label/machine-1-10.txt.gz").unlink()
    message = load_error("SMD/machine-1-10", data_dir=tmp_path)
    assert message.endswith("test_label/machine-1-10.txt[.gz]: file not found")
    asd = tmp_path / "anomaly" / "ASD"
    assert load_error("ASD/omi-1", data_dir=tmp_path) == (f"{asd}: folder not found; ASD is not under the data dir "
                                                          f"{tmp_path} ({DATA_DIR_HINT} to use another)")
    monkeypatch.delenv("SBTS_DATA_DIR", raising=False)
    assert load_error("SMD/machine-1-1") == ("dataset 'SMD/machine-1-1': no data dir; set SBTS_DATA_DIR or pass "
                                             "--data-dir (data_dir= in Python)")
    assert "data dir not found" in load_error("SMD/machine-1-1", data_dir=tmp_path / "missing")
    monkeypatch.setenv("SBTS_DATA_DIR", str(tmp_path / "typo"))
    assert load_error("SMD/machine-1-1") == (f"{tmp_path / 'typo'}: data dir not found (from SBTS_DATA_DIR or "
                                             f"--data-dir)")
    assert available_anomaly_datasets() == []
    monkeypatch.setenv("SBTS_DATA_DIR", str(tmp_path))
    assert available_anomaly_datasets() == ["SMD/machine-1-1", "SMD/machine-1-2"]  # 1-10 has no labels now


NASA_ROWS = [  # chan_id, spacecraft, anomaly_sequences, num_values; T-10 (MSL) has data but no row
    ("B-1", "SMAP", "[[1, 2]]", 6),
    ("A-1", "SMAP", "[[0, 0], [4, 5]]", 6),
    ("P-2", "SMAP", "[[1, 1]]", 6),
    ("C-1", "MSL", "[]", 6),
    ("P-2", "SMAP", "[[3, 3]]", 6),
]


def make_nasa(root: Path, rows: list[tuple[str, str, str, int]] = NASA_ROWS) -> Path:
    base = root / "anomaly" / "SMAP_MSL"
    for role in ("train", "test"):
        (base / role).mkdir(parents=True)
    width = {"SMAP": 25, "MSL": 55}
    channels = {chan: width[sc] for chan, sc, _, _ in rows} | {"T-10": 55}
    for i, (chan, cols) in enumerate(sorted(channels.items())):
        write(base / "train" / f"{chan}.npy.gz", as_npy(np.full((4 + i, cols), float(i))), gz=True)
        write(base / "test" / f"{chan}.npy", as_npy(np.full((6, cols), float(i))))
    with (base / "labeled_anomalies.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["chan_id", "spacecraft", "anomaly_sequences", "class", "num_values"])
        for chan, sc, sequences, n in rows:
            writer.writerow([chan, sc, sequences, "[point]", n])
    return base


def test_nasa_pooled_leaves_out_duplicated_and_unlabelled_channels(tmp_path: Path) -> None:
    base = make_nasa(tmp_path)
    smap = load_anomaly("SMAP", data_dir=tmp_path)
    assert smap.channels == ["A-1", "B-1"] and smap.train.shape == (4 + 5, 25) and smap.test.shape == (12, 25)
    assert smap.labels.tolist() == [1, 0, 0, 0, 1, 1] + [0, 1, 1, 0, 0, 0]
    assert smap.train[:4].max() == 0.0 and smap.train[4:].min() == 1.0  # A-1 then B-1
    msl = load_anomaly("msl", data_dir=tmp_path)
    assert msl.channels == ["C-1"] and msl.test.shape == (6, 55) and msl.labels.sum() == 0
    listing = "".join(f"{sha256_file(base / 'train' / f'{c}.npy.gz')}  {c}.npy.gz\n" for c in smap.channels)
    assert smap.files["train"] == {"path": str((base / "train").resolve()),
                                   "sha256": hashlib.sha256(listing.encode()).hexdigest()}
    assert smap.files["labels"]["sha256"] == sha256_file(base / "labeled_anomalies.csv")


def test_nasa_channels(tmp_path: Path) -> None:
    make_nasa(tmp_path)
    data = load_anomaly("SMAP/a-1", data_dir=tmp_path)
    assert data.name == "SMAP/A-1" and data.labels.tolist() == [1, 0, 0, 0, 1, 1] and data.channels is None
    with pytest.warns(UserWarning, match="MSL channel T-10 has data but no row in .*: loaded without labels"):
        unlabelled = load_anomaly("MSL/T-10", data_dir=tmp_path)
    assert unlabelled.labels is None and set(unlabelled.files) == {"train", "test"}
    with pytest.warns(UserWarning, match=r"listed 2 times .*\(lines 4, 6\): labelled with the union"):
        assert load_anomaly("SMAP/P-2", data_dir=tmp_path).labels.tolist() == [0, 1, 0, 1, 0, 0]
    assert "channel C-1 belongs to MSL, not SMAP (per " in load_error("SMAP/C-1", data_dir=tmp_path)
    assert "use MSL/C-1" in load_error("SMAP/C-1", data_dir=tmp_path)
    assert "no row in" in load_error("SMAP/T-10", data_dir=tmp_path)
    assert "55 columns, but SMAP channels have 25" in load_error("SMAP/T-10", data_dir=tmp_path)
    assert "unknown MSL channel 'Z-9'" in load_error("MSL/Z-9", data_dir=tmp_path)
    assert available_anomaly_datasets(tmp_path) == [
        "SMAP", "SMAP/A-1", "SMAP/B-1", "SMAP/P-2", "MSL", "MSL/C-1", "MSL/T-10"]


@pytest.mark.parametrize("row,expected", [
    (("A-1", "SMAP", "[[4, 6]]", 6), r"csv:2: anomaly range \[4, 6\] of A-1 lies outside its 6 test rows"),
    (("A-1", "SMAP", "[[1, 2]]", 7), r"csv:2: num_values 7 for A-1, but .*A-1\.npy has 6 rows"),
    (("A-1", "SMAP", "[[2, 1]]", 6), r"csv:2: anomaly_sequences '\[\[2, 1\]\]' is not a list of \[start, end\]"),
    (("A-1", "SMAP", "[[1, 2]", 6), r"csv:2: anomaly_sequences .* is not a list"),
    (("A-1", "MARS", "[]", 6), r"csv:2: unknown spacecraft 'MARS'"),
    (("A-1", "SMAP", "[]", "six"), r"csv:2: num_values 'six' is not a row count"),
])
def test_nasa_bad_label_rows_name_the_csv_line(tmp_path: Path, row: tuple, expected: str) -> None:
    make_nasa(tmp_path, [("A-1", "SMAP", "[]", 6)])
    write(tmp_path / "anomaly" / "SMAP_MSL" / "labeled_anomalies.csv",
          "chan_id,spacecraft,anomaly_sequences,class,num_values\n" + ",".join(
              f'"{v}"' if "," in str(v) else str(v) for v in (*row[:3], "[point]", row[3])) + "\n")
    assert re.search(expected, load_error("SMAP/A-1", data_dir=tmp_path))


# ---------------------------------------------------------------------------------------------------
# Real data (needs SBTS_DATA_DIR)
# ---------------------------------------------------------------------------------------------------


def csv_rows(root: Path) -> list[dict[str, str]]:
    with (root / "anomaly" / "SMAP_MSL" / "labeled_anomalies.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def labels_from_csv(rows: list[dict[str, str]], channels: list[str]) -> np.ndarray:
    """Labels built independently: inclusive [start, end] ranges of each channel's single csv row."""
    parts = []
    for chan in channels:
        (row,) = [r for r in rows if r["chan_id"] == chan]
        labels = np.zeros(int(row["num_values"]), dtype=np.int8)
        for start, end in json.loads(row["anomaly_sequences"]):
            labels[start:end + 1] = 1
        parts.append(labels)
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def pooled_smap() -> AnomalyData:
    return load_anomaly("SMAP", data_dir=real_data_dir())


@pytest.mark.data
def test_real_smd_and_asd() -> None:
    root = real_data_dir()
    smd = load_anomaly("SMD/machine-1-6", data_dir=root)
    assert (smd.train.shape, smd.test.shape, int(smd.labels.sum())) == ((23688, 38), (23689, 38), 3708)
    asd = load_anomaly("asd/omi-1", data_dir=root)
    assert (asd.train.shape, asd.test.shape, int(asd.labels.sum())) == ((8640, 19), (4320, 19), 441)
    assert asd.files["labels"]["sha256"] == sha256_file(Path(asd.files["labels"]["path"]))


@pytest.mark.data
def test_real_pooled_smap(pooled_smap: AnomalyData) -> None:
    assert pooled_smap.train.shape == (135_183, 25) and pooled_smap.test.shape == (427_617, 25)
    assert len(pooled_smap.channels) == 53 and "P-2" not in pooled_smap.channels
    assert pooled_smap.channels == sorted(pooled_smap.channels)
    assert len(pooled_smap.train_lengths) == 53 and sum(pooled_smap.train_lengths) == 135_183
    first = load_anomaly(f"SMAP/{pooled_smap.channels[0]}", data_dir=real_data_dir())
    assert pooled_smap.train_lengths[0] == len(first.train)
    np.testing.assert_array_equal(pooled_smap.train[:len(first.train)], first.train)
    np.testing.assert_array_equal(pooled_smap.labels, labels_from_csv(csv_rows(real_data_dir()), pooled_smap.channels))


@pytest.mark.data
def test_real_pooled_msl_and_t10(tmp_path: Path) -> None:
    """The pooled MSL counts are those of the 27 labelled channels: T-10 is not part of them (this copy of the
    data does not even hold its files). A copy with a T-10 added still pools to the same rows."""
    root = real_data_dir()
    msl = load_anomaly("MSL", data_dir=root)
    assert msl.train.shape == (58_317, 55) and msl.test.shape == (73_729, 55) and len(msl.channels) == 27
    rows = csv_rows(root)
    assert sorted(r["chan_id"] for r in rows if r["spacecraft"] == "MSL") == msl.channels
    np.testing.assert_array_equal(msl.labels, labels_from_csv(rows, msl.channels))
    source = root / "anomaly" / "SMAP_MSL"
    copy = tmp_path / "anomaly" / "SMAP_MSL"
    for role in ("train", "test"):
        (copy / role).mkdir(parents=True)
        for chan in msl.channels:
            (copy / role / f"{chan}.npy.gz").symlink_to(source / role / f"{chan}.npy.gz")
        write(copy / role / "T-10.npy", as_npy(np.zeros((100, 55))))
    (copy / "labeled_anomalies.csv").symlink_to(source / "labeled_anomalies.csv")
    again = load_anomaly("MSL", data_dir=tmp_path)
    assert again.train.shape == msl.train.shape and again.test.shape == msl.test.shape
    assert again.files["train"]["sha256"] == msl.files["train"]["sha256"]
    with pytest.warns(UserWarning, match="T-10 has data but no row"):
        assert load_anomaly("MSL/T-10", data_dir=tmp_path).labels is None


@pytest.mark.data
def test_real_channel_labels_match_csv_ranges() -> None:
    root = real_data_dir()
    data = load_anomaly("smap/p-1", data_dir=root)
    assert data.test.shape == (8505, 25)
    ranges = [[2149, 2349], [4536, 4844], [3539, 3779]]
    assert next(r for r in csv_rows(root) if r["chan_id"] == "P-1")["anomaly_sequences"] == json.dumps(ranges)
    for start, end in ranges:
        assert data.labels[start] == data.labels[end] == 1 and data.labels[start - 1] == data.labels[end + 1] == 0
    assert int(data.labels.sum()) == sum(end - start + 1 for start, end in ranges)


@pytest.mark.data
def test_real_plain_and_gzipped_copies_load_identically(tmp_path: Path) -> None:
    root = real_data_dir()
    source = root / "anomaly" / "SMD" / "ServerMachineDataset"
    copy = tmp_path / "anomaly" / "SMD" / "ServerMachineDataset"
    for role in ("train", "test", "test_label"):
        (copy / role).mkdir(parents=True)
        shutil.copy(source / role / "machine-2-1.txt.gz", copy / role)
    train_gz = copy / "train" / "machine-2-1.txt.gz"
    (copy / "train" / "machine-2-1.txt").write_bytes(gzip.decompress(train_gz.read_bytes()))
    train_gz.unlink()
    original, plain = load_anomaly("SMD/machine-2-1", data_dir=root), load_anomaly("SMD/machine-2-1", data_dir=tmp_path)
    for field in ("train", "test", "labels"):
        np.testing.assert_array_equal(getattr(plain, field), getattr(original, field))
    assert plain.files["test"]["sha256"] == original.files["test"]["sha256"]
    assert plain.files["train"]["path"].endswith("machine-2-1.txt")


@pytest.mark.data
def test_real_available_datasets() -> None:
    root = real_data_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        names = available_anomaly_datasets(root)
    smd = sorted(p.name.removesuffix(".txt.gz") for p in (root / "anomaly/SMD/ServerMachineDataset/train").iterdir())
    assert [n for n in names if n.startswith("SMD/")] == [f"SMD/{m}" for m in smd] and len(smd) == 8
    assert [n for n in names if n.startswith("ASD/")] == [f"ASD/omi-{i}" for i in range(1, 13)]
    assert {"SMAP", "MSL", "SMAP/P-1", "SMAP/P-2", "MSL/C-1"} <= set(names)
    assert sum(n.startswith("SMAP/") for n in names) == 54 and sum(n.startswith("MSL/") for n in names) == 27
