"""Tests for dataset resolution: path specs, data dir, aeon copy, cache and (file://) downloads."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import re
import urllib.request
import warnings
import zipfile
from pathlib import Path

import pytest

from sbts.data import uea
from sbts.data.uea import available_uea_datasets, load_classification, resolve_classification
from sbts.errors import DataError

# Read at import time: the autouse fixture below hides the variable from every test.
_ORIGINAL_DATA_DIR = os.environ.get("SBTS_DATA_DIR")


def ts_text(n_dims: int = 2, label: str = "a") -> str:
    case = ":".join("1,2,3" for _ in range(n_dims))
    return f"@problemName Toy\n@dimensions {n_dims}\n@classLabel true a b\n@data\n{case}:{label}\n{case}:b\n"


def make_pair(folder: Path, name: str, *, train_dims: int = 2, test_dims: int = 2,
              gz: bool = False) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".ts.gz" if gz else ".ts"
    paths = []
    for split, dims in (("TRAIN", train_dims), ("TEST", test_dims)):
        p = folder / f"{name}_{split}{suffix}"
        data = ts_text(dims).encode()
        if gz:
            data = gzip.compress(data)
        p.write_bytes(data)
        paths.append(p)
    return paths[0], paths[1]


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test may see the developer's data dir, cache or download URL, nor touch the network."""
    for var in ("SBTS_DATA_DIR", "SBTS_CACHE_DIR", "SBTS_UEA_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    real_urlopen = urllib.request.urlopen

    def local_only(url: str, *args: object, **kwargs: object) -> object:
        assert str(url).startswith("file:"), f"test tried to reach {url}"
        return real_urlopen(url, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(urllib.request, "urlopen", local_only)


def no_aeon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uea, "_aeon_data_folder", lambda: None)


# ---------------------------------------------------------------------------------------------------
# Path specs
# ---------------------------------------------------------------------------------------------------


def test_directory_spec(tmp_path: Path) -> None:
    train, test = make_pair(tmp_path / "ds", "Toy")
    assert resolve_classification(str(tmp_path / "ds")) == (train, test)


def test_directory_spec_gz(tmp_path: Path) -> None:
    train, test = make_pair(tmp_path / "ds", "Toy", gz=True)
    assert resolve_classification(str(tmp_path / "ds")) == (train, test)
    tr, te = load_classification(str(tmp_path / "ds"))
    assert tr.n_channels == te.n_channels == 2


def test_directory_with_two_train_files_is_an_error(tmp_path: Path) -> None:
    make_pair(tmp_path / "ds", "Toy")
    make_pair(tmp_path / "ds", "Other")
    with pytest.raises(DataError, match="exactly one"):
        resolve_classification(str(tmp_path / "ds"))


def test_file_spec_finds_test_beside(tmp_path: Path) -> None:
    train, test = make_pair(tmp_path / "ds", "Toy")
    assert resolve_classification(str(train)) == (train, test)


def test_file_spec_without_test_is_an_error(tmp_path: Path) -> None:
    train, test = make_pair(tmp_path / "ds", "Toy")
    test.unlink()
    with pytest.raises(DataError, match="Toy_TEST.ts"):
        resolve_classification(str(train))


def test_comma_spec(tmp_path: Path) -> None:
    train, _ = make_pair(tmp_path / "a", "Toy")
    _, test = make_pair(tmp_path / "b", "Other")
    assert resolve_classification(f"{train}, {test}") == (train, test)
    with pytest.raises(DataError, match="not found"):
        resolve_classification(f"{train},{tmp_path / 'missing.ts'}")


def test_missing_ts_path_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "Nope_TRAIN.ts"
    with pytest.raises(DataError, match=f"^no such file or directory: {re.escape(str(missing))}$"):
        resolve_classification(str(missing))


@pytest.mark.parametrize("spec", ["./typo_dir", "~/typo_dir", "/no/such/dir", "data/typo", "Foo/Bar"])
def test_a_path_like_spec_that_names_nothing_is_not_an_archive_error(spec: str) -> None:
    with pytest.raises(DataError) as info:
        resolve_classification(spec, allow_download=False)
    assert str(info.value) == f"no such file or directory: {spec}"


def test_dimension_mismatch_between_train_and_test(tmp_path: Path) -> None:
    train, test = make_pair(tmp_path / "ds", "Toy", train_dims=2, test_dims=3)
    with pytest.raises(DataError) as info:
        load_classification(str(tmp_path / "ds"))
    msg = str(info.value)
    assert "\n" not in msg
    assert str(train) in msg and str(test) in msg and "2" in msg and "3" in msg


# ---------------------------------------------------------------------------------------------------
# Names: data dir, aeon, cache
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", [("classification", "UEA"), ("UEA",), ()])
def test_data_dir_layouts_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: tuple[str, ...]) -> None:
    root = tmp_path / "data"
    train, test = make_pair(root.joinpath(*layout, "Toy"), "Toy")
    monkeypatch.setenv("SBTS_DATA_DIR", str(root))
    assert resolve_classification("UEA/Toy", allow_download=False) == (train, test)
    assert resolve_classification("Toy", allow_download=False) == (train, test)
    assert available_uea_datasets() == ["Toy"]


