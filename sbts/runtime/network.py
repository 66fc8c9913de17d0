"""The Transformer's forward pass in numpy: the same numbers as ``TimeSeriesTransformer`` in eval mode.

The network is given as a ``ModelConfig`` and a mapping of named float32 arrays, the names being those
of the torch model's modules: ``{linear}.weight`` (out, in) -- for sparse-binary models the effective
ternary weight alpha * sign(W) * M -- and ``{linear}.bias``, ``layers.{i}.attention.{q,k,v}_mask``,
``layers.{i}.norm{1,2}.{weight,bias,running_mean,running_var}``, ``positional.table`` and, with the linear path,
``linear_path.weight`` (``ModelConfig.linear_path_shape``).

Only what the output needs is computed: under step_t attention the queries of the last step alone,
and with ``last_step_only`` the last encoder layer after its attention on the last row alone (unless
the norm mixes time steps). ``MacCounter`` counts the multiply-accumulates of the matrix products
actually executed. The norm and the positional encoding run as their kind in ``sbts.layers.kinds``
says. No torch here: this module must import with numpy, the standard library and torch-free sbts
modules only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from sbts.config import ModelConfig
from sbts.frozen_tensors import rotary_tables, rotate_pairs
from sbts.layers.kinds import kind_for_option


class MacCounter:
    """Counts multiply-accumulates of the matrix products the runtime actually executes, per layer."""

    def __init__(self) -> None:
        self.total = 0
        self.by_layer: dict[str, int] = {}

    def add(self, n: int, layer: str) -> None:
        self.total += int(n)
        self.by_layer[layer] = self.by_layer.get(layer, 0) + int(n)


def forward(config: ModelConfig, tensors: Mapping[str, np.ndarray], x: np.ndarray,
            padding_mask: np.ndarray | None = None, *, last_step_only: bool = False,
            counter: MacCounter | None = None) -> np.ndarray:
    """x: (B, T, in_channels); padding_mask: (B, T) bool, True = padded step.

    Returns (B, T, out_dim) float32, or (B, 1, out_dim), the last step's output, when ``last_step_only``.
    """
    x = np.asarray(x, dtype=np.float32)
    padding_mask = _check_inputs(config, x, padding_mask)
    return Network(config, tensors, counter if counter is not None else MacCounter()).run(
        x, padding_mask, last_step_only)


def _check_inputs(config: ModelConfig, x: np.ndarray, padding_mask: np.ndarray | None) -> np.ndarray | None:
    """The torch model's input checks, made up front; returns the padding mask as a bool array."""
    if x.ndim != 3 or x.shape[-1] != config.in_channels:
        raise ValueError(f"expected input of shape (batch, time, {config.in_channels}), got {x.shape}")
    steps = x.shape[1]
    if not 1 <= steps <= config.max_len:
        raise ValueError(f"sequence length {steps} must be between 1 and the model's max_len {config.max_len}")
    if config.attention == "step_t" and steps < 2 and not config.step_t_self:
        raise ValueError("step_t attention needs at least 2 steps (the last step attends to the past ones)")
    if _norm_mixes_steps(config) and steps != config.max_len:
        raise ValueError(f"{config.norm} norm needs windows of exactly {config.max_len} steps, got {steps}")
    if padding_mask is None:
        return None
    if config.attention == "step_t":
        raise ValueError("step_t attention takes fixed-length windows, not a padding mask")
    if _norm_mixes_steps(config):
        raise ValueError(f"{config.norm} norm mixes all steps of a window; it cannot take padded input")
    padding_mask = np.asarray(padding_mask, dtype=bool)
    if padding_mask.shape != x.shape[:2]:
        raise ValueError(f"padding mask of shape {padding_mask.shape} does not match the input's (batch, time) "
                         f"{x.shape[:2]}")
    return padding_mask


def _norm_mixes_steps(config: ModelConfig) -> bool:
    """Whether the norm mixes a window's steps: then windows are whole, unpadded, and no row is independent."""
    norm = kind_for_option("norm", config.norm)
    return norm is not None and norm.mixes_steps


