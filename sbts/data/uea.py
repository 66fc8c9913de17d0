"""Finding the train/test files of a UEA classification dataset.

A spec is either a path (a folder, a ``*_TRAIN.ts[.gz]`` file, or ``TRAINFILE,TESTFILE``) or a
dataset name (``UEA/JapaneseVowels`` or ``JapaneseVowels``). Names are looked up, in order, in the
data dir (``data_dir`` or ``$SBTS_DATA_DIR``), in the offline copy bundled with the ``aeon`` package,
in the download cache (``cache_dir``, ``$SBTS_CACHE_DIR`` or ``~/.cache/sbts``), and finally
downloaded from the archive's web site. Downloads, and the files extracted from them, are refused past the input
limit (:mod:`sbts.data.limits`); a spec written as a path that names nothing says so (:mod:`sbts.data.locations`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path, PurePosixPath

from sbts.atomic import atomic_write_bytes
from sbts.data.limits import copy_limited, input_limit
from sbts.data.locations import DATA_DIR_HINT, is_path_like, no_such_path, resolve_data_dir
from sbts.data.ts_format import TSData, read_ts
from sbts.errors import DataError, one_line

__all__ = [
    "DEFAULT_UEA_BASE_URL",
    "KNOWN_SHA256",
    "available_uea_datasets",
    "load_classification",
    "resolve_classification",
]

DEFAULT_UEA_BASE_URL = "https://timeseriesclassification.com/aeon-toolkit"

# Published sha256 digests of the archive zips, by dataset name. Empty: we could not fetch the real
# archives when writing this, so no digest has been recorded from a trusted source. Until entries
# are added, downloads are checked "trust on first use" against the digest recorded in the cache at
# the first download (``<cache>/UEA/<Name>/<Name>.zip.sha256``), and a warning says so.
KNOWN_SHA256: dict[str, str] = {}

# sha256 of the extracted split files where two independent copies agree (aeon's bundled files and
# the archive copies sbts is developed on). A downloaded archive whose file differs is rejected.
KNOWN_TS_SHA256: dict[str, str] = {
    "JapaneseVowels_TRAIN.ts": "68a430eabd919cc77f40b1f5f3bc0dcafacc1486bca9260785aeb7d262cc78cd",
    "JapaneseVowels_TEST.ts": "b3d41d6a0ca3bcad3afb9ca7d4365382aa51341e2e58bae2a574babdda5b9462",
    "BasicMotions_TRAIN.ts": "8dc43cc6306cb679c888c01e26f91772ac4441a916da43bac8b79734a538b9d6",
    "BasicMotions_TEST.ts": "79213102bc6fca1a398ad98ce1185dff0208fa3d1465e687f48288946b0ff8dc",
}

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
_DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------------------
# Path specs
# --------------------------------------------------------------------------------------------------


_ARCHIVES = ("UEA",)


def _looks_like_path(spec: str) -> bool:
    return (Path(spec).expanduser().exists() or "," in spec or spec.lower().endswith((".ts", ".gz"))
            or is_path_like(spec, _ARCHIVES))


def _split_suffix(name: str) -> tuple[str, str] | None:
    """``'X_TRAIN.ts.gz'`` -> ``('X', '.ts.gz')``; None when the name is not ``*_TRAIN.ts[.gz]``."""
    for suffix in (".ts", ".ts.gz"):
        tail = "_TRAIN" + suffix
        if name.endswith(tail) and len(name) > len(tail):
            return name[: -len(tail)], suffix
    return None


def _test_beside(train: Path) -> Path:
    """The TEST file next to a TRAIN file, preferring the same compression."""
    parts = _split_suffix(train.name)
    if parts is None:
        raise DataError(f"{train}: expected a file named <Name>_TRAIN.ts or <Name>_TRAIN.ts.gz")
    stem, suffix = parts
    other = ".ts.gz" if suffix == ".ts" else ".ts"
    for suf in (suffix, other):
        candidate = train.with_name(f"{stem}_TEST{suf}")
        if candidate.is_file():
            return candidate
    raise DataError(f"{train}: no matching test file {stem}_TEST{suffix} beside it")


def _resolve_path_spec(spec: str) -> tuple[Path, Path]:
    path = Path(spec).expanduser()
    if path.is_dir():
        trains = sorted(p for p in path.iterdir() if p.is_file() and _split_suffix(p.name) is not None)
        if len(trains) != 1:
            found = ", ".join(p.name for p in trains) or "none"
            raise DataError(f"{path}: expected exactly one *_TRAIN.ts[.gz] file in the folder, found {len(trains)} "
                            f"({found})")
        return trains[0], _test_beside(trains[0])
    if path.is_file():
        return path, _test_beside(path)
    if "," in spec:
        pieces = [p.strip() for p in spec.split(",")]
        if len(pieces) != 2 or not all(pieces):
            raise DataError(f"{spec!r}: expected 'TRAINFILE,TESTFILE'")
        train, test = (Path(p).expanduser() for p in pieces)
        for p in (train, test):
            if not p.is_file():
                raise DataError(f"{p}: file not found")
        return train, test
    raise no_such_path(spec)


# --------------------------------------------------------------------------------------------------
# Name specs
# --------------------------------------------------------------------------------------------------


def _dataset_name(spec: str) -> str:
    """The name of a ``UEA/<Name>`` or ``<Name>`` spec (any other ``X/Y`` is a path: see _looks_like_path)."""
    name = spec.strip().rpartition("/")[2]
    if not _NAME_RE.match(name):
        raise DataError(f"invalid UEA dataset name {name!r} (letters, digits, '_' and '-' only)")
    return name


def _pair_in(folder: Path, name: str) -> tuple[Path, Path] | None:
    """``<folder>/<Name>_{TRAIN,TEST}.ts[.gz]`` if both exist."""
    found: list[Path] = []
    for split in ("TRAIN", "TEST"):
        candidates = [folder / f"{name}_{split}{suf}" for suf in (".ts", ".ts.gz")]
        hit = next((p for p in candidates if p.is_file()), None)
        if hit is None:
            return None
        found.append(hit)
    return found[0], found[1]


def _data_dir_folders(root: Path, name: str) -> list[Path]:
    return [root / "classification" / "UEA" / name, root / "UEA" / name, root / name]


def _aeon_data_folder() -> Path | None:
    """aeon's bundled datasets folder, located without importing aeon (its import is slow)."""
    try:
        spec = importlib.util.find_spec("aeon")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [str(Path(spec.origin).parent)]
    for root in roots:
        folder = Path(root) / "datasets" / "data"
        if folder.is_dir():
            return folder
    return None


