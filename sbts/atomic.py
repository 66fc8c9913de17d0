"""Atomic file writes: a temporary file in the same folder, flushed, then renamed over the target; and the one
JSON reader whose errors are one line naming the file.

An interruption leaves either the old file or the new one, never a torn one, and no temporary file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from sbts.errors import CheckpointError, SBTSError


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    if path.is_dir():
        raise SBTSError(f"{path}: is a directory; give a file name to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise SBTSError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except OSError as exc:  # e.g. a full disk: the old file stays as it was
        Path(tmp).unlink(missing_ok=True)
        raise SBTSError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _strict_json(obj: Any) -> Any:
    """NaN and infinities (undefined metrics) as null: strict JSON readers reject the bare NaN Python writes."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {key: _strict_json(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict_json(value) for value in obj]
    return obj


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented, strict JSON (non-finite floats become null), atomically."""
    atomic_write_bytes(path, (json.dumps(_strict_json(obj), indent=2, allow_nan=False) + "\n").encode())


def read_json(path: str | Path, what: str = "file", error: type[SBTSError] = CheckpointError,
              missing: str | None = None) -> Any:
    """The JSON document in ``path``; a missing or unreadable file is an ``error`` naming the file and ``what`` it
    should be (``missing``: the whole message for a missing file, where its absence says more than its name)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(missing or f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: cannot read {what} ({exc.__class__.__name__})") from None
