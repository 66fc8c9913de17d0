"""Positional encodings added after the input embedding."""

from __future__ import annotations

import torch
from torch import nn

from sbts.frozen_tensors import sinusoidal_table, uniform_weights
from sbts.layers.storage import FLOAT_BITS, LayerStorage, StoredTensor


class PositionalEncoding(nn.Module):
    """``sinusoidal`` (fixed, no parameters), ``learnable`` (U(+-0.02) init), ``rope`` or ``none``.

    ``rope`` adds nothing here: the attention turns queries and keys by their positions (relative to the
    query), so that a step's past state does not depend on where it sits in a sliding window."""

    def __init__(self, kind: str, max_len: int, d_model: int, seed: int = 0):
        super().__init__()
        self.kind = kind
        if kind == "sinusoidal":
            self.register_buffer("table", torch.from_numpy(sinusoidal_table(max_len, d_model)), persistent=False)
        elif kind == "learnable":
            self.table = nn.Parameter(torch.from_numpy(uniform_weights(seed, (max_len, d_model), 0.02)))
        else:
            self.table = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.table is None:
            return x
        t = x.shape[1]
        if t > self.table.shape[0]:
            raise ValueError(f"sequence length {t} exceeds the model's max_len {self.table.shape[0]}")
        return x + self.table[:t]

    def storage(self) -> LayerStorage | None:
        if self.kind == "rope":
            return LayerStorage("positional_rope", (0,))  # declared, so that the accountings know it: stores nothing
        if self.table is None:
            return None
        learnable = self.kind == "learnable"  # a sinusoidal table is recomputed, never stored
        table = StoredTensor("table", self.table.numel(), FLOAT_BITS if learnable else 0, trainable=learnable)
        return LayerStorage(f"positional_{self.kind}", tuple(self.table.shape), tensors=(table,))
