"""Two accountings of a model's storage and FLOPs, both read from the layers' own declarations.

- ``paper``: the official code's rules (paper-spec §6.1, §6.2), reproduced exactly, quirks included:
  a sparse-binary weight position costs 1 bit (mask, alpha and biases are free), a dense parameter
  32 bits (a learnable positional table counts its 1024 allocated rows), norms in a sparse model
  count their gains only (and a LayerNorm counts as the official 50%-masked 1-bit "SubnetLayerNorm");
  FLOPs are per-sample multiply-accumulates with Q, K and V at all w positions but every other
  linear at ONE position, times the density (truncated per layer) for sparse-binary linears, plus the official
  formulas for the attention core (full, Step-T, Q/K/V mask), LayerNorm and the sinusoidal table.
- ``honest``: what a deployment of sbts stores and computes. Every tensor the runtime needs is
  counted at the bits it is stored with (mask 1 bit per position, alpha, seed, norm gains, biases and
  running statistics, a learnable table's real rows, the input scaler), and FLOPs are the
  multiply-accumulates the torch-free runtime actually executes, counted by the runtime itself:
  linears at every position they are computed at, the keys and values of all steps under Step-T,
  no saving from zero weights or from the Q/K/V masks (the runtime multiplies dense ternary
  matrices). ``flops_nonzero`` adds what a sparse kernel could save, labelled theoretical.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from sbts.config import ModelConfig
from sbts.layers.storage import FLOAT_BITS, LayerStorage

ACCOUNTINGS = ("paper", "honest")
PAPER_LEARNABLE_TABLE_ROWS = 1024  # the official dense model allocates 1024 positions whatever the window
PAPER_LAYER_NORM_DENSITY = 0.5  # the official SubnetLayerNorm keeps half of its gains
QKV_PROJECTIONS = ("q_proj", "k_proj", "v_proj")
SCALER_BITS = 64  # the artifact keeps the training statistics in float64, as training applied them


@dataclass
class LayerCount:
    """One row of a summary: a layer's counts under one accounting."""

    name: str
    kind: str
    shape: tuple[int, ...]
    positions: int = 0
    kept: int = 0
    params: int = 0
    nonzero: int = 0
    bits: int = 0
    flops: float = 0

    @property
    def density(self) -> float | None:
        return self.kept / self.positions if self.positions else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, without the name (the summary keys rows by name)."""
        fields = {key: value for key, value in asdict(self).items() if key != "name"}
        return {**fields, "shape": list(self.shape), "density": self.density}


@dataclass
class ModelCount:
    """A model's rows and totals under one accounting."""

    accounting: str
    layers: list[LayerCount]
    extra: dict[str, Any] = field(default_factory=dict)

    def total(self, key: str) -> float:
        return sum(getattr(row, key) for row in self.layers)

    def totals(self) -> dict[str, Any]:
        totals = {key: self.total(key) for key in ("params", "nonzero", "bits", "flops")}
        totals["flops"] = _exact(totals["flops"])
        return {**totals, **self.extra}


def _exact(value: float) -> int | float:
    """An integer when the count is whole (the paper's density products usually are)."""
    return int(round(value)) if abs(value - round(value)) < 1e-6 else value


# --- paper rules (paper-spec §6.1, §6.2) -----------------------------------------------------------

def _trained(st: LayerStorage) -> int:
    """The dense counter's rule: every trained parameter (PyTorch's ``named_parameters``)."""
    return sum(t.count for t in st.tensors if t.trainable)


def _paper_linear(name: str, st: LayerStorage, config: ModelConfig, sparse_model: bool) -> LayerCount:
    out_features, in_features = st.shape
    positions = config.max_len if name.rsplit(".", 1)[-1] in QKV_PROJECTIONS else 1
    dense_flops = in_features * out_features * positions
    row = LayerCount(name, st.kind, st.shape, positions=st.positions, kept=st.kept)
    if st.kind == "sparse_binary_linear":
        # The official counters use the configured kept fraction k, truncated per layer: int(k * n)
        # non-zeros and int(k * dense FLOPs), whatever the mask actually keeps.
        row.params, row.nonzero, row.bits = st.positions, int(config.density * st.positions), st.positions
        row.flops = int(config.density * dense_flops)
    else:
        row.params = st.positions + _trained(st)
        row.nonzero, row.bits, row.flops = row.params, FLOAT_BITS * row.params, dense_flops
    return row


