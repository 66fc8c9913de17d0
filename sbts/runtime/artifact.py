"""The ``.sbts`` artifact: a safetensors file (no pickle) that describes and holds one trained model.

Layout (format version 1):

- ``__metadata__`` (strings): ``format`` = ``sbts-artifact``, ``format_version``, ``document`` (a
  JSON document: sbts version, model config, task, task state such as class names, the float dtype,
  and one entry per layer with its kind and what regenerates it) and ``checksum`` (SHA-256 over the
  document and every tensor's name, dtype, shape and bytes).
- Tensors, named after the model's modules:
  - ``sparse_binary.masks`` (uint8): each sparse-binary linear's 0/1 mask, bit-packed (row-major,
    ``np.packbits``) and, where smaller, LZMA-compressed either as bits or as the gaps between kept
    positions, one after another; the layer entry records its encoding, offset and length.
    ``sparse_binary.alphas`` (float32): one alpha per layer, at the entry's ``alpha_index``. The
    signs of W and the frozen bias are NOT stored: the entry's 64-bit seed regenerates them.
  - dense linear ``{name}.weight`` / ``{name}.bias``; norms ``{name}.weight|bias|running_mean|running_var``;
    a learnable ``positional.table``: float32, or float16 when exported so.
  - ``input_scaler.mean`` / ``input_scaler.std``: float64 per-channel statistics of the training data.
  Q/K/V activation masks (from the seeds in their layer entries) and a sinusoidal table are
  regenerated; their sizes come from the model config.

Each layer entry's ``kind`` names a kind of ``sbts.layers.kinds``, which says what the layer stores
and how it becomes the network's tensors. Reading checks the container, the format and version, the
checksum, every layer's kind and every tensor's shape and kept count before anything is built, so a
truncated, corrupted, tampered or newer file is refused with a one-line error instead of giving a
wrong model. numpy, the standard library and torch-free sbts modules only.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import struct
from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sbts.config import ModelConfig
from sbts.errors import ArtifactError, ConfigError
from sbts.layers.kinds import ALPHA, MASK, LayerKind, layer_kind

FORMAT = "sbts-artifact"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit on the JSON header
MASKS = "sparse_binary.masks"  # every sparse-binary layer's encoded mask, one after another
ALPHAS = "sparse_binary.alphas"  # their alphas, in the same order
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "lc": 0, "lp": 0, "pb": 0}]
LZMA_MIN_DICT = 4096  # liblzma's smallest dictionary


def _encoder_filters(size: int) -> list[dict[str, Any]]:
    """The decoder's filters with a dictionary no larger than the data: the same stream format (a decoder with a
    larger dictionary reads it), without preset 9's 64 MiB match finder set up for every small mask."""
    return [dict(_LZMA_FILTERS[0], dict_size=max(LZMA_MIN_DICT, size))]


# --- mask codec ------------------------------------------------------------------------------------

def _gap_bytes(mask: np.ndarray) -> bytes:
    """Zeros before each kept position, each gap g written as g // 255 bytes of 255 then g % 255."""
    kept = np.flatnonzero(mask)
    gaps = np.diff(np.concatenate([[-1], kept])) - 1
    full, rest = np.divmod(gaps, 255)
    out = np.full(int(full.sum()) + len(gaps), 255, dtype=np.uint8)
    out[np.cumsum(full + 1) - 1] = rest  # each gap ends with its remainder byte
    return out.tobytes()


def _from_gap_bytes(data: bytes, size: int) -> np.ndarray:
    codes = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
    ends = np.flatnonzero(codes != 255)
    if len(codes) and (not len(ends) or ends[-1] != len(codes) - 1):
        raise ValueError("gap code ends inside a gap")
    gaps = np.diff(np.concatenate([[0], np.cumsum(codes)[ends]]))
    positions = np.cumsum(gaps + 1) - 1
    if len(positions) and positions[-1] >= size:
        raise ValueError("gap code runs past the end of the mask")
    mask = np.zeros(size, dtype=bool)
    mask[positions] = True
    return mask


