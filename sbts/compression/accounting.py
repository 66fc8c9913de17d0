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

from dataclasses import dataclass, field
from typing import Any

from sbts.config import ModelConfig
from sbts.layers.kinds import layer_kind
from sbts.layers.storage import LayerCount, LayerStorage

__all__ = ["ACCOUNTINGS", "LayerCount", "ModelCount", "honest_count", "paper_count"]

ACCOUNTINGS = ("paper", "honest")
SCALER_BITS = 64  # the artifact keeps the training statistics in float64, as training applied them


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


# --- paper rules (paper-spec §6.1, §6.2): each kind's rule is its ``paper`` in sbts.layers.kinds ----------

def paper_count(storage: dict[str, LayerStorage], config: ModelConfig) -> ModelCount:
    """The official code's size and FLOP counters, applied to a model's declarations."""
    # The official code has one counter for dense models and one for sparse-binary ones.
    sparse_model = config.linear == "sparse_binary"
    return ModelCount("paper", [layer_kind(st.kind).paper(name, st, config, sparse_model)
                                for name, st in storage.items()])


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