def _paper_norm(name: str, st: LayerStorage, config: ModelConfig, sparse_model: bool) -> LayerCount:
    row = LayerCount(name, st.kind, st.shape)
    gains = st.tensor("weight").count
    if st.kind == "layer_time_norm":
        values = config.d_model * config.max_len
        if sparse_model:  # counted as the official SubnetLayerNorm: 1 bit per gain, half of them kept
            row.params, row.nonzero, row.bits = gains, int(PAPER_LAYER_NORM_DENSITY * gains), gains
            row.flops = PAPER_LAYER_NORM_DENSITY * values
        else:
            row.params = _trained(st)
            row.flops = 2 * values
    elif sparse_model:  # batch norm in a sparse model: the gain only
        row.params = gains
    else:
        row.params = _trained(st)
    if not row.bits:
        row.nonzero, row.bits = row.params, FLOAT_BITS * row.params
    return row


def _paper_positional(name: str, st: LayerStorage, config: ModelConfig, sparse_model: bool) -> LayerCount:
    row = LayerCount(name, st.kind, st.shape)
    if st.kind == "positional_sinusoidal":
        row.flops = config.max_len * config.d_model
    elif not sparse_model:  # the official sparse model's size counter only visits modules with weights
        row.params = row.nonzero = PAPER_LEARNABLE_TABLE_ROWS * config.d_model
        row.bits = FLOAT_BITS * row.params
    return row


def _paper_attention(name: str, st: LayerStorage, config: ModelConfig, sparse_model: bool) -> LayerCount:
    w, d = config.max_len, config.d_model
    h, dh, mode = st.details["n_heads"], st.details["head_dim"], st.details["mode"]
    if mode == "step_t":
        core = w * d + h * ((w - 1) * dh + w + (w - 1) * dh)
    elif mode == "qkv_mask":
        a = st.details["qkv_density"]
        kept_steps = math.floor(w * a)
        core = w * d * a + 3 * w * d + h * (kept_steps ** 2 * dh + w ** 2 + w * kept_steps * dh)
    else:
        core = w * d + h * (w * w * dh + w * w + w * w * dh)
    return LayerCount(name, st.kind, st.shape, flops=core)


PAPER_RULES: dict[str, Callable[[str, LayerStorage, ModelConfig, bool], LayerCount]] = {
    "sparse_binary_linear": _paper_linear, "dense_linear": _paper_linear,
    "batch_norm": _paper_norm, "layer_time_norm": _paper_norm,
    "positional_sinusoidal": _paper_positional, "positional_learnable": _paper_positional,
    "attention": _paper_attention,
}


def paper_count(storage: dict[str, LayerStorage], config: ModelConfig) -> ModelCount:
    """The official code's size and FLOP counters, applied to a model's declarations."""
    # The official code has one counter for dense models and one for sparse ones.
    sparse_model = any(st.kind == "sparse_binary_linear" for st in storage.values())
    return ModelCount("paper", [PAPER_RULES[st.kind](name, st, config, sparse_model) for name, st in storage.items()])


# --- honest rules --------------------------------------------------------------------------------

def honest_count(storage: dict[str, LayerStorage], config: ModelConfig, macs_by_layer: dict[str, int],
                 input_scaler_channels: int) -> ModelCount:
    """Every stored tensor at its stored bits; FLOPs as executed by the runtime (``macs_by_layer``)."""
    rows = []
    for name, st in storage.items():
        stored = sum(t.count for t in st.tensors if t.bits)  # regenerated tensors are not parameters to keep
        row = LayerCount(name, st.kind, st.shape, positions=st.positions, kept=st.kept, params=st.positions + stored,
                         nonzero=st.kept + stored, bits=st.bits, flops=macs_by_layer.get(name, 0))
        rows.append(row)
    # The input scaler (mean and std per channel, float64) ships with every model: raw inputs need it.
    scaler_values = 2 * input_scaler_channels
    rows.append(LayerCount("input_scaler", "input_scaler", (2, input_scaler_channels), params=scaler_values,
                           nonzero=scaler_values, bits=SCALER_BITS * scaler_values))
    unknown = set(macs_by_layer) - {row.name for row in rows}
    if unknown:
        raise ValueError(f"runtime counted work in undeclared layers: {sorted(unknown)}")
    return ModelCount("honest", rows)
