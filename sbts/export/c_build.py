"""Writing, compiling and measuring a C export: the directory ``sbts export --format c`` makes, its footprint
from ``size`` on a compiled object, and the engine called from Python through ``ctypes`` (tests, benchmarks).

Nothing here is needed to use the generated C: a firmware build compiles ``sbts.c`` with its own toolchain.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbts.atomic import atomic_write_bytes
from sbts.errors import ConfigError, SBTSError
from sbts.export.c_source import DEFAULT_WEIGHT_FORM, HEADER, SOURCE, CSource, c_sources
from sbts.runtime.artifact import Artifact

STRICT_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")
LIBRARY_FLAGS = ("-O2", "-shared", "-fPIC")
# The footprint: a size-optimised object, its constants in read-only data as on a device (no PIC relocations).
FOOTPRINT_FLAGS = ("-Os", "-c", "-fno-pic")
CORTEX_M4 = ("arm-none-eabi-gcc", "arm-none-eabi-size",
             ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"))


def find_compiler() -> str | None:
    """The system C compiler: gcc, cc or clang, the first found."""
    return next((path for path in map(shutil.which, ("gcc", "cc", "clang")) if path), None)


@dataclass
class CExportResult:
    directory: Path
    weight_form: str
    sizes: dict[str, int]
    footprint: dict[str, int] | None  # measured with `size` on the host compiler's object; None without one


def write_c_export(artifact: Artifact, directory: str | Path, *, weight_form: str = DEFAULT_WEIGHT_FORM,
                   force: bool = False) -> CExportResult:
    """Write ``sbts.h`` and ``sbts.c`` into ``directory`` (made if missing; a non-empty one only with ``force``),
    each file atomically; then measure the footprint when a C compiler is found."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory}: exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise ConfigError(f"{directory}: not empty; pass --force to overwrite its {HEADER} and {SOURCE}")
    generated = c_sources(artifact, weight_form)  # everything is checked before anything is written
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(directory / HEADER, generated.header.encode())
    atomic_write_bytes(directory / SOURCE, generated.source.encode())
    compiler = find_compiler()
    footprint = measure_footprint(directory, compiler) if compiler and shutil.which("size") else None
    return CExportResult(directory, generated.weight_form, generated.sizes, footprint)


def _run(command: list[str], what: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SBTSError(f"{what} failed: {' '.join(command)}: {(done.stderr or done.stdout).strip()[:2000]}")
    return done.stdout


def measure_footprint(directory: str | Path, compiler: str, size_tool: str = "size",
                      flags: tuple[str, ...] = ()) -> dict[str, int]:
    """Compile ``sbts.c`` to an object (-Os plus ``flags``) and read ``size``: flash is text (code and read-only
    data, the weights among them) plus initialised data; RAM is data plus bss (the arena is bss)."""
    directory = Path(directory)
    with tempfile.TemporaryDirectory() as scratch:
        obj = Path(scratch) / "sbts.o"
        _run([compiler, *STRICT_FLAGS, *FOOTPRINT_FLAGS, *flags, "-I", str(directory), "-o", str(obj),
              str(directory / SOURCE)], "compiling the C export")
        text, data, bss = (int(v) for v in _run([size_tool, str(obj)], "size").splitlines()[1].split()[:3])
    return {"text_bytes": text, "data_bytes": data, "bss_bytes": bss, "flash_bytes": text + data,
            "ram_bytes": data + bss}


def compile_library(generated: CSource, directory: str | Path, compiler: str | None = None,
                    flags: tuple[str, ...] = LIBRARY_FLAGS) -> Path:
    """Write the generated files into ``directory`` and build a shared library of them."""
    compiler = compiler or find_compiler()
    if compiler is None:
        raise SBTSError("no C compiler found (gcc, cc or clang)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / HEADER).write_text(generated.header)
    (directory / SOURCE).write_text(generated.source)
    library = directory / "libsbts.so"
    _run([compiler, *STRICT_FLAGS, *flags, "-o", str(library), str(directory / SOURCE), "-lm"],
         "compiling the C export")
    return library


_FLOATS = ctypes.POINTER(ctypes.c_float)


class CModel:
    """The compiled engine through ctypes: ``forward(rows)`` and ``stream_update(row)`` return (status, out)."""

    def __init__(self, library: str | Path, in_channels: int, out_dim: int):
        self.lib = ctypes.CDLL(str(library))
        self.in_channels, self.out_dim = in_channels, out_dim
        self.lib.sbts_forward.argtypes = [_FLOATS, ctypes.c_int, _FLOATS]
        self.lib.sbts_splitmix64.restype = ctypes.c_uint64
        self.lib.sbts_splitmix64.argtypes = [ctypes.c_uint64, ctypes.c_uint64]
        self.streamable = hasattr(self.lib, "sbts_stream_update")
        if self.streamable:
            self.lib.sbts_stream_update.argtypes = [_FLOATS, _FLOATS]
        self.lib.sbts_init()
        self._out = np.zeros(out_dim, np.float32)

    def forward(self, rows: np.ndarray) -> tuple[int, np.ndarray]:
        x = np.ascontiguousarray(rows, dtype=np.float32)
        out = np.zeros(self.out_dim, np.float32)
        status = self.lib.sbts_forward(x.ctypes.data_as(_FLOATS), len(x), out.ctypes.data_as(_FLOATS))
        return status, out

    def stream_update(self, row: np.ndarray) -> tuple[int, np.ndarray]:
        x = np.ascontiguousarray(row, dtype=np.float32)
        out = np.zeros(self.out_dim, np.float32)
        status = self.lib.sbts_stream_update(x.ctypes.data_as(_FLOATS), out.ctypes.data_as(_FLOATS))
        return status, out

    def stream_reset(self) -> None:
        self.lib.sbts_stream_reset()
