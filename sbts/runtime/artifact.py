"""The ``.sbts`` artifact: a safetensors file (no pickle) that describes and holds one trained model.

Layout (format version 1):

- ``__metadata__`` (strings): ``format`` = ``sbts-artifact``, ``format_version``, ``document`` (a
  JSON document: sbts version, model config, task, task state such as class names, the float dtype,
  and one entry per layer with its kind and what regenerates it) and ``checksum`` (SHA-256 over the
  document and every tensor's name, dtype, shape and bytes); ``signature`` (optional): HMAC-SHA256 of the
  checksum with the key in ``$SBTS_SIGNING_KEY``. The checksum finds corruption; only the signature finds
  tampering, since whoever edits a file can recompute a checksum.
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
checksum, then the semantics before anything is allocated or decoded: the config's sizes bounded, every
layer entry one the config makes with its shape and bias, the pooled masks and alphas shared out once each,
every tensor floats and finite, every alpha > 0, no tensor that no layer reads, and (``sbts.runtime.model``) a
task state of the file's own task. A truncated, corrupted, inconsistent or newer file is refused with a one-line
error instead of giving a wrong model. numpy, the standard library and torch-free sbts modules only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import lzma
import os
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
from sbts.layers.layout import LINEAR_KIND, ExpectedLayer, model_layout

FORMAT = "sbts-artifact"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit on the JSON header
HEADER_ALIGNMENT = 8  # safetensors pads its header so that the tensor data starts 8-byte aligned
MAX_ARTIFACT_BYTES = 2**30  # above the largest model sbts.config allows (MAX_WEIGHT_POSITIONS dense floats)
SIGNING_KEY_ENV = "SBTS_SIGNING_KEY"  # exports sign with it; loads verify signed files with it
REQUIRE_SIGNATURE_ENV = "SBTS_REQUIRE_SIGNATURE"  # 1/true/yes: refuse files the key does not verify
MIN_KEY_BYTES = 16  # an HMAC key shorter than this is guessable
SIGNATURE_PREFIX = "hmac-sha256:"
TRUE_WORDS = ("1", "true", "yes", "on")
MASKS = "sparse_binary.masks"  # every sparse-binary layer's encoded mask, one after another
ALPHAS = "sparse_binary.alphas"  # their alphas, in the same order
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "lc": 0, "lp": 0, "pb": 0}]
LZMA_MIN_DICT = 4096  # liblzma's smallest dictionary
MASK_ENCODINGS = ("bits", "bits-lzma", "gaps-lzma")  # what encode_mask chooses among
INPUT_SCALER = ("input_scaler.mean", "input_scaler.std")  # the training statistics: no layer's, the runtime's
SEED_RANGE = 2**64  # a layer's seed regenerates its signs: a 64-bit integer, written in decimal


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


def signing_key() -> bytes | None:
    """The key in ``$SBTS_SIGNING_KEY`` (UTF-8), or None when unset; a short key is refused."""
    value = os.environ.get(SIGNING_KEY_ENV)
    if not value:
        return None
    key = value.encode()
    if len(key) < MIN_KEY_BYTES:
        raise ArtifactError(f"{SIGNING_KEY_ENV} holds {len(key)} bytes; a signing key needs at least {MIN_KEY_BYTES}")
    return key


def signature_required() -> bool:
    return os.environ.get(REQUIRE_SIGNATURE_ENV, "").strip().lower() in TRUE_WORDS


def sign(checksum_text: str, key: bytes) -> str:
    """HMAC-SHA256 of the checksum, which covers the document and every tensor: whoever lacks the key cannot
    make a file that verifies, edited or new."""
    return SIGNATURE_PREFIX + hmac.new(key, checksum_text.encode(), hashlib.sha256).hexdigest()


def artifact_bytes(document: dict[str, Any], tensors: Mapping[str, np.ndarray], key: bytes | None = None) -> bytes:
    """Serialise a document and its tensors into the artifact format, signed with ``key`` when given."""
    from safetensors.numpy import save

    document_json = json.dumps(document, sort_keys=True, separators=(",", ":"))
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "document": document_json,
                "checksum": checksum(document_json, tensors)}
    if key is not None:
        metadata["signature"] = sign(metadata["checksum"], key)
    return _canonical(save({name: np.ascontiguousarray(value) for name, value in tensors.items()}, metadata=metadata))


def _canonical(data: bytes) -> bytes:
    """The safetensors file with its JSON header's keys sorted: safetensors writes them in hash order, which
    changes from process to process, so two exports of one model would differ in bytes. The tensor bytes and
    their offsets stay as written; the header is padded with spaces to a multiple of HEADER_ALIGNMENT."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.dumps(json.loads(data[8:8 + length]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % HEADER_ALIGNMENT)
    return struct.pack("<Q", len(header)) + header + data[8 + length:]


@dataclass
class Artifact:
    """A verified artifact: its JSON document and its stored tensors."""

    document: dict[str, Any]
    tensors: dict[str, np.ndarray]
    source: str
    size_bytes: int
    checksum: str = ""
    signature: str | None = None  # "hmac-sha256:<hex>" over the checksum, when the file was exported signed

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
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ArtifactError(f"{where}: not an sbts artifact (unreadable header)") from None
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
        raise ArtifactError(f"{where}: not an sbts artifact (no metadata in the safetensors header)")
    return header["__metadata__"]