def test_data_dir_argument_beats_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_pair(tmp_path / "env" / "UEA" / "Toy", "Toy")
    train, test = make_pair(tmp_path / "arg" / "UEA" / "Toy", "Toy")
    monkeypatch.setenv("SBTS_DATA_DIR", str(tmp_path / "env"))
    assert resolve_classification("Toy", data_dir=tmp_path / "arg", allow_download=False) == (train, test)
    assert available_uea_datasets(tmp_path / "arg") == ["Toy"]


def test_missing_explicit_data_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data dir"):
        resolve_classification("Toy", data_dir=tmp_path / "nope", allow_download=False)


def test_aeon_bundled_copy(tmp_path: Path) -> None:
    if importlib.util.find_spec("aeon") is None:
        pytest.skip("aeon is not installed")
    train, test = resolve_classification("UEA/JapaneseVowels", cache_dir=tmp_path / "cache", allow_download=False)
    assert train.name == "JapaneseVowels_TRAIN.ts" and test.name == "JapaneseVowels_TEST.ts"
    assert "aeon" in str(train)
    tr, te = load_classification("BasicMotions", cache_dir=tmp_path / "cache", allow_download=False)
    assert (len(tr.series), len(te.series), tr.n_channels) == (40, 40, 6)


def test_unknown_name_without_a_data_dir_names_both_ways_to_give_one(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        resolve_classification("NoSuchSet", cache_dir=tmp_path / "cache", allow_download=False)
    assert "no data dir (set SBTS_DATA_DIR or pass --data-dir (data_dir= in Python))" in str(info.value)


def test_data_dir_beats_aeon(tmp_path: Path) -> None:
    train, test = make_pair(tmp_path / "data" / "UEA" / "BasicMotions", "BasicMotions")
    assert resolve_classification("BasicMotions", data_dir=tmp_path / "data", allow_download=False) == (train, test)


def test_unknown_name_without_download(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        resolve_classification("NoSuchSet", data_dir=tmp_path, cache_dir=tmp_path / "cache", allow_download=False)
    msg = str(info.value)
    assert "\n" not in msg and "NoSuchSet" in msg and "looked in" in msg and str(tmp_path / "cache") in msg


def test_invalid_names(tmp_path: Path) -> None:
    for spec in ("UCR/GunPoint", "UEA/../etc"):
        with pytest.raises(DataError):
            resolve_classification(spec, cache_dir=tmp_path, allow_download=False)


# ---------------------------------------------------------------------------------------------------
# Downloads (file:// URLs only)
# ---------------------------------------------------------------------------------------------------


def make_zip(folder: Path, name: str, members: dict[str, str] | None = None) -> tuple[str, str]:
    """Write ``<folder>/<name>.zip``; return (base_url, sha256)."""
    folder.mkdir(parents=True, exist_ok=True)
    if members is None:
        members = {f"{name}/{name}_TRAIN.ts": ts_text(), f"{name}/{name}_TEST.ts": ts_text(), "README.txt": "hi"}
    path = folder / f"{name}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for member, text in members.items():
            zf.writestr(member, text)
    return folder.as_uri(), hashlib.sha256(path.read_bytes()).hexdigest()


def cache_files(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


def test_download_with_known_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_aeon(monkeypatch)
    base_url, digest = make_zip(tmp_path / "server", "Toy")
    monkeypatch.setitem(uea.KNOWN_SHA256, "Toy", digest)
    cache = tmp_path / "cache"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a verified download does not warn
        train, test = resolve_classification("UEA/Toy", cache_dir=cache, base_url=base_url)
    assert (train, test) == (cache / "UEA" / "Toy" / "Toy_TRAIN.ts", cache / "UEA" / "Toy" / "Toy_TEST.ts")
    assert cache_files(cache) == ["UEA/Toy/Toy_TEST.ts", "UEA/Toy/Toy_TRAIN.ts"]
    assert load_classification("Toy", cache_dir=cache, allow_download=False)[0].n_channels == 2


def test_download_with_wrong_digest_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_aeon(monkeypatch)
    base_url, _ = make_zip(tmp_path / "server", "Toy")
    monkeypatch.setitem(uea.KNOWN_SHA256, "Toy", "0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        resolve_classification("Toy", cache_dir=cache, base_url=base_url)
    msg = str(info.value)
    assert "\n" not in msg and "sha256" in msg and f"{base_url}/Toy.zip" in msg
    assert cache_files(cache) == []


def test_download_unknown_digest_trust_on_first_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_aeon(monkeypatch)
    base_url, digest = make_zip(tmp_path / "server", "Toy")
    monkeypatch.setenv("SBTS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SBTS_UEA_BASE_URL", base_url)
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning, match="not verified against a published value"):
        resolve_classification("Toy")
    record = cache / "UEA" / "Toy" / "Toy.zip.sha256"
    assert record.read_text().split()[0] == digest
    assert cache_files(cache) == ["UEA/Toy/Toy.zip.sha256", "UEA/Toy/Toy_TEST.ts", "UEA/Toy/Toy_TRAIN.ts"]

    # Second call: served from the cache, no download (the server is gone).
    (tmp_path / "server" / "Toy.zip").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train, _ = resolve_classification("Toy")
    assert train == cache / "UEA" / "Toy" / "Toy_TRAIN.ts"


def test_redownload_checked_against_recorded_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_aeon(monkeypatch)
    cache = tmp_path / "cache"
    base_url, _ = make_zip(tmp_path / "server", "Toy")
    with pytest.warns(UserWarning):
        resolve_classification("Toy", cache_dir=cache, base_url=base_url)
    # The extracted files are lost and the server now serves a different archive.
    for split in ("TRAIN", "TEST"):
        (cache / "UEA" / "Toy" / f"Toy_{split}.ts").unlink()
    make_zip(tmp_path / "server", "Toy", {"Toy_TRAIN.ts": ts_text(), "Toy_TEST.ts": ts_text(label="b")})
    with pytest.raises(DataError, match="recorded at the first download"):
        resolve_classification("Toy", cache_dir=cache, base_url=base_url)
    assert cache_files(cache) == ["UEA/Toy/Toy.zip.sha256"]


def test_zip_path_traversal_is_contained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_aeon(monkeypatch)
    members = {
        "../../Toy_TRAIN.ts": ts_text(),
        "/abs/Toy_TEST.ts": ts_text(),
        "../../escaped.ts": "evil",
        "..\\..\\Toy_evil.ts": "evil",
    }
    base_url, digest = make_zip(tmp_path / "server", "Toy", members)
    monkeypatch.setitem(uea.KNOWN_SHA256, "Toy", digest)
    cache = tmp_path / "a" / "b" / "cache"
    train, test = resolve_classification("Toy", cache_dir=cache, base_url=base_url)
    assert train.parent == test.parent == cache / "UEA" / "Toy"
    assert cache_files(cache) == ["UEA/Toy/Toy_TEST.ts", "UEA/Toy/Toy_TRAIN.ts"]
    assert not list(tmp_path.rglob("escaped.ts")) and not list(tmp_path.rglob("*evil*"))
    assert load_classification("Toy", cache_dir=cache, allow_download=False)[1].n_channels == 2


def test_zip_without_the_splits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_aeon(monkeypatch)
    base_url, digest = make_zip(tmp_path / "server", "Toy", {"Toy_TRAIN.ts": ts_text()})
    monkeypatch.setitem(uea.KNOWN_SHA256, "Toy", digest)
    with pytest.raises(DataError, match="Toy_TEST.ts"):
        resolve_classification("Toy", cache_dir=tmp_path / "cache", base_url=base_url)
    assert cache_files(tmp_path / "cache") == []


def test_not_a_zip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_aeon(monkeypatch)
    (tmp_path / "server").mkdir()
    (tmp_path / "server" / "Toy.zip").write_text("<html>not found</html>")
    with pytest.warns(UserWarning), pytest.raises(DataError, match="not a valid zip"):
        resolve_classification("Toy", cache_dir=tmp_path / "cache", base_url=(tmp_path / "server").as_uri())
    assert cache_files(tmp_path / "cache") == []  # a broken first download pins no digest


def test_network_error_names_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_aeon(monkeypatch)
    base_url = (tmp_path / "empty_server").as_uri()
    with pytest.raises(DataError) as info:
        resolve_classification("Toy", cache_dir=tmp_path / "cache", base_url=base_url)
    msg = str(info.value)
    assert "\n" not in msg and f"{base_url}/Toy.zip" in msg and "looked in" in msg
    assert cache_files(tmp_path / "cache") == []


# ---------------------------------------------------------------------------------------------------
# Real data (needs SBTS_DATA_DIR)
# ---------------------------------------------------------------------------------------------------


@pytest.mark.data
def test_real_data_dir_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _ORIGINAL_DATA_DIR
    if not env or not (Path(env) / "classification" / "UEA").is_dir():
        pytest.skip("SBTS_DATA_DIR is not set or has no classification/UEA")
    monkeypatch.setenv("SBTS_DATA_DIR", env)
    names = available_uea_datasets()
    assert "JapaneseVowels" in names
    train, test = load_classification("UEA/JapaneseVowels", allow_download=False)
    assert str(train.path).startswith(str(Path(env)))
    assert (len(train.series), len(test.series), train.n_channels) == (270, 370, 12)



def test_known_split_file_digest_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_aeon(monkeypatch)
    base_url, _ = make_zip(tmp_path / "server", "Toy")
    monkeypatch.setitem(uea.KNOWN_TS_SHA256, "Toy_TRAIN.ts", "f" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="Toy_TRAIN.ts has sha256"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resolve_classification("Toy", cache_dir=cache, base_url=base_url)
    assert cache_files(cache) == []


def test_pinned_digests_match_the_real_files() -> None:
    data_dir = _ORIGINAL_DATA_DIR
    if not data_dir:
        pytest.skip("SBTS_DATA_DIR is not set")
    for base, digest in uea.KNOWN_TS_SHA256.items():
        name = base.rsplit("_", 1)[0]
        path = Path(data_dir) / "classification" / "UEA" / name / base
        assert uea.sha256_file(path) == digest, base
