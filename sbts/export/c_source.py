"""C99 export: an ``.sbts`` artifact as one header and one source file, for machines without Python.

``c_sources(artifact, weights)`` writes the network and the task's head as C with the numbers of the numpy
runtime (``sbts.runtime``), to float32 rounding: raw inputs in, scaled with the training statistics in C;
class logits, an anomaly score and its 0/1 decision, or forecasts of the next steps in the data's units out. The
engine (``c_engine.c``, the same for every model) follows the generated constants; macros select its parts,
so a model carries only the code it runs.

Weights live in ``const`` arrays (flash) in one of three forms (``WEIGHT_FORMS``), the choice recorded in
the header: kept-input index lists (fastest), 2-bit ternary codes, or 1 bit per position saying kept or not,
the signs regenerated from the layer's 64-bit seed by SplitMix64 (smallest). All working memory is one static
arena, no malloc; libm only. The input scaling, the threshold, the names and the forecast formulation are
read through the task's runtime class, which checks them, so the C cannot take what the runtime refuses.
"""

from __future__ import annotations

import math
import re
import textwrap
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from sbts import __version__
from sbts.errors import ConfigError, SBTSError
from sbts.frozen_tensors import ROTARY_BASE, splitmix64
from sbts.heads.forecasting import WINDOW_NORM_EPS, Formulation
from sbts.layers.kinds import NORM_EPS
from sbts.registry import runtime_class
from sbts.runtime.artifact import Artifact

WEIGHT_FORMS = {
    "lists": "per output, the indices of its kept inputs (+alpha ones, then -alpha ones), 1 byte each (2 past 256 "
             "inputs), one alpha per layer: fastest, and smaller than 2-bit codes below density 0.25",
    "ternary": "2-bit ternary codes per weight (0, +alpha, -alpha), one alpha per layer",
    "mask": "1 bit per weight (kept or not), signs regenerated from the layer's 64-bit seed (SplitMix64): smallest",
}
# The engine's mode macros: each table becomes PREFIX_NAME defines and the model's PREFIX (c_engine.c).
FORM_CODES = {"ternary": 0, "mask": 1, "lists": 2}
TASK_CODES = {"classification": 0, "anomaly": 1, "forecasting": 2}  # the tasks with a head in C
ATTENTION_CODES = {"full": 0, "step_t": 1, "qkv_mask": 2}
NORM_CODES = {"none": 0, "batch": 1, "layer_time": 2, "layer": 3}
POSITION_CODES = {"none": 0, "learnable": 1, "rope": 2, "sinusoidal": 3}  # learnable: its table is stored
PATH_CODES = {"none": 0, "joint": 1, "shared": 2}  # ModelConfig.linear_path
TABLES_MARKER = "/* @tables: the model's descriptor tables are generated here */"
BYTE_INDEX_LIMIT = 256  # inputs a one-byte index addresses
SHORT_INDEX_LIMIT = 2**16  # inputs a two-byte index (and a two-byte count of kept inputs) addresses
ROW_BLOCK = 32  # steps the engine's kernels take at a time: buffer strides are whole blocks (c_engine.c)
DEFAULT_WEIGHT_FORM = "lists"
HEADER, SOURCE = "sbts.h", "sbts.c"
FLOAT_BYTES, DOUBLE_BYTES, SEED_BYTES = 4, 8, 8
CODES_PER_BYTE = {"ternary": 4, "mask": 8}
ITEMS_PER_LINE = 12


def _float(value: float) -> str:
    return f"{float(np.float32(value))!r}f"


def _floats(name: str, values: np.ndarray) -> str:
    items = [_float(v) for v in np.asarray(values, np.float32).reshape(-1)] or ["0.0f"]
    return _array(f"static const float {name}[{len(items)}]", items)


def _doubles(name: str, values: np.ndarray) -> str:
    items = [repr(float(v)) for v in np.asarray(values, np.float64).reshape(-1)] or ["0.0"]
    return _array(f"static const double {name}[{len(items)}]", items)


def _cname(name: str) -> str:
    return "c_" + re.sub(r"\W", "_", name)


def _integers(name: str, data: np.ndarray, c_type: str = "unsigned char") -> str:
    items = [str(int(b)) for b in np.asarray(data).reshape(-1)] or ["0"]
    return _array(f"static const {c_type} {name}[{len(items)}]", items)