class Network:
    """One forward pass: the named tensors, the config and the MAC counter in one place."""

    def __init__(self, config: ModelConfig, tensors: Mapping[str, np.ndarray], counter: MacCounter):
        self.config, self.tensors, self.counter = config, tensors, counter
        self.norm_kind = kind_for_option("norm", config.norm)
        self.positional_kind = kind_for_option("pos_encoding", config.pos_encoding)
        self.rotary = self.positional_kind is not None and self.positional_kind.rotary
        if self.rotary:
            self.rotary_cos, self.rotary_sin = rotary_tables(config.max_len, config.d_model // config.n_heads)

    def tensor(self, name: str) -> np.ndarray:
        if name not in self.tensors:
            raise ValueError(f"the network has no tensor {name!r}")
        return np.asarray(self.tensors[name], dtype=np.float32)

    def run(self, x: np.ndarray, padding_mask: np.ndarray | None, last_step_only: bool) -> np.ndarray:
        config = self.config
        h = self.linear("embedding", x) * np.float32(math.sqrt(config.d_model))
        if self.positional_kind is not None and not self.rotary:
            h = self.positional_kind.forward(self.tensor, "positional", h, padding_mask)
        # Per-row norms keep rows independent after attention, so the last layer can shrink to one row.
        last_row_only = last_step_only and not _norm_mixes_steps(config)
        for i in range(config.n_layers):
            h = self.encoder_layer(f"layers.{i}", h, padding_mask, last_row_only and i == config.n_layers - 1)
        if last_step_only:
            h = h[:, -1:]
        out = self.head(h)
        if config.has_linear_path:  # the last step's output only, as the torch model
            out[:, -1] += self.path(x)
        return out

    def path(self, x: np.ndarray) -> np.ndarray:
        """The linear path's output (B, out_dim) from windows x (B, T, in_channels)."""
        by_variable = x.transpose(0, 2, 1)  # each variable's steps in a row
        if self.config.linear_path == "joint":
            return self.linear("linear_path", by_variable.reshape(len(x), -1))
        return self.linear("linear_path", by_variable).transpose(0, 2, 1).reshape(len(x), -1)

    def head(self, h: np.ndarray) -> np.ndarray:
        """The head on the last layer's features, through the model's head activation."""
        return self.linear("head", np.maximum(h, 0) if self.config.head_activation == "relu" else h)

    def encoder_layer(self, name: str, h: np.ndarray, padding_mask: np.ndarray | None,
                      last_row_only: bool) -> np.ndarray:
        attended = self.attention(f"{name}.attention", h, padding_mask, last_row_only)
        if last_row_only:
            h = h[:, -1:]
            padding_mask = None if padding_mask is None else padding_mask[:, -1:]
        h = self.norm(f"{name}.norm1", h + attended, padding_mask)
        hidden = np.maximum(self.linear(f"{name}.ff1", h), 0)
        return self.norm(f"{name}.norm2", h + self.linear(f"{name}.ff2", hidden), padding_mask)

    def linear(self, name: str, x: np.ndarray) -> np.ndarray:
        weight = self.tensor(f"{name}.weight")
        out_features, in_features = weight.shape
        rows = x.reshape(-1, in_features)  # one 2-D BLAS product for the whole batch
        self.counter.add(rows.shape[0] * in_features * out_features, name)
        out = rows @ weight.T
        if f"{name}.bias" in self.tensors:
            out += self.tensor(f"{name}.bias")
        return out.reshape(*x.shape[:-1], out_features)

    def attention(self, name: str, h: np.ndarray, padding_mask: np.ndarray | None,
                  last_row_only: bool) -> np.ndarray:
        """The attention block's output (out_proj included) for every row, or for the last row only."""
        steps = h.shape[1]
        if self.config.attention == "step_t":
            context = steps if self.config.step_t_self else steps - 1
            q_last = self.linear(f"{name}.q_proj", h[:, -1:])
            k_context = self.linear(f"{name}.k_proj", h[:, :context])
            # Past rows output their own V rows (a softmax over one key is 1); the last row needs V of the context.
            v = self.linear(f"{name}.v_proj", h[:, :context] if last_row_only else h)
            mixed = self.attend(name, q_last, k_context, v[:, :context], None, steps - 1)
            if not last_row_only:
                mixed = np.concatenate([v[:, :-1], mixed], axis=1)
        else:
            q = self.linear(f"{name}.q_proj", h[:, -1:] if last_row_only else h)
            k, v = self.linear(f"{name}.k_proj", h), self.linear(f"{name}.v_proj", h)
            if self.config.attention == "qkv_mask":
                q = q * self.tensor(f"{name}.q_mask")[steps - q.shape[1]: steps]
                k = k * self.tensor(f"{name}.k_mask")[:steps]
                v = v * self.tensor(f"{name}.v_mask")[:steps]
            mixed = self.attend(name, q, k, v, padding_mask, steps - q.shape[1])
        return self.linear(f"{name}.out_proj", mixed)

    def attend(self, name: str, q: np.ndarray, k: np.ndarray, v: np.ndarray, key_padding: np.ndarray | None,
               query_start: int | None) -> np.ndarray:
        """softmax(q k^T / sqrt(dh)) v per head; q (B, Tq, d) at steps query_start.., k and v (B, Tk, d) at steps
        0..; padded keys get weight 0. Under RoPE the queries and keys are first turned by their steps
        (``query_start=None``: they come turned already)."""
        batch, query_rows, d_model = q.shape
        key_rows = k.shape[1]
        n_heads = self.config.n_heads
        head_dim = d_model // n_heads

        def split(z: np.ndarray) -> np.ndarray:  # (B, T, d) -> (B, h, T, dh)
            return z.reshape(batch, z.shape[1], n_heads, head_dim).transpose(0, 2, 1, 3)

        q_heads, k_heads = split(q), split(k)
        if self.rotary and query_start is not None:
            q_heads = rotate_pairs(q_heads, self.rotary_cos[query_start:query_start + query_rows],
                                   self.rotary_sin[query_start:query_start + query_rows])
            k_heads = rotate_pairs(k_heads, self.rotary_cos[:key_rows], self.rotary_sin[:key_rows])
        scores = q_heads @ k_heads.transpose(0, 1, 3, 2)
        scores *= np.float32(1.0 / math.sqrt(head_dim))
        if key_padding is not None:
            scores[np.broadcast_to(key_padding[:, None, None, :], scores.shape)] = -np.inf
        row_max = scores.max(axis=-1, keepdims=True)
        # A sample with every step padded has no key: as torch's SDPA (>= 2.5), its weights are 0, not NaN.
        scores -= np.where(row_max == -np.inf, np.float32(0), row_max)
        weights = np.exp(scores, out=scores)
        total = weights.sum(axis=-1, keepdims=True)
        weights /= np.where(total > 0, total, np.float32(1))
        mixed = weights @ split(v)
        self.counter.add(2 * batch * n_heads * query_rows * key_rows * head_dim, name)  # scores and weighted sums
        return mixed.transpose(0, 2, 1, 3).reshape(batch, query_rows, d_model)

    def norm(self, name: str, h: np.ndarray, padding_mask: np.ndarray | None) -> np.ndarray:
        if self.norm_kind is None:
            return h
        return self.norm_kind.forward(self.tensor, name, h, padding_mask)