def _cache_dir(cache_dir: str | Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("SBTS_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sbts"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch(url: str, dest: Path, limit: int) -> None:
    """Stream ``url`` into ``dest``, refused past ``limit`` bytes; any failure becomes a one-line DataError
    naming the URL."""
    try:
        with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as resp, dest.open("wb") as out:
            copy_limited(resp, out, limit, url)
    except urllib.error.HTTPError as exc:
        raise DataError(f"download of {url} failed: HTTP {exc.code} {one_line(exc.reason)}") from exc
    except urllib.error.URLError as exc:
        raise DataError(f"download of {url} failed: {one_line(exc.reason)}") from exc
    except (OSError, ValueError) as exc:  # timeouts, resets, bad URL schemes
        raise DataError(f"download of {url} failed: {one_line(exc)}") from exc


def _verify_digest(name: str, url: str, digest: str, record: Path) -> bool:
    """Check ``digest``; return True when it must be recorded (trust on first use)."""
    known = KNOWN_SHA256.get(name)
    if known is not None:
        if digest != known.lower():
            raise DataError(f"download of {url}: sha256 {digest} does not match the published {known}; file discarded")
        return False
    if record.is_file():
        words = record.read_text(encoding="utf-8").split()  # "<hex>  <Name>.zip", as sha256sum writes
        recorded = words[0].lower() if words else ""
        if digest != recorded:
            raise DataError(
                f"download of {url}: sha256 {digest} differs from {recorded or 'nothing'} recorded at the first "
                f"download in {record}; file discarded (delete that record to accept the new archive)"
            )
        warnings.warn(
            f"sha256 of {url} matches the digest recorded at its first download but was not verified "
            f"against a published value",
            stacklevel=4,
        )
        return False
    warnings.warn(
        f"sha256 of {url} ({digest}) was not verified against a published value; recorded it in {record} "
        f"to check later downloads (trust on first use)",
        stacklevel=4,
    )
    return True


def _extract_splits(archive: Path, name: str, url: str, target: Path, limit: int) -> None:
    """Write ``<Name>_TRAIN.ts`` and ``<Name>_TEST.ts`` from the zip into ``target``.

    Members are matched and written by *basename* only, so a member such as ``../../x/<Name>_TRAIN.ts``
    cannot escape ``target``; everything else in the archive is ignored. Each file is written to a
    temporary name and renamed into place, so an interrupted run never leaves a truncated file; one that
    decompresses past ``limit`` bytes is refused (a zip bomb fills neither memory nor disk).
    """
    wanted = {f"{name}_TRAIN.ts", f"{name}_TEST.ts"}
    staged: dict[str, Path] = {}
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                base = PurePosixPath(info.filename.replace("\\", "/")).name
                if info.is_dir() or base not in wanted or base in staged:
                    continue
                fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{base}.", suffix=".tmp")
                staged[base] = Path(tmp)
                with zf.open(info) as src, os.fdopen(fd, "wb") as dst:
                    copy_limited(src, dst, limit, f"{url}: {info.filename}")
        missing = sorted(wanted - staged.keys())
        if missing:
            raise DataError(f"archive {url} does not contain {', '.join(missing)}")
        for base, tmp in staged.items():
            known = KNOWN_TS_SHA256.get(base)
            digest = sha256_file(tmp) if known is not None else None
            if digest != known:
                raise DataError(f"archive {url}: {base} has sha256 {digest}, not the known {known}; discarded")
        for base, tmp in staged.items():
            os.replace(tmp, target / base)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise DataError(f"archive {url} is not a valid zip file: {one_line(exc)}") from exc
    except OSError as exc:
        raise DataError(f"cannot extract {url} into {target}: {one_line(exc)}") from exc
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)


def _download(name: str, cache_root: Path, base_url: str, limit: int) -> tuple[Path, Path]:
    url = f"{base_url.rstrip('/')}/{name}.zip"
    target = cache_root / "UEA" / name
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create cache dir {target}: {one_line(exc)}") from exc
    fd, tmp_name = tempfile.mkstemp(dir=target, prefix=f".{name}.", suffix=".zip.part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _fetch(url, tmp, limit)
        digest = sha256_file(tmp)
        record = target / f"{name}.zip.sha256"
        needs_record = _verify_digest(name, url, digest, record)
        _extract_splits(tmp, name, url, target, limit)
        if needs_record:
            # Recorded only once the archive proved usable, so a broken first download is not pinned.
            atomic_write_bytes(record, f"{digest}  {name}.zip\n".encode())
    except BaseException:
        tmp.unlink(missing_ok=True)
        try:
            target.rmdir()  # leave no empty folder behind; fails harmlessly if anything is cached there
        except OSError:
            pass
        raise
    tmp.unlink(missing_ok=True)
    pair = _pair_in(target, name)
    assert pair is not None
    return pair


def resolve_classification(
    spec: str,
    *,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    allow_download: bool = True,
    base_url: str | None = None,
    max_input_bytes: int | None = None,
) -> tuple[Path, Path]:
    """Return ``(train_path, test_path)`` for a path spec or a UEA dataset name (see module doc);
    ``max_input_bytes`` bounds a download and its extracted files (:mod:`sbts.data.limits`)."""
    spec = str(spec).strip()
    if not spec:
        raise DataError("empty dataset spec")
    if _looks_like_path(spec):
        return _resolve_path_spec(spec)

    name = _dataset_name(spec)
    looked: list[str] = []

    root = resolve_data_dir(data_dir)
    if root is not None:
        for folder in _data_dir_folders(root, name):
            if (pair := _pair_in(folder, name)) is not None:
                return pair
            looked.append(str(folder))
    else:
        looked.append(f"no data dir ({DATA_DIR_HINT})")

    aeon = _aeon_data_folder()
    if aeon is not None:
        if (pair := _pair_in(aeon / name, name)) is not None:
            return pair
        looked.append(f"aeon bundled data {aeon / name}")

    cache_root = _cache_dir(cache_dir)
    if (pair := _pair_in(cache_root / "UEA" / name, name)) is not None:
        return pair
    looked.append(str(cache_root / "UEA" / name))

    where = "; ".join(looked)
    if not allow_download:
        raise DataError(f"UEA dataset {name!r} not found (looked in: {where}) and downloads are disabled")
    url_base = base_url or os.environ.get("SBTS_UEA_BASE_URL") or DEFAULT_UEA_BASE_URL
    try:
        return _download(name, cache_root, url_base, input_limit(max_input_bytes))
    except DataError as exc:
        raise DataError(f"UEA dataset {name!r} not found locally (looked in: {where}); {exc}") from exc


def canonical_spec(spec: str) -> str:
    """A spec that means the same files from any working directory: a path form becomes the two
    absolute file paths ``TRAIN,TEST``; a dataset name is kept (it is resolved again where used)."""
    if not _looks_like_path(spec):
        return spec
    train, test = _resolve_path_spec(spec)
    return f"{train.resolve()},{test.resolve()}"


def load_classification(spec: str, *, missing_value: float | None = None, max_input_bytes: int | None = None,
                        **kwargs: object) -> tuple[TSData, TSData]:
    """Resolve ``spec`` (see :func:`resolve_classification`) and read both splits; ``missing_value`` and
    ``max_input_bytes``: see :func:`~sbts.data.ts_format.read_ts`."""
    train_path, test_path = resolve_classification(spec, max_input_bytes=max_input_bytes, **kwargs)  # type: ignore[arg-type]
    train, test = (read_ts(path, missing_value=missing_value, max_input_bytes=max_input_bytes)
                   for path in (train_path, test_path))
    if train.n_channels != test.n_channels:
        raise DataError(
            f"{train_path} has {train.n_channels} dimensions but {test_path} has {test.n_channels}; "
            f"train and test must match"
        )
    return train, test


def available_uea_datasets(data_dir: str | Path | None = None) -> list[str]:
    """Names of the datasets with both splits under the data dir (``data_dir`` or ``$SBTS_DATA_DIR``)."""
    root = resolve_data_dir(data_dir)
    if root is None or not root.is_dir():
        return []
    names: set[str] = set()
    for parent in (root / "classification" / "UEA", root / "UEA", root):
        if not parent.is_dir():
            continue
        for folder in parent.iterdir():
            if folder.is_dir() and _NAME_RE.match(folder.name) and _pair_in(folder, folder.name) is not None:
                names.add(folder.name)
    return sorted(names)