def encode_mask(mask: np.ndarray) -> tuple[str, np.ndarray]:
    """The smallest of three encodings of a 0/1 mask, as (encoding name, uint8 array)."""
    flat = np.asarray(mask).reshape(-1) != 0
    bits, gaps = np.packbits(flat).tobytes(), _gap_bytes(flat)
    candidates = {
        "bits": bits,
        "bits-lzma": lzma.compress(bits, format=lzma.FORMAT_RAW, filters=_encoder_filters(len(bits))),
        "gaps-lzma": lzma.compress(gaps, format=lzma.FORMAT_RAW, filters=_encoder_filters(len(gaps))),
    }
    name = min(candidates, key=lambda key: len(candidates[key]))
    return name, np.frombuffer(candidates[name], dtype=np.uint8).copy()


def decode_mask(encoding: str, data: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """float32 0/1 mask of ``shape`` from ``encode_mask``'s output."""
    size = int(np.prod(shape))
    raw = np.asarray(data, dtype=np.uint8).tobytes()
    if encoding == "bits":
        packed = raw
    elif encoding in ("bits-lzma", "gaps-lzma"):
        # Bounded: a crafted file cannot make a small mask expand into gigabytes.
        limit = size + 1 if encoding == "gaps-lzma" else (size + 7) // 8 + 1
        decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
        packed = decompressor.decompress(raw, max_length=limit)
        if not decompressor.eof:
            raise ValueError(f"compressed mask is truncated or expands beyond its {size} positions")
    else:
        raise ValueError(f"unknown mask encoding {encoding!r}")
    if encoding == "gaps-lzma":
        flat = _from_gap_bytes(packed, size)
    else:
        if len(packed) != (size + 7) // 8:
            raise ValueError(f"{len(packed)} mask bytes for {size} positions")
        flat = np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=size).astype(bool)
    return flat.reshape(shape).astype(np.float32)


# --- container -------------------------------------------------------------------------------------

def checksum(document_json: str, tensors: Mapping[str, np.ndarray], version: str = str(FORMAT_VERSION)) -> str:
    """SHA-256 over the format marker and version, the document and every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256(f"{FORMAT}\0{version}\0".encode())
    digest.update(document_json.encode())
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        digest.update(f"\0{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    return "sha256:" + digest.hexdigest()


def artifact_bytes(document: dict[str, Any], tensors: Mapping[str, np.ndarray]) -> bytes:
    """Serialise a document and its tensors into the artifact format."""
    from safetensors.numpy import save

    document_json = json.dumps(document, sort_keys=True, separators=(",", ":"))
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "document": document_json,
                "checksum": checksum(document_json, tensors)}
    return save({name: np.ascontiguousarray(value) for name, value in tensors.items()}, metadata=metadata)


@dataclass
class Artifact:
    """A verified artifact: its JSON document and its stored tensors."""

    document: dict[str, Any]
    tensors: dict[str, np.ndarray]
    source: str
    size_bytes: int

    @property
    def config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.document["model"], f"{self.source}: model config")


def _header(data: bytes, where: str) -> dict[str, Any]:
    if len(data) < 8:
        raise ArtifactError(f"{where}: not an sbts artifact (only {len(data)} bytes)")
    (length,) = struct.unpack("<Q", data[:8])
    if length > min(MAX_HEADER_BYTES, len(data) - 8):
        raise ArtifactError(f"{where}: not an sbts artifact, or truncated (header of {length} bytes in a "
                            f"{len(data)}-byte file)")
    try:
        header = json.loads(data[8:8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ArtifactError(f"{where}: not an sbts artifact (unreadable header)") from None
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
        raise ArtifactError(f"{where}: not an sbts artifact (no metadata in the safetensors header)")
    return header["__metadata__"]


def read_artifact(path: str | Path) -> Artifact:
    """Read and verify an artifact file; every failure is an ``ArtifactError`` naming the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return load_artifact_bytes(data, str(path))