def read_artifact(path: str | Path, *, key: bytes | None = None, require_signature: bool | None = None) -> Artifact:
    """Read and verify an artifact file; every failure is an ``ArtifactError`` naming the file.

    ``key`` (default ``$SBTS_SIGNING_KEY``) verifies a signed file; ``require_signature`` (default
    ``$SBTS_REQUIRE_SIGNATURE``) refuses a file without a signature that the key verifies."""
    try:
        size = Path(path).stat().st_size
        if size > MAX_ARTIFACT_BYTES:
            raise ArtifactError(f"{path}: {size:,} bytes; an sbts artifact is at most {MAX_ARTIFACT_BYTES:,}")
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read ({exc.strerror or exc})") from None
    artifact = load_artifact_bytes(data, str(path))
    verify_signature(artifact, signing_key() if key is None else key,
                     signature_required() if require_signature is None else require_signature)
    return artifact


def verify_signature(artifact: Artifact, key: bytes | None, required: bool) -> None:
    """A signed file must verify with the key when there is one; with ``required``, an unsigned file or one
    without a key to verify it is refused."""
    where = artifact.source
    if artifact.signature is None:
        if required:
            raise ArtifactError(f"{where}: not signed, and a signature is required ({REQUIRE_SIGNATURE_ENV})")
        return
    if key is None:
        if required:
            raise ArtifactError(f"{where}: signed, but there is no key to verify it (set {SIGNING_KEY_ENV})")
        return
    if not hmac.compare_digest(artifact.signature, sign(artifact.checksum, key)):
        raise ArtifactError(f"{where}: signature does not verify with the key in {SIGNING_KEY_ENV}: signed with "
                            "another key, or modified after signing")


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
    except (json.JSONDecodeError, RecursionError):  # RecursionError: a document nested thousands deep
        raise ArtifactError(f"{where}: unreadable document") from None
    expected = {"model": dict, "layers": dict, "task": str, "task_state": dict}
    wrong = [key for key, kind in expected.items() if not isinstance(document.get(key) if isinstance(document, dict)
                                                                      else None, kind)]
    if wrong:
        raise ArtifactError(f"{where}: the document lacks a valid {wrong[0]!r} entry")
    signature = metadata.get("signature")
    if signature is not None and not (isinstance(signature, str) and signature.startswith(SIGNATURE_PREFIX)):
        raise ArtifactError(f"{where}: unreadable signature {str(signature)[:40]!r}")
    artifact = Artifact(document, tensors, where, len(data), metadata["checksum"], signature)
    try:
        config = artifact.config  # validated, its sizes bounded (sbts.config.MODEL_SIZE_LIMITS)
    except ConfigError as exc:
        raise ArtifactError(f"{where}: invalid model config ({exc})") from None
    for name, entry in document["layers"].items():
        _kind(where, name, entry)
    _check_tensors(where, tensors)
    _check_layers(where, document["layers"], config, tensors)
    return artifact


# --- what a verified file must hold: checked before anything is allocated or decoded -------------------------

def _check_tensors(where: str, tensors: Mapping[str, np.ndarray]) -> None:
    """The pooled masks are bytes, every other tensor floats, all finite; every alpha is positive."""
    for name, array in tensors.items():
        if name == MASKS:
            if array.dtype != np.uint8 or array.ndim != 1:
                raise ArtifactError(f"{where}: tensor {name} must be 1-D uint8, got {array.dtype} {array.shape}")
        elif array.dtype.kind != "f":
            raise ArtifactError(f"{where}: tensor {name} is {array.dtype}; sbts stores floats there")
        elif not np.isfinite(array).all():
            raise ArtifactError(f"{where}: tensor {name} holds non-finite values (NaN or infinity)")
    alphas = tensors.get(ALPHAS)
    if alphas is not None and (alphas.ndim != 1 or not (alphas > 0).all()):
        raise ArtifactError(f"{where}: tensor {ALPHAS} must be 1-D with every alpha > 0 (alpha is the mean "
                            "magnitude of a layer's kept weights)")


