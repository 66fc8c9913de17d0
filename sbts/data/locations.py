"""Where datasets are found, and the not-found messages that every loader shares.

A named dataset (``SMD/machine-1-1``, ``ETT/ETTh1``, ``UEA/JapaneseVowels``) is looked up under the data dir:
``data_dir=`` in Python, else ``$SBTS_DATA_DIR``, which the CLI's ``--data-dir`` sets. Any other spec is a path;
one that looks like a path (see :func:`is_path_like`) and does not exist is reported as a missing path, never as
an unknown dataset name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from sbts.errors import DataError

__all__ = ["DATA_DIR_ENV", "DATA_DIR_HINT", "is_path_like", "no_such_path", "not_under_data_dir",
           "require_data_dir", "resolve_data_dir"]

DATA_DIR_ENV = "SBTS_DATA_DIR"
# Every message about a missing data dir names both ways of giving one.
DATA_DIR_HINT = f"set {DATA_DIR_ENV} or pass --data-dir (data_dir= in Python)"
_PATH_STARTS = (".", "/", "~")
_SEPARATORS = tuple(sep for sep in (os.sep, os.altsep, "/") if sep)


def resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    """``data_dir`` (an error when it is not a folder), else ``$SBTS_DATA_DIR``, else None."""
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            # An explicit argument that does not exist is a typo worth reporting, not skipping.
            raise DataError(f"{path}: data dir not found")
        return path
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else None


def require_data_dir(spec: str, data_dir: str | Path | None) -> Path:
    """The data dir a named dataset is looked up in; an error without one, or when it is not a folder."""
    root = resolve_data_dir(data_dir)
    if root is None:
        raise DataError(f"dataset {spec!r}: no data dir; {DATA_DIR_HINT}")
    if not root.is_dir():
        raise DataError(f"{root}: data dir not found (from {DATA_DIR_ENV} or --data-dir)")
    return root


def not_under_data_dir(what: str, root: Path) -> str:
    """The end of a message about a named dataset missing from the data dir."""
    return f"{what} is not under the data dir {root} ({DATA_DIR_HINT} to use another)"


def is_path_like(spec: str, archives: Iterable[str]) -> bool:
    """Whether a spec is written as a path: it starts with ``.``, ``/`` or ``~``, or holds a path separator and
    is not ``ARCHIVE/NAME`` of one of the loader's ``archives`` (case-insensitive)."""
    if spec.startswith(_PATH_STARTS):
        return True
    if not any(sep in spec for sep in _SEPARATORS):
        return False
    archive, _, name = spec.partition("/")
    is_archive_spec = archive.lower() in {a.lower() for a in archives} and not any(sep in name for sep in _SEPARATORS)
    return not is_archive_spec


def no_such_path(spec: str) -> DataError:
    """The error for a path spec that names nothing."""
    return DataError(f"no such file or directory: {spec}")
