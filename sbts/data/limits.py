"""The size limit on input files, so that reading one has a stated memory bound.

Every series, label and ``.ts`` file is refused, before any of it is read, when it is larger than the input
limit; a compressed input (gzip, and the members of a downloaded UEA zip) is decompressed in chunks of
:data:`READ_CHUNK_BYTES` and refused as soon as its decompressed bytes pass the limit, so a decompression bomb
costs at most the limit plus one chunk. The limit is, in order: a loader's ``max_input_bytes=`` argument, the
environment variable ``SBTS_MAX_INPUT_BYTES`` (a whole number of bytes), or :data:`DEFAULT_MAX_INPUT_BYTES`
(1 GiB).

Memory bound: a csv, txt or npy file is held whole while it is parsed, so reading one takes at most the limit
for the file's bytes, the limit again for its decompressed bytes when it is gzipped, and up to about 6 times the
decompressed size while a text file is parsed (its decoded text, its lines and numpy's parse: measured 3.8 to 5.7
on SMD, weather and ETTm1): about 8 GiB at the default limit. A ``.ts`` file is read a line at a time, so it holds
only its parsed values (8 bytes a value) and one line.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from pathlib import Path
from typing import BinaryIO

from sbts.errors import ConfigError, DataError, one_line

__all__ = ["DEFAULT_MAX_INPUT_BYTES", "MAX_INPUT_BYTES_ENV", "READ_CHUNK_BYTES", "check_file_size",
           "copy_limited", "gunzip_limited", "input_limit", "over_limit", "size_text"]

MAX_INPUT_BYTES_ENV = "SBTS_MAX_INPUT_BYTES"
# About 8 times the largest usual benchmark file (Traffic's csv, about 130 MB), and small enough that one read
# stays within the memory of a workstation (about 8 GiB, see the module doc).
DEFAULT_MAX_INPUT_BYTES = 1 << 30
# Decompression step: large enough that chunk overhead does not matter, small next to any sensible limit.
READ_CHUNK_BYTES = 1 << 20
_UNITS = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))
_RAISE_HINT = f"raise the limit with {MAX_INPUT_BYTES_ENV} or max_input_bytes="


def input_limit(override: int | None = None) -> int:
    """The input limit in bytes: ``override``, else ``$SBTS_MAX_INPUT_BYTES``, else the default."""
    if override is not None:
        if isinstance(override, bool) or not isinstance(override, int) or override < 1:
            raise ConfigError(f"max_input_bytes must be a positive whole number of bytes, not {override!r}")
        return override
    text = os.environ.get(MAX_INPUT_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_INPUT_BYTES
    if not text.isdecimal() or int(text) < 1:
        raise ConfigError(f"{MAX_INPUT_BYTES_ENV}={text!r} is not a positive whole number of bytes")
    return int(text)


def size_text(n_bytes: int) -> str:
    """``2147483648`` -> ``'2147483648 bytes (2.0 GiB)'``."""
    unit = next(((name, size) for name, size in _UNITS if n_bytes >= size), None)
    return f"{n_bytes} bytes" + (f" ({n_bytes / unit[1]:.1f} {unit[0]})" if unit else "")


def over_limit(path: Path | str, what: str, limit: int) -> DataError:
    """The one-line error for an input past the limit; ``what`` says how big it is ("is 2 bytes")."""
    return DataError(f"{path}: {what}, over the input limit of {size_text(limit)}; {_RAISE_HINT}")


def check_file_size(path: Path, limit: int) -> None:
    """Refuse a file larger than ``limit`` from its size alone (nothing of it is read)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read file: {one_line(exc.strerror or exc)}") from exc
    if size > limit:
        raise over_limit(path, f"file is {size_text(size)}", limit)


def copy_limited(source: BinaryIO, target: BinaryIO, limit: int, what: Path | str) -> int:
    """Copy ``source`` into ``target`` in chunks; refuse (naming ``what``) once past ``limit`` bytes."""
    copied = 0
    while chunk := source.read(min(READ_CHUNK_BYTES, limit + 1 - copied)):
        copied += len(chunk)
        if copied > limit:
            raise over_limit(what, f"holds more than {size_text(limit)}", limit)
        target.write(chunk)
    return copied


def gunzip_limited(path: Path, compressed: bytes, limit: int) -> bytes:
    """The decompressed bytes of a gzip file (all members), refused once past ``limit``.

    ``io.BytesIO`` shares ``compressed`` rather than copying it, so only the output grows.
    """
    chunks: list[bytes] = []
    total = 0
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(compressed)) as stream:
            while chunk := stream.read(min(READ_CHUNK_BYTES, limit + 1 - total)):
                total += len(chunk)
                if total > limit:
                    raise over_limit(path, f"decompresses to more than {size_text(limit)}", limit)
                chunks.append(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupted gzip file: {one_line(exc)}") from exc
    return b"".join(chunks)

