"""C99 source of a network, for machines without Python (first part of wave 2, step 3: the network only).

``c_network_source(artifact)`` turns a verified ``.sbts`` artifact into a header and a source file that
compute the network's per-step outputs for one window of up to ``SBTS_MAX_LEN`` steps, with the numbers of
``sbts.runtime.network.forward`` (to float32 rounding):

- a sparse-binary linear keeps 2 bits per weight (0, +alpha, -alpha) and its alpha, in ``const`` arrays
  (flash); a dense linear, the norms and tables keep float32;
- all working memory is one static arena (``SBTS_ARENA_BYTES``), no malloc; libm's ``expf`` and ``sqrtf`` only;
- ``int sbts_forward(const float *x, int n_steps, float *out)`` takes scaled inputs, row-major steps x
  channels, and writes n_steps x SBTS_OUT_DIM outputs; it returns 0, or ``SBTS_BAD_LENGTH`` /
  ``SBTS_NOT_FINITE`` for a length it cannot take or a non-finite input, writing nothing then.

Task heads (input scaling, pooling, scores, thresholds, forecasts), streaming and the command line are not
here yet.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from sbts.config import ModelConfig
from sbts.frozen_tensors import rotary_tables
from sbts.layers.kinds import NORM_EPS
from sbts.runtime.artifact import Artifact, network_tensors

CODES_PER_BYTE = 4  # 2-bit ternary codes: 0 zero, 1 +alpha, 2 -alpha
FLOAT_BYTES = 4
VALUES_PER_LINE = 8


def _floats(name: str, values: np.ndarray) -> str:
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    items = [f"{float(v)!r}f" if np.isfinite(v) else "0.0f" for v in flat.tolist()]
    lines = [", ".join(items[i:i + VALUES_PER_LINE]) for i in range(0, len(items), VALUES_PER_LINE)]
    return f"static const float {name}[{max(len(flat), 1)}] = {{\n    " + ",\n    ".join(lines or ["0.0f"]) + "\n};\n"


def _codes(name: str, weight: np.ndarray) -> tuple[str, float]:
    """The 2-bit codes of a ternary weight {-alpha, 0, +alpha} and its alpha."""
    flat = np.asarray(weight, dtype=np.float32).reshape(-1)
    alpha = float(np.abs(flat).max()) if flat.size else 0.0
    codes = np.where(flat > 0, 1, np.where(flat < 0, 2, 0)).astype(np.uint8)
    padded = np.concatenate([codes, np.zeros(-len(codes) % CODES_PER_BYTE, np.uint8)]).reshape(-1, CODES_PER_BYTE)
    packed = (padded * (4 ** np.arange(CODES_PER_BYTE, dtype=np.uint8))).sum(axis=1).astype(np.uint8)
    lines = [", ".join(str(int(b)) for b in packed[i:i + 16]) for i in range(0, len(packed), 16)]
    return (f"static const unsigned char {name}[{max(len(packed), 1)}] = {{\n    "
            + ",\n    ".join(lines or ["0"]) + "\n};\n"), alpha


def _cname(name: str) -> str:
    return "w_" + name.replace(".", "_")


class _Source:
    """The constant arrays and the linear descriptors, collected while walking the network."""

    def __init__(self, config: ModelConfig, tensors: Mapping[str, np.ndarray], ternary: set[str]):
        self.config, self.tensors, self.ternary = config, tensors, ternary
        self.arrays: list[str] = []
        self.linears: list[str] = []
        self.weight_bytes = 0  # every constant array
        self.linear_weight_bytes = 0  # the linears' weights alone (codes and alphas, or floats)

    def floats(self, name: str, values: np.ndarray) -> str:
        cname = _cname(name)
        self.arrays.append(_floats(cname, values))
        self.weight_bytes += FLOAT_BYTES * int(np.size(values))
        return cname

    def linear(self, name: str) -> int:
        """The index of the linear ``name`` in the descriptor table."""
        weight = self.tensors[f"{name}.weight"]
        out_features, in_features = weight.shape
        bias = self.floats(f"{name}.bias", self.tensors[f"{name}.bias"]) if f"{name}.bias" in self.tensors else "0"
        if name in self.ternary:
            text, alpha = _codes(_cname(name) + "_codes", weight)
            self.arrays.append(text)
            stored = -(-weight.size // CODES_PER_BYTE) + FLOAT_BYTES
            self.weight_bytes += stored
            self.linear_weight_bytes += stored
            entry = f"{{{in_features}, {out_features}, {_cname(name)}_codes, {alpha!r}f, 0, {bias}}}"
        else:
            entry = f"{{{in_features}, {out_features}, 0, 0.0f, {self.floats(name + '.weight', weight)}, {bias}}}"
            self.linear_weight_bytes += FLOAT_BYTES * weight.size
        self.linears.append(entry)
        return len(self.linears) - 1


def c_network_source(artifact: Artifact, prefix: str = "sbts") -> tuple[str, str, dict[str, int]]:
    """The header and the source of the artifact's network, and the sizes the export reports."""
    config = artifact.config
    tensors = network_tensors(artifact)
    ternary = {name for name, entry in artifact.document["layers"].items() if entry["kind"] == "sparse_binary_linear"}
    src = _Source(config, tensors, ternary)
    d, heads, layers = config.d_model, config.n_heads, config.n_layers
    head_dim = d // heads
    embedding, head = src.linear("embedding"), None
    layer_linears = []
    norms = []
    for i in range(layers):
        name = f"layers.{i}"
        layer_linears.append([src.linear(f"{name}.attention.{p}") for p in ("q_proj", "k_proj", "v_proj", "out_proj")]
                             + [src.linear(f"{name}.ff1"), src.linear(f"{name}.ff2")])
        pair = []
        for which in ("norm1", "norm2"):
            key = f"{name}.{which}"
            if config.norm == "batch":
                scale = tensors[f"{key}.weight"] / np.sqrt(tensors[f"{key}.running_var"] + np.float32(NORM_EPS))
                shift = tensors[f"{key}.bias"] - tensors[f"{key}.running_mean"] * scale
                pair.append((src.floats(key + ".scale", scale), src.floats(key + ".shift", shift)))
            elif config.norm in ("layer", "layer_time"):
                pair.append((src.floats(key + ".weight", tensors[f"{key}.weight"]),
                             src.floats(key + ".bias", tensors[f"{key}.bias"])))
            else:
                pair.append(("0", "0"))
        norms.append(pair)
        if config.attention == "qkv_mask":
            for which in ("q", "k", "v"):
                src.floats(f"{name}.attention.{which}_mask", tensors[f"{name}.attention.{which}_mask"])
    head = src.linear("head")
    table = src.floats("positional.table", tensors["positional.table"]) if "positional.table" in tensors else "0"
    if config.pos_encoding == "rope":
        cos, sin = rotary_tables(config.max_len, head_dim)
        rope = (src.floats("rotary.cos", cos), src.floats("rotary.sin", sin))
    else:
        rope = ("0", "0")
    ff = config.d_ff
    arena_floats = config.max_len * (6 * d + ff) + config.max_len
    upper = prefix.upper()
    kind = "sparse-binary" if ternary else "dense"
    header = f"""/* {prefix}.h: the network of an sbts model ({kind}, {config.attention} attention,
   norm {config.norm}, positions {config.pos_encoding}), generated by sbts. Weights in flash: {src.weight_bytes} bytes
   (sparse-binary linears as 2-bit ternary codes and one alpha each, other tensors float32). */
#ifndef {upper}_H
#define {upper}_H

#define {upper}_IN_CHANNELS {config.in_channels}
#define {upper}_OUT_DIM {config.out_dim}
#define {upper}_MAX_LEN {config.max_len}
#define {upper}_ARENA_BYTES {arena_floats * FLOAT_BYTES}
#define {upper}_BAD_LENGTH 1
#define {upper}_NOT_FINITE 2

/* Per-step outputs (n_steps x {upper}_OUT_DIM, row-major) of one window of scaled inputs (n_steps x
   {upper}_IN_CHANNELS, row-major). Returns 0, {upper}_BAD_LENGTH or {upper}_NOT_FINITE (and writes nothing). */
int {prefix}_forward(const float *x, int n_steps, float *out);

#endif
"""
    linear_table = ",\n    ".join(src.linears)
    norm_rows = ",\n    ".join(f"{{{a}, {b}, {c}, {e}}}" for (a, b), (c, e) in norms)
    layer_rows = ",\n    ".join("{" + ", ".join(map(str, row)) + "}" for row in layer_linears)
    masks = ",\n    ".join("{" + ", ".join(f"w_layers_{i}_attention_{which}_mask" for which in "qkv") + "}"
                           for i in range(layers)) if config.attention == "qkv_mask" else "{0, 0, 0}"
    fixed = "1" if config.needs_fixed_length else "0"
    context_self = "1" if config.step_t_self else "0"
    attention_mode = {"full": 0, "step_t": 1, "qkv_mask": 2}[config.attention]
    norm_mode = {"none": 0, "batch": 1, "layer_time": 2, "layer": 3}[config.norm]
    source = f"""/* {prefix}.c: generated by sbts; see {prefix}.h. C99, no malloc, libm only. */
#include <math.h>
#include "{prefix}.h"

#define D {d}
#define HEADS {heads}
#define HEAD_DIM {head_dim}
#define FF {ff}
#define LAYERS {layers}
#define MAX_LEN {config.max_len}
#define EPS {NORM_EPS!r}f
#define EMBED_SCALE {math.sqrt(d)!r}f

typedef struct {{ int in, out; const unsigned char *codes; float alpha; const float *w; const float *bias; }} linear_t;
typedef struct {{ const float *a1, *b1, *a2, *b2; }} norms_t;
typedef struct {{ const float *q, *k, *v; }} masks_t;

{''.join(src.arrays)}
static const linear_t LINEARS[] = {{
    {linear_table}
}};
static const int LAYER_LINEARS[LAYERS][6] = {{
    {layer_rows}
}};
static const norms_t NORMS[LAYERS] = {{
    {norm_rows}
}};
static const masks_t MASKS[] = {{
    {masks}
}};
static const float *const TABLE = {table};
static const float *const ROPE_COS = {rope[0]};
static const float *const ROPE_SIN = {rope[1]};

static float arena[{arena_floats}];

/* y (rows x out) = x (rows x in) W^T + b; a ternary W adds or subtracts each kept input, then scales by alpha. */
static void linear(const linear_t *l, const float *x, float *y, int rows)
{{
    int r, o, i;
    for (r = 0; r < rows; ++r) {{
        const float *xr = x + r * l->in;
        for (o = 0; o < l->out; ++o) {{
            float acc = 0.0f;
            if (l->codes) {{
                long base = (long)o * l->in;
                for (i = 0; i < l->in; ++i) {{
                    long at = base + i;
                    int code = (l->codes[at >> 2] >> ((at & 3) * 2)) & 3;
                    if (code == 1) acc += xr[i]; else if (code == 2) acc -= xr[i];
                }}
                acc *= l->alpha;
            }} else {{
                const float *w = l->w + (long)o * l->in;
                for (i = 0; i < l->in; ++i) acc += w[i] * xr[i];
            }}
            y[r * l->out + o] = acc + (l->bias ? l->bias[o] : 0.0f);
        }}
    }}
}}

/* RoPE: turn the channel pairs of every head of row x by position pos (an odd head's last channel stays). */
static void rotate(float *x, int pos)
{{
    int h, p;
    for (h = 0; h < HEADS; ++h)
        for (p = 0; p < HEAD_DIM / 2; ++p) {{
            float c = ROPE_COS[pos * (HEAD_DIM / 2) + p], s = ROPE_SIN[pos * (HEAD_DIM / 2) + p];
            float *e = x + h * HEAD_DIM + 2 * p;
            float a = e[0], b = e[1];
            e[0] = a * c - b * s;
            e[1] = a * s + b * c;
        }}
}}

/* Row q of one head against keys 0..n_keys-1: the softmax-weighted sum of their values into out. */
static void attend_row(const float *q, const float *k, const float *v, int n_keys, float *scores, float *out)
{{
    int h, j, c;
    for (h = 0; h < HEADS; ++h) {{
        float top = -INFINITY, total = 0.0f;
        for (j = 0; j < n_keys; ++j) {{
            float s = 0.0f;
            for (c = 0; c < HEAD_DIM; ++c) s += q[h * HEAD_DIM + c] * k[j * D + h * HEAD_DIM + c];
            scores[j] = s * (1.0f / sqrtf((float)HEAD_DIM));
            if (scores[j] > top) top = scores[j];
        }}
        for (j = 0; j < n_keys; ++j) {{ scores[j] = expf(scores[j] - top); total += scores[j]; }}
        for (c = 0; c < HEAD_DIM; ++c) {{
            float acc = 0.0f;
            for (j = 0; j < n_keys; ++j) acc += scores[j] * v[j * D + h * HEAD_DIM + c];
            out[h * HEAD_DIM + c] = acc / total;
        }}
    }}
}}

/* n values x[0], x[stride], ... standardised, then scaled and shifted by a[j] and b[j]. */
static void standardise(float *x, int n, int stride, const float *a, const float *b)
{{
    int j;
    float mean = 0.0f, var = 0.0f;
    for (j = 0; j < n; ++j) mean += x[j * stride];
    mean /= (float)n;
    for (j = 0; j < n; ++j) {{ float z = x[j * stride] - mean; var += z * z; }}
    var /= (float)n;
    for (j = 0; j < n; ++j) x[j * stride] = (x[j * stride] - mean) / sqrtf(var + EPS) * a[j] + b[j];
}}

static void norm(int mode, const float *a, const float *b, float *h, int n)
{{
    int t, c;
    if (mode == 1) {{  /* batch norm in eval mode: scale and shift per channel */
        for (t = 0; t < n; ++t) for (c = 0; c < D; ++c) h[t * D + c] = h[t * D + c] * a[c] + b[c];
    }} else if (mode == 2) {{  /* every channel over the window's steps; weight and bias per step */
        for (c = 0; c < D; ++c) standardise(h + c, n, D, a, b);
    }} else if (mode == 3) {{  /* the features of every step */
        for (t = 0; t < n; ++t) standardise(h + t * D, D, 1, a, b);
    }}
}}

int {prefix}_forward(const float *x, int n_steps, float *out);

#endif
"""
    linear_table = ",\n    ".join(src.linears)
    norm_rows = ",\n    ".join(f"{{{a}, {b}, {c}, {e}}}" for (a, b), (c, e) in norms)
    layer_rows = ",\n    ".join("{" + ", ".join(map(str, row)) + "}" for row in layer_linears)
    masks = ",\n    ".join("{" + ", ".join(f"w_layers_{i}_attention_{which}_mask" for which in "qkv") + "}"
                           for i in range(layers)) if config.attention == "qkv_mask" else "{0, 0, 0}"
    fixed = "1" if config.needs_fixed_length else "0"
    context_self = "1" if config.step_t_self else "0"
    attention_mode = {"full": 0, "step_t": 1, "qkv_mask": 2}[config.attention]
    norm_mode = {"none": 0, "batch": 1, "layer_time": 2, "layer": 3}[config.norm]
    source = f"""/* {prefix}.c: generated by sbts; see {prefix}.h. C99, no malloc, libm only. */
#include <math.h>
#include "{prefix}.h"

#define D {d}
#define HEADS {heads}
#define HEAD_DIM {head_dim}
#define FF {ff}
#define LAYERS {layers}
#define MAX_LEN {config.max_len}
#define EPS {NORM_EPS!r}f
#define EMBED_SCALE {math.sqrt(d)!r}f

typedef struct {{ int in, out; const unsigned char *codes; float alpha; const float *w; const float *bias; }} linear_t;
typedef struct {{ const float *a1, *b1, *a2, *b2; }} norms_t;
typedef struct {{ const float *q, *k, *v; }} masks_t;

{''.join(src.arrays)}
static const linear_t LINEARS[] = {{
    {linear_table}
}};
static const int LAYER_LINEARS[LAYERS][6] = {{
    {layer_rows}
}};
static const norms_t NORMS[LAYERS] = {{
    {norm_rows}
}};
static const masks_t MASKS[] = {{
    {masks}
}};
static const float *const TABLE = {table};
static const float *const ROPE_COS = {rope[0]};
static const float *const ROPE_SIN = {rope[1]};

static float arena[{arena_floats}];

/* y (rows x out) = x (rows x in) W^T + b; a ternary W adds or subtracts each kept input, then scales by alpha. */
static void linear(const linear_t *l, const float *x, float *y, int rows)
{{
    int r, o, i;
    for (r = 0; r < rows; ++r) {{
        const float *xr = x + r * l->in;
        for (o = 0; o < l->out; ++o) {{
            float acc = 0.0f;
            if (l->codes) {{
                long base = (long)o * l->in;
                for (i = 0; i < l->in; ++i) {{
                    long at = base + i;
                    int code = (l->codes[at >> 2] >> ((at & 3) * 2)) & 3;
                    if (code == 1) acc += xr[i]; else if (code == 2) acc -= xr[i];
                }}
                acc *= l->alpha;
            }} else {{
                const float *w = l->w + (long)o * l->in;
                for (i = 0; i < l->in; ++i) acc += w[i] * xr[i];
            }}
            y[r * l->out + o] = acc + (l->bias ? l->bias[o] : 0.0f);
        }}
    }}
}}

/* RoPE: turn the channel pairs of every head of row x by position pos (an odd head's last channel stays). */
static void rotate(float *x, int pos)
{{
    int h, p;
    for (h = 0; h < HEADS; ++h)
        for (p = 0; p < HEAD_DIM / 2; ++p) {{
            float c = ROPE_COS[pos * (HEAD_DIM / 2) + p], s = ROPE_SIN[pos * (HEAD_DIM / 2) + p];
            float *e = x + h * HEAD_DIM + 2 * p;
            float a = e[0], b = e[1];
            e[0] = a * c - b * s;
            e[1] = a * s + b * c;
        }}
}}

/* Row q of one head against keys 0..n_keys-1: the softmax-weighted sum of their values into out. */
static void attend_row(const float *q, const float *k, const float *v, int n_keys, float *scores, float *out)
{{
    int h, j, c;
    for (h = 0; h < HEADS; ++h) {{
        float top = -INFINITY, total = 0.0f;
        for (j = 0; j < n_keys; ++j) {{
            float s = 0.0f;
            for (c = 0; c < HEAD_DIM; ++c) s += q[h * HEAD_DIM + c] * k[j * D + h * HEAD_DIM + c];
            scores[j] = s * (1.0f / sqrtf((float)HEAD_DIM));
            if (scores[j] > top) top = scores[j];
        }}
        for (j = 0; j < n_keys; ++j) {{ scores[j] = expf(scores[j] - top); total += scores[j]; }}
        for (c = 0; c < HEAD_DIM; ++c) {{
            float acc = 0.0f;
            for (j = 0; j < n_keys; ++j) acc += scores[j] * v[j * D + h * HEAD_DIM + c];
            out[h * HEAD_DIM + c] = acc / total;
        }}
    }}
}}

static void norm(int mode, const float *a, const float *b, float *h, int n)
{{
    int t, c;
    if (mode == 1) {{
        for (t = 0; t < n; ++t) for (c = 0; c < D; ++c) h[t * D + c] = h[t * D + c] * a[c] + b[c];
    }} else if (mode == 2) {{ /* every channel over the window's steps; weight and bias per step */
        for (c = 0; c < D; ++c) {{
            float mean = 0.0f, var = 0.0f;
            for (t = 0; t < n; ++t) mean += h[t * D + c];
            mean /= (float)n;
            for (t = 0; t < n; ++t) {{ float z = h[t * D + c] - mean; var += z * z; }}
            var /= (float)n;
            for (t = 0; t < n; ++t) h[t * D + c] = (h[t * D + c] - mean) / sqrtf(var + EPS) * a[t] + b[t];
        }}
    }} else if (mode == 3) {{ /* the features of every step */
        for (t = 0; t < n; ++t) {{
            float mean = 0.0f, var = 0.0f;
            for (c = 0; c < D; ++c) mean += h[t * D + c];
            mean /= (float)D;
            for (c = 0; c < D; ++c) {{ float z = h[t * D + c] - mean; var += z * z; }}
            var /= (float)D;
            for (c = 0; c < D; ++c) h[t * D + c] = (h[t * D + c] - mean) / sqrtf(var + EPS) * a[c] + b[c];
        }}
    }}
}}

int {prefix}_forward(const float *x, int n_steps, float *out)
{{
    float *h = arena, *q = h + MAX_LEN * D, *k = q + MAX_LEN * D, *v = k + MAX_LEN * D;
    float *mixed = v + MAX_LEN * D, *tmp = mixed + MAX_LEN * D, *ff = tmp + MAX_LEN * D, *scores = ff + MAX_LEN * FF;
    int t, c, l, i;
    if (n_steps < 1 || n_steps > MAX_LEN || ({fixed} && n_steps != MAX_LEN)
        || ({attention_mode} == 1 && !{context_self} && n_steps < 2))
        return {upper}_BAD_LENGTH;
    for (i = 0; i < n_steps * {config.in_channels}; ++i)
        if (!(x[i] - x[i] == 0.0f)) return {upper}_NOT_FINITE;  /* NaN and infinities fail x - x == 0 */
    linear(&LINEARS[{embedding}], x, h, n_steps);
    for (i = 0; i < n_steps * D; ++i) h[i] = h[i] * EMBED_SCALE + (TABLE ? TABLE[i] : 0.0f);
    for (l = 0; l < LAYERS; ++l) {{
        const int *ids = LAYER_LINEARS[l];
        linear(&LINEARS[ids[0]], h, q, n_steps);
        linear(&LINEARS[ids[1]], h, k, n_steps);
        linear(&LINEARS[ids[2]], h, v, n_steps);
        if ({attention_mode} == 2)
            for (i = 0; i < n_steps * D; ++i) {{ q[i] *= MASKS[l].q[i]; k[i] *= MASKS[l].k[i]; v[i] *= MASKS[l].v[i]; }}
        if (ROPE_COS)
            for (t = 0; t < n_steps; ++t) {{ rotate(q + t * D, t); rotate(k + t * D, t); }}
        if ({attention_mode} == 1) {{ /* past steps are their own values; the last step attends to the past */
            int last = n_steps - 1;
            for (t = 0; t < last; ++t) for (c = 0; c < D; ++c) mixed[t * D + c] = v[t * D + c];
            attend_row(q + last * D, k, v, {context_self} ? n_steps : last, scores, mixed + last * D);
        }} else {{
            for (t = 0; t < n_steps; ++t) attend_row(q + t * D, k, v, n_steps, scores, mixed + t * D);
        }}
        linear(&LINEARS[ids[3]], mixed, tmp, n_steps);
        for (i = 0; i < n_steps * D; ++i) h[i] += tmp[i];
        norm({norm_mode}, NORMS[l].a1, NORMS[l].b1, h, n_steps);
        linear(&LINEARS[ids[4]], h, ff, n_steps);
        for (i = 0; i < n_steps * FF; ++i) if (ff[i] < 0.0f) ff[i] = 0.0f;
        linear(&LINEARS[ids[5]], ff, tmp, n_steps);
        for (i = 0; i < n_steps * D; ++i) h[i] += tmp[i];
        norm({norm_mode}, NORMS[l].a2, NORMS[l].b2, h, n_steps);
    }}
    for (i = 0; i < n_steps * D; ++i) if (h[i] < 0.0f) h[i] = 0.0f;
    linear(&LINEARS[{head}], h, out, n_steps);
    return 0;
}}
"""
    return header, source, {"weight_bytes": src.weight_bytes, "linear_weight_bytes": src.linear_weight_bytes,
                            "arena_bytes": arena_floats * FLOAT_BYTES}