def load_artifact_bytes(data: bytes, where: str) -> Artifact:
    """Verify and open an artifact held in memory; ``where`` names it in errors."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    metadata = _header(data, where)
    if metadata.get("format") != FORMAT:
        raise ArtifactError(f"{where}: not an sbts artifact (format {metadata.get('format')!r})")
    try:
        version = int(metadata.get("format_version", ""))
    except ValueError:
        raise ArtifactError(f"{where}: invalid format version {metadata.get('format_version')!r}") from None
    if version > FORMAT_VERSION:
        raise ArtifactError(f"{where}: written in artifact format {version} by a newer sbts; this sbts reads "
                            f"format {FORMAT_VERSION}, upgrade sbts to load it")
    if version < 1:
        raise ArtifactError(f"{where}: invalid format version {version}")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError) as exc:
        raise ArtifactError(f"{where}: truncated or corrupted ({str(exc).splitlines()[0]})") from None
    document_json = metadata.get("document", "")
    if metadata.get("checksum") != checksum(document_json, tensors, str(version)):
        raise ArtifactError(f"{where}: checksum mismatch: the file was corrupted or modified after export")
    try:
        document = json.loads(document_json)
    except json.JSONDecodeError:
        raise ArtifactError(f"{where}: unreadable document") from None
    expected = {"model": dict, "layers": dict, "task": str, "task_state": dict}
    wrong = [key for key, kind in expected.items() if not isinstance(document.get(key) if isinstance(document, dict)
                                                                      else None, kind)]
    if wrong:
        raise ArtifactError(f"{where}: the document lacks a valid {wrong[0]!r} entry")
    artifact = Artifact(document, tensors, where, len(data))
    try:
        artifact.config  # noqa: B018 -- validates the model config
    except ConfigError as exc:
        raise ArtifactError(f"{where}: invalid model config ({exc})") from None
    for name, entry in document["layers"].items():
        _kind(where, name, entry)
    return artifact


# --- from stored tensors to the network's tensors -------------------------------------------------------

def _kind(where: str, name: str, entry: Any) -> LayerKind:
    """The kind a layer entry names; an unknown one is refused naming the file, the layer and the kind."""
    try:
        return layer_kind(entry.get("kind") if isinstance(entry, dict) else None)
    except ValueError as exc:
        raise ArtifactError(f"{where}: layer {name}: {exc}") from None


def _mask_and_alpha(entry: dict[str, Any], stored: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A sparse-binary layer's 0/1 mask and alpha, decoded from the pooled masks and alphas."""
    start, length = entry["mask_offset"], entry["mask_bytes"]
    code = stored[MASKS][start:start + length]
    if len(code) != length:
        raise ValueError(f"mask bytes {start}..{start + length} lie outside the stored masks")
    return {MASK: decode_mask(entry["mask_encoding"], code, tuple(entry["shape"])),
            ALPHA: stored[ALPHAS][entry["alpha_index"]]}


def network_tensors(artifact: Artifact) -> dict[str, np.ndarray]:
    """Every tensor the numpy network needs, regenerated or decoded from the artifact."""
    config = artifact.config
    tensors: dict[str, np.ndarray] = {}
    for name, entry in artifact.document["layers"].items():
        kind = _kind(artifact.source, name, entry)
        try:
            stored: Mapping[str, np.ndarray] = artifact.tensors
            if "mask_offset" in entry:  # the file pools all masks and alphas; the layer gets its own, decoded
                stored = ChainMap(_mask_and_alpha(entry, artifact.tensors), artifact.tensors)
            tensors.update(kind.read(name, entry, stored, config))
        except KeyError as exc:
            raise ArtifactError(f"{artifact.source}: layer {name}: missing {exc} (a {kind.name} layer stores "
                                f"{kind.stores})") from None
        except (ValueError, TypeError, IndexError, lzma.LZMAError) as exc:
            raise ArtifactError(f"{artifact.source}: layer {name}: {exc}") from None
    return tensors