def _array(declaration: str, items: list[str]) -> str:
    lines = [", ".join(items[i:i + ITEMS_PER_LINE]) for i in range(0, len(items), ITEMS_PER_LINE)]
    return f"{declaration} = {{\n    " + ",\n    ".join(lines) + "\n};\n"


def _c_string(text: str) -> str:
    """A C string literal of ``text`` (UTF-8; anything but printable ASCII as octal escapes)."""
    out = []
    for byte in text.encode():
        char = chr(byte)
        out.append(char if 32 <= byte < 127 and char not in '"\\?' else f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _pack(values: np.ndarray, per_byte: int) -> np.ndarray:
    """Rows of small codes (out, in) packed ``per_byte`` to a byte, least significant first, each row padded
    to whole bytes."""
    bits = 8 // per_byte
    out_features, in_features = values.shape
    padded = np.zeros((out_features, -(-in_features // per_byte) * per_byte), np.uint8)
    padded[:, :in_features] = values
    groups = padded.reshape(out_features, -1, per_byte).astype(np.uint16)
    return (groups << (bits * np.arange(per_byte, dtype=np.uint16))).sum(axis=2).astype(np.uint8).reshape(-1)


def seed_signs(seed: int, count: int) -> np.ndarray:
    """True where element i of the seed's stream makes a positive weight: uniform u >= 1/2, its top bit."""
    return (splitmix64(seed, 0, count) >> np.uint64(63)).astype(bool)


@dataclass
class CSource:
    """The generated files and what their constants take."""

    header: str
    source: str
    weight_form: str
    sizes: dict[str, int] = field(default_factory=dict)


class _Constants:
    """The constant arrays and the linear descriptors, collected while walking the network."""

    def __init__(self, artifact: Artifact, tensors: dict[str, np.ndarray], weight_form: str, index_type: str):
        self.tensors, self.index_type = tensors, index_type
        self.entries = artifact.document["layers"]
        self.weight_form = weight_form
        self.arrays: list[str] = []
        self.linears: list[str] = []
        self.sizes = {"linear_weight_bytes": 0, "other_constant_bytes": 0}

    def floats(self, name: str, values: np.ndarray) -> str:
        cname = _cname(name)
        self.arrays.append(_floats(cname, values))
        self.sizes["other_constant_bytes"] += FLOAT_BYTES * int(np.size(values))
        return cname

    def bits(self, name: str, mask: np.ndarray) -> str:
        cname = _cname(name)
        packed = _pack(np.asarray(mask) != 0, CODES_PER_BYTE["mask"])
        self.arrays.append(_integers(cname, packed))
        self.sizes["other_constant_bytes"] += len(packed)
        return cname

    def linear(self, name: str) -> int:
        """The index of the linear ``name`` in the descriptor table."""
        weight = self.tensors[f"{name}.weight"]
        out_features, in_features = weight.shape
        bias = self.floats(f"{name}.bias", self.tensors[f"{name}.bias"]) if f"{name}.bias" in self.tensors else "0"
        cname = _cname(name)
        if self.entries.get(name, {}).get("kind") != "sparse_binary_linear":
            self.arrays.append(_floats(cname + "_weight", weight))
            self.sizes["linear_weight_bytes"] += FLOAT_BYTES * weight.size
            self.linears.append(f"{{{in_features}, {out_features}, 0, 0, 0, 0, 0.0f, {cname}_weight, {bias}}}")
            return len(self.linears) - 1
        alpha = float(np.abs(weight).max())
        seed = int(self.entries[name]["seed"])
        if self.weight_form == "lists":
            plus, minus = weight > 0, weight < 0
            counts = np.stack([plus.sum(1), minus.sum(1)], axis=1).astype(np.uint16)
            index = np.concatenate([np.concatenate([np.flatnonzero(plus[o]), np.flatnonzero(minus[o])])
                                    for o in range(out_features)])
            index_bytes = 1 if self.index_type == "unsigned char" else 2
            self.arrays.append(_integers(cname + "_counts", counts, "unsigned short")
                               + _integers(cname + "_index", index, self.index_type))
            self.sizes["linear_weight_bytes"] += 2 * counts.size + index_bytes * len(index) + FLOAT_BYTES
            self.linears.append(f"{{{in_features}, {out_features}, 0, 0, {cname}_counts, {cname}_index, "
                                f"{_float(alpha)}, 0, {bias}}}")
            return len(self.linears) - 1
        if self.weight_form == "mask":
            signs = seed_signs(seed, weight.size).reshape(weight.shape)
            kept = weight != 0
            if not np.array_equal(signs[kept], weight[kept] > 0):  # the C engine would compute other signs
                raise SBTSError(f"layer {name}: its signs are not those of its seed; export with weights=ternary")
            packed = _pack(kept, CODES_PER_BYTE["mask"])
            stored = len(packed) + FLOAT_BYTES + SEED_BYTES
        else:
            packed = _pack(np.where(weight > 0, 1, np.where(weight < 0, 2, 0)), CODES_PER_BYTE["ternary"])
            stored = len(packed) + FLOAT_BYTES
        self.arrays.append(_integers(cname + "_bits", packed))
        self.sizes["linear_weight_bytes"] += stored
        self.linears.append(f"{{{in_features}, {out_features}, {cname}_bits, UINT64_C({seed}), 0, 0, {_float(alpha)}, "
                            f"0, {bias}}}")
        return len(self.linears) - 1


def c_sources(artifact: Artifact, weight_form: str = DEFAULT_WEIGHT_FORM) -> CSource:
    """The header and the source of the artifact's network and task head."""
    if weight_form not in WEIGHT_FORMS:
        raise ConfigError(f"C weights must be one of {', '.join(WEIGHT_FORMS)}; got {weight_form!r}")
    task = artifact.document["task"]
    if task not in TASK_CODES:
        raise ConfigError(f"{artifact.source}: task {task!r} has no C head (C export takes {', '.join(TASK_CODES)})")
    if artifact.config.has_linear_path and task != "forecasting":
        raise ConfigError(f"{artifact.source}: {'an' if task[0] in 'aeiou' else 'a'} {task} model with a linear path "
                          "has no C head (the path is a forecaster's)")
    runtime = runtime_class(task)(artifact)  # the checked scaler, threshold, names and formulation
    config, tensors = runtime.config, runtime.tensors
    formulation = getattr(runtime, "formulation", Formulation())
    widest = max(w.shape[1] for name, w in tensors.items() if name.endswith(".weight") and w.ndim == 2
                 and "norm" not in name)
    if weight_form == "lists" and widest > SHORT_INDEX_LIMIT:
        raise ConfigError(f"{artifact.source}: a layer reads {widest:,} inputs, more than the lists form's 2-byte "
                          f"indices address ({SHORT_INDEX_LIMIT:,}); export with weights ternary or mask")
    index_type = "unsigned char" if widest <= BYTE_INDEX_LIMIT else "unsigned short"
    consts = _Constants(artifact, tensors, weight_form, index_type)

    d, heads, layers = config.d_model, config.n_heads, config.n_layers
    head_dim = d // heads

    embedding = consts.linear("embedding")
    layer_rows, norm_rows, mask_rows = [], [], []
    for i in range(layers):
        name = f"layers.{i}"
        ids = [consts.linear(f"{name}.attention.{p}") for p in ("q_proj", "k_proj", "v_proj", "out_proj")]
        layer_rows.append("{" + ", ".join(map(str, ids + [consts.linear(f"{name}.ff1"), consts.linear(f"{name}.ff2")]))
                          + "}")
        pair = []
        for which in ("norm1", "norm2"):
            key = f"{name}.{which}"
            if config.norm == "batch":  # eval mode folds the running statistics into one scale and shift
                scale = tensors[f"{key}.weight"] / np.sqrt(tensors[f"{key}.running_var"] + np.float32(NORM_EPS))
                shift = tensors[f"{key}.bias"] - tensors[f"{key}.running_mean"] * scale
                pair += [consts.floats(key + ".scale", scale), consts.floats(key + ".shift", shift)]
            elif config.norm in ("layer", "layer_time"):
                pair += [consts.floats(key + ".weight", tensors[f"{key}.weight"]),
                         consts.floats(key + ".bias", tensors[f"{key}.bias"])]
            else:
                pair += ["0", "0"]
        norm_rows.append("{" + ", ".join(pair) + "}")
        if config.attention == "qkv_mask":
            mask_rows.append("{" + ", ".join(consts.bits(f"{name}.attention.{w}_mask",
                                                         tensors[f"{name}.attention.{w}_mask"]) for w in "qkv") + "}")
    head = consts.linear("head")
    path = {"PATH": consts.linear("linear_path")} if config.has_linear_path else {}
    sinusoidal = config.pos_encoding == "sinusoidal"  # computed in C, not stored
    table = (consts.floats("positional.table", tensors["positional.table"])
             if "positional.table" in tensors and not sinusoidal else "0")
    rope = config.pos_encoding == "rope"
    frequencies = ROTARY_BASE ** (-2 * np.arange(head_dim // 2, dtype=np.float64) / head_dim)

    scaler = runtime.scaler
    mean = np.zeros(config.in_channels) if scaler is None else scaler.mean
    std = np.ones(config.in_channels) if scaler is None else scaler.std
    consts.arrays.append(_doubles("INPUT_MEAN", mean) + _doubles("INPUT_STD", std))
    consts.sizes["other_constant_bytes"] += 2 * DOUBLE_BYTES * config.in_channels
    if rope:
        consts.arrays.append(_doubles("ROPE_FREQUENCY", frequencies))
        consts.sizes["other_constant_bytes"] += DOUBLE_BYTES * len(frequencies)
    if sinusoidal:  # the frequencies of sbts.frozen_tensors.sinusoidal_table
        sin_frequencies = np.exp(np.arange(0, d, 2, dtype=np.float64) * (-math.log(10000.0) / d))
        consts.arrays.append(_doubles("SIN_FREQUENCY", sin_frequencies))
        consts.sizes["other_constant_bytes"] += DOUBLE_BYTES * len(sin_frequencies)

    streamable = task != "classification" and runtime.streamable and config.max_len >= 2
    threshold = runtime.threshold if task == "anomaly" else None
    if threshold is not None and runtime.threshold_method == "relative":
        raise ConfigError(f"{artifact.source}: the C engine compares scores with a fixed threshold; this detector's "
                          "threshold is relative (it follows the score level): export a detector trained with "
                          "threshold percentile or pot, or compare the C scores with the runtime's predict")
    out_dim = 1 + (threshold is not None) if task == "anomaly" else config.out_dim
    names = runtime.classes if task == "classification" else runtime.columns if task == "forecasting" else []
    arena_bytes = _arena_bytes(config, task, streamable, rope)

    defines = {
        "D": d, "HEADS": heads, "HEAD_DIM": head_dim, "FF": config.d_ff, "LAYERS": layers,
        "MAX_LEN": config.max_len, "ROW_BLOCK": ROW_BLOCK, "PADDED_LEN": _padded(config.max_len),
        "STRIDE(n)": "(((n) + ROW_BLOCK - 1) / ROW_BLOCK * ROW_BLOCK)", "IN_CH": config.in_channels,
        "NET_OUT": config.out_dim,
        "CACHE": max(config.max_len - 1, 1),
        "QUERY_ROWS": 1 if config.attention == "step_t" else config.max_len,
        "STEP_T_SELF": int(config.step_t_self), "FIXED_LENGTH": int(config.needs_fixed_length),
        "HEAD_RELU": int(config.head_activation == "relu"),
        **_modes("ATTENTION", ATTENTION_CODES, config.attention), **_modes("NORM", NORM_CODES, config.norm),
        **_modes("POSITIONS", POSITION_CODES, config.pos_encoding),
        **_modes("FORM", FORM_CODES, weight_form), "INDEX_T": index_type, **_modes("TASK", TASK_CODES, task),
        "HAS_THRESHOLD": int(threshold is not None), "STREAMABLE": int(streamable),
        "TARGET_CHANGE": int(formulation.target == "change"),
        "INPUT_NORM_WINDOW": int(formulation.input_norm == "window"),
        "EMBEDDING": embedding, "HEAD": head, **_modes("LINEAR_PATH", PATH_CODES, config.linear_path), **path,
        "EMBED_SCALE": _float(math.sqrt(d)), "ATTENTION_SCALE": _float(1.0 / math.sqrt(head_dim)),
        "NORM_EPS": _float(NORM_EPS), "WINDOW_NORM_EPS": _float(WINDOW_NORM_EPS),
    }
    sizes = dict(consts.sizes, arena_bytes=arena_bytes,
                 constant_bytes=consts.sizes["linear_weight_bytes"] + consts.sizes["other_constant_bytes"])
    horizon = formulation.horizon if task == "forecasting" else None
    header = _header(artifact, task, weight_form, out_dim, threshold, names, streamable, sizes, horizon)
    engine = resources.files("sbts.export").joinpath("c_engine.c").read_text(encoding="utf-8")
    source = "\n".join([
        f"/* {SOURCE}: generated by sbts {__version__}; see {HEADER}. C99, no malloc, libm only. */",
        "#include <math.h>", "#include <stdint.h>", "#include <string.h>", f'#include "{HEADER}"', "",
        *(f"#define {key} {value}" for key, value in defines.items()), "",
        "".join(consts.arrays),
    ]) + _tables(consts, layer_rows, norm_rows, mask_rows, table, task, names, engine)
    return CSource(header, source, weight_form, sizes)


def _modes(prefix: str, codes: dict[str, int], chosen: str) -> dict[str, int]:
    """PREFIX_NAME for every mode of a table, and PREFIX, the model's."""
    return {**{f"{prefix}_{name.upper()}": code for name, code in codes.items()}, prefix: codes[chosen]}


def _tables(consts: _Constants, layer_rows: list[str], norm_rows: list[str], mask_rows: list[str], table: str,
            task: str, names: list[str], engine: str) -> str:
    """The engine, with the descriptor tables in place of its marker (after its type definitions)."""
    tables = "\n".join([
        "static const linear_t LINEARS[] = {\n    " + ",\n    ".join(consts.linears) + "\n};",
        "static const layer_t LAYER_LINEARS[LAYERS] = {\n    " + ",\n    ".join(layer_rows) + "\n};",
        "static const norms_t NORMS[LAYERS] = {\n    " + ",\n    ".join(norm_rows) + "\n};",
        ("static const masks_t MASKS[LAYERS] = {\n    " + ",\n    ".join(mask_rows) + "\n};") if mask_rows else "",
        f"static const float *const TABLE = {table};",
        (f"const char *const sbts_{_names_array(task)} = {{" + ", ".join(_c_string(n) for n in names) + "};")
        if names else "",
    ])
    return engine.replace(TABLES_MARKER, tables)


def _names_array(task: str) -> str:
    """The names' array and its size: one per class logit, or one per variable of a forecast."""
    return "class_names[SBTS_OUT_DIM]" if task == "classification" else "column_names[SBTS_IN_CHANNELS]"


def _padded(length: int) -> int:
    return -(-length // ROW_BLOCK) * ROW_BLOCK


def _arena_bytes(config, task: str, streamable: bool, rope: bool) -> int:
    """sizeof the engine's arena struct: a uint64 step, then float buffers (see c_engine.c), 8-byte aligned."""
    length, d, half = config.max_len, config.d_model, (config.d_model // config.n_heads) // 2
    padded = _padded(length)
    query_rows = 1 if config.attention == "step_t" else length
    floats = (config.in_channels * padded + 5 * d * padded + config.d_ff * padded + query_rows * length
              + (2 * length * half if rope else 0) + 2 * config.n_layers * d + d + config.out_dim
              + 3 * config.in_channels)
    if streamable:
        floats += 2 * config.n_layers * d * 2 * (length - 1)
    if config.linear_path == "joint":  # the window, variable-major (one contiguous input)
        floats += config.in_channels * length
    if config.has_linear_path:  # the path's outputs
        floats += config.out_dim
    return DOUBLE_BYTES + -(-floats * FLOAT_BYTES // DOUBLE_BYTES) * DOUBLE_BYTES


COMMENT_WIDTH = 110


def _comment(text: str) -> str:
    """A C block comment of ``text``, wrapped."""
    return "/* " + "\n   ".join(textwrap.wrap(text, COMMENT_WIDTH)) + " */"


def _header(artifact: Artifact, task: str, weight_form: str, out_dim: int, threshold: float | None,
            names: list[str], streamable: bool, sizes: dict[str, int], horizon: int | None) -> str:
    config = artifact.config
    kind = "sparse-binary" if any(e.get("kind") == "sparse_binary_linear"
                                  for e in artifact.document["layers"].values()) else "dense"
    shortest = 2 if config.attention == "step_t" and not config.step_t_self else 1  # Step-T needs a past step
    lengths = ("at least 1" if task != "classification" else "exactly SBTS_MAX_LEN" if config.needs_fixed_length
               else f"{shortest} to SBTS_MAX_LEN")
    forward_doc = {
        "classification": (f"x: n_steps x SBTS_IN_CHANNELS raw values, row-major, n_steps {lengths}; "
                           "out: SBTS_OUT_DIM class logits (the per-step logits averaged over the steps); the "
                           "predicted class is the largest, named in sbts_class_names."),
        "anomaly": ("x: the newest n_steps >= 1 raw rows (n_steps x SBTS_IN_CHANNELS, row-major, oldest first); "
                    "the last SBTS_WINDOW are read (fewer: the oldest row given stands in for the missing ones). "
                    "out[0]: the anomaly score of the newest row (mean squared reconstruction error, higher is more "
                    "anomalous)" + ("; out[1]: 1.0f if the score exceeds SBTS_THRESHOLD, else 0.0f." if threshold
                                    is not None else "; this detector carries no threshold.")),
        "forecasting": ("x: the newest n_steps >= 1 observed raw rows (n_steps x SBTS_IN_CHANNELS, row-major, oldest "
                        "first); the last SBTS_WINDOW - 1 are read (fewer: the oldest row given stands in for the "
                        "missing ones). out: the forecasts of the next SBTS_HORIZON steps, SBTS_OUT_DIM = "
                        "SBTS_HORIZON x SBTS_IN_CHANNELS values in the data's units, step first: out[k * "
                        "SBTS_IN_CHANNELS + c] is variable c (named in sbts_column_names) k + 1 steps ahead."),
    }[task]
    about = (f"{HEADER}: an sbts {task} model in C99, generated by sbts {__version__}. Network: {kind}, d_model "
             f"{config.d_model}, {config.n_layers} layers, {config.attention} attention, norm {config.norm}, positions "
             f"{config.pos_encoding}. Weights in flash: {weight_form}: {WEIGHT_FORMS[weight_form]}. Constants "
             f"{sizes['constant_bytes']} bytes (linear weights {sizes['linear_weight_bytes']}, other "
             f"{sizes['other_constant_bytes']}); working memory: one static arena of SBTS_ARENA_BYTES. Not reentrant: "
             "one model state per program (the arena); calls must not overlap.")
    lines = [
        _comment(about),
        "#ifndef SBTS_H", "#define SBTS_H", "", "#include <stdint.h>", "",
        f"#define SBTS_IN_CHANNELS {config.in_channels}",
        f"#define SBTS_OUT_DIM {out_dim}",
        f"#define SBTS_MAX_LEN {config.max_len}",
        *( [f"#define SBTS_WINDOW {config.max_len}"] if task != "classification" else []),
        *( [f"#define SBTS_HORIZON {horizon}"] if horizon is not None else []),
        f"#define SBTS_ARENA_BYTES {sizes['arena_bytes']}",
        *( [f"#define SBTS_THRESHOLD {float(threshold)!r}"] if threshold is not None else []),
        f"#define SBTS_STREAMABLE {int(streamable)}",
        "#define SBTS_OK 0",
        f"#define SBTS_BAD_LENGTH 1  /* n_steps outside what the model takes ({lengths}) */",
        "#define SBTS_NOT_FINITE 2  /* a NaN or infinite input (or one that scales to it); nothing is written */",
        "",
        "/* Start (or start again): forgets a stream's history. */",
        "void sbts_init(void);",
        "",
        _comment(forward_doc + " Returns SBTS_OK, SBTS_BAD_LENGTH or SBTS_NOT_FINITE."),
        "int sbts_forward(const float *x, int n_steps, float *out);",
    ]
    if streamable:
        stream_doc = ("the score (and decision) of the newest row, as sbts_forward on the stream so far"
                      if task == "anomaly" else "the forecasts of the SBTS_HORIZON steps after it (laid out as "
                      "sbts_forward's), as sbts_forward on the stream so far")
        lines += ["", _comment("One observation at a time, at the cost of one step: x_t holds SBTS_IN_CHANNELS raw "
                               f"values; out gets {stream_doc}. The keys and values of the last SBTS_WINDOW - 1 "
                               "steps stay in the arena. A bad row returns SBTS_NOT_FINITE and changes nothing. "
                               "sbts_stream_reset() starts a new stream."),
                  "void sbts_stream_reset(void);", "int sbts_stream_update(const float *x_t, float *out);"]
    if names:
        lines += ["", f"extern const char *const sbts_{_names_array(task)};"]
    lines += ["", "/* Element `index` of the SplitMix64 stream of `seed` (sbts.frozen_tensors): the weights' signs. */",
              "uint64_t sbts_splitmix64(uint64_t seed, uint64_t index);", "", "#endif", ""]
    return "\n".join(lines)