def _whole(value: Any, low: int, high: int) -> bool:
    """An integer (not a bool) in [low, high]."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_layers(where: str, layers: Mapping[str, Any], config: ModelConfig,
                  tensors: Mapping[str, np.ndarray]) -> None:
    """The layer entries are exactly the layers the config makes (``sbts.layers.layout``), with its shapes and
    biases, and the sparse-binary entries share out the pooled masks and alphas, each byte and alpha once."""
    expected = model_layout(config)
    described = (f"n_layers {config.n_layers}, d_model {config.d_model}, norm {config.norm}, pos_encoding "
                 f"{config.pos_encoding}")
    for name in layers:
        if name not in expected:
            raise ArtifactError(f"{where}: layer {name} is not part of the network its config describes "
                                f"({described})")
    spans, alpha_indices = [], []
    for name, layer in expected.items():
        entry = layers.get(name)
        if entry is None:
            raise ArtifactError(f"{where}: layer {name} is missing (the config makes it: {described})")
        if entry["kind"] != layer.kind or entry.get("shape") != list(layer.shape):
            raise ArtifactError(f"{where}: layer {name} is a {entry['kind']} of shape {entry.get('shape')}; the "
                                f"config makes a {layer.kind} of shape {list(layer.shape)}")
        if layer.kind == LINEAR_KIND["sparse_binary"]:
            spans.append(_check_sparse_binary_entry(where, name, entry, layer, tensors))
            alpha_indices.append(entry["alpha_index"])
        elif layer.bias is not None and (f"{name}.bias" in tensors) != layer.bias:
            raise ArtifactError(f"{where}: layer {name} {'lacks' if layer.bias else 'has'} a bias; the config "
                                f"gives it {'one' if layer.bias else 'none'}")
    n_alphas = len(tensors.get(ALPHAS, ()))
    if sorted(alpha_indices) != list(range(n_alphas)):
        raise ArtifactError(f"{where}: the sparse-binary layers must use each of the {n_alphas} alphas once")
    covered = 0
    for start, length in sorted(spans):
        if start != covered:
            raise ArtifactError(f"{where}: the layers' masks must tile {MASKS} (a gap or overlap at byte {covered})")
        covered += length
    if covered != len(tensors.get(MASKS, ())):
        raise ArtifactError(f"{where}: the layers' masks cover {covered} of the {len(tensors.get(MASKS, ()))} "
                            f"bytes of {MASKS}")


def _check_sparse_binary_entry(where: str, name: str, entry: Mapping[str, Any], layer: ExpectedLayer,
                               tensors: Mapping[str, np.ndarray]) -> tuple[int, int]:
    """A sparse-binary entry's seed, kept count, bias, alpha index and mask span; returns (offset, bytes)."""
    positions = layer.shape[0] * layer.shape[1]
    pooled = len(tensors.get(MASKS, ()))
    seed, offset = entry.get("seed"), entry.get("mask_offset")
    n_alphas = len(tensors.get(ALPHAS, ()))
    checks = (  # in order, each run only when those before it held (mask_bytes needs a valid offset)
        ("seed", lambda: isinstance(seed, str) and seed.isdigit() and int(seed) < SEED_RANGE, "a decimal 64-bit seed"),
        ("kept", lambda: _whole(entry.get("kept"), 1, positions), f"1..{positions} kept weights"),
        ("bias", lambda: entry.get("bias") is layer.bias, f"bias={layer.bias}, as the config gives"),
        ("alpha_index", lambda: _whole(entry.get("alpha_index"), 0, n_alphas - 1),
         f"an index into the {n_alphas} alphas"),
        ("mask_offset", lambda: _whole(offset, 0, pooled), f"a byte offset into the {pooled} mask bytes"),
        ("mask_bytes", lambda: _whole(entry.get("mask_bytes"), 0, pooled - offset), "a length within the mask bytes"),
        ("mask_encoding", lambda: entry.get("mask_encoding") in MASK_ENCODINGS, f"one of {', '.join(MASK_ENCODINGS)}"),
    )
    for key, valid, wanted in checks:
        if not valid():
            raise ArtifactError(f"{where}: layer {name}: invalid {key} {entry.get(key)!r} (expected {wanted})")
    return offset, entry["mask_bytes"]


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


class _ReadTracker(Mapping):
    """The stored tensors, remembering which names the layers read (a tensor no layer reads is refused)."""

    def __init__(self, tensors: Mapping[str, np.ndarray]):
        self.tensors, self.read = tensors, set()

    def __getitem__(self, name: str) -> np.ndarray:
        self.read.add(name)
        return self.tensors[name]

    def __iter__(self):
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)


def network_tensors(artifact: Artifact) -> dict[str, np.ndarray]:
    """Every tensor the numpy network needs, regenerated or decoded from the artifact."""
    config = artifact.config
    tensors: dict[str, np.ndarray] = {}
    tracker = _ReadTracker(artifact.tensors)
    for name, entry in artifact.document["layers"].items():
        kind = _kind(artifact.source, name, entry)
        try:
            stored: Mapping[str, np.ndarray] = tracker
            if "mask_offset" in entry:  # the file pools all masks and alphas; the layer gets its own, decoded
                stored = ChainMap(_mask_and_alpha(entry, tracker), tracker)
            tensors.update(kind.read(name, entry, stored, config))
        except KeyError as exc:
            raise ArtifactError(f"{artifact.source}: layer {name}: missing {exc} (a {kind.name} layer stores "
                                f"{kind.stores})") from None
        except (ValueError, TypeError, IndexError, lzma.LZMAError) as exc:
            raise ArtifactError(f"{artifact.source}: layer {name}: {exc}") from None
    unread = sorted(set(artifact.tensors) - tracker.read - set(INPUT_SCALER))
    if unread:
        raise ArtifactError(f"{artifact.source}: tensor {unread[0]} belongs to no layer of the network")
    return tensors
