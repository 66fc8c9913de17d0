"""The one Transformer definition (paper-spec §1.1), dense or sparse-binary by configuration.

x (B, T, D) -> embedding Linear(D->d) * sqrt(d) -> + positional encoding -> N post-norm encoder
layers [x + MHA(x) -> norm -> x + W2 relu(W1 x) -> norm] -> ReLU (or none: ``head_activation``) -> head
Linear(d->out) at every step; in training, ``dropout`` zeroes a fraction of the embedded input and of each
attention and feed-forward output before its residual add. With ``linear_path`` the last step's output also
adds a linear map of the input window (``ModelConfig.linear_path_shape``: joint, the whole window flattened
variable-major; shared, each variable's steps to its own outputs): a residual linear path beside the
Transformer, made by the same factory as every other linear.
Every linear goes through ``make_linear`` so the dense baseline and the SBT differ only in
``config.linear``. Tasks decide what to do with the per-step outputs (pool, take the last step).
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from sbts.config import ModelConfig
from sbts.frozen_tensors import derive_seed
from sbts.layers import (
    DenseLinear,
    LayerStorage,
    MultiHeadAttention,
    PositionalEncoding,
    SparseBinaryLinear,
    make_linear,
    make_norm,
)


def _float32(out: torch.Tensor) -> torch.Tensor:
    """The outputs in float32 also under autocast (--amp computes the head in bf16): losses, metrics and the
    numpy heads read them."""
    return out.float() if out.dtype in (torch.bfloat16, torch.float16) else out


def make_dropout(config: ModelConfig) -> nn.Module:
    """The dropout module of ``config``: none at rate 0, so that a model without dropout runs no dropout kernel
    (on CUDA a rate-0 dropout still draws its mask in training)."""
    return nn.Dropout(config.dropout) if config.dropout else nn.Identity()


class EncoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, linear, name: str):
        super().__init__()
        d = config.d_model
        self.attention = MultiHeadAttention(
            d, config.n_heads,
            lambda sub, i, o, bias: linear(f"{name}.attention.{sub}", i, o, bias and config.attention_bias),
            mode=config.attention, step_t_self=config.step_t_self, qkv_density=config.qkv_density,
            max_len=config.max_len, seed=derive_seed(config.seed, f"{name}.attention"),
            rotary=config.pos_encoding == "rope")
        self.norm1 = make_norm(config.norm, d, config.max_len)
        self.ff1 = linear(f"{name}.ff1", d, config.d_ff, config.linear_bias)
        self.ff2 = linear(f"{name}.ff2", config.d_ff, d, config.linear_bias)
        self.norm2 = make_norm(config.norm, d, config.max_len)
        self.dropout = make_dropout(config)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None,
                last_row_only: bool = False) -> torch.Tensor:
        """With ``last_row_only`` the output is the last step's row alone, (B, 1, d)."""
        attended = self.attention(x, padding_mask, last_row_only)
        if last_row_only:
            x, padding_mask = x[:, -1:], None if padding_mask is None else padding_mask[:, -1:]
        x = self.norm1(x + self.dropout(attended), padding_mask)
        return self.norm2(x + self.feed_forward(x), padding_mask)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.ff2(torch.relu(self.ff1(x))))


class TimeSeriesTransformer(nn.Module):
    """Encoder-only Transformer for multivariate series; outputs ``out_dim`` values per step."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        linear = partial(self._linear, config)
        self.embedding = linear("embedding", config.in_channels, config.d_model, config.linear_bias)
        self.positional = PositionalEncoding(config.pos_encoding, config.max_len, config.d_model,
                                             seed=derive_seed(config.seed, "positional"))
        self.dropout = make_dropout(config)
        self.layers = nn.ModuleList(EncoderLayer(config, linear, f"layers.{i}") for i in range(config.n_layers))
        self.head = linear("head", config.d_model, config.out_dim, config.linear_bias)
        if config.has_linear_path:
            out_features, in_features = config.linear_path_shape
            self.linear_path = linear("linear_path", in_features, out_features, False)

    @staticmethod
    def _linear(config: ModelConfig, name: str, in_features: int, out_features: int, bias: bool) -> nn.Module:
        # Each linear gets its own seed from the model seed and its name, so W is regenerable per layer.
        return make_linear(config.linear, in_features, out_features, bias=bias, density=config.density,
                           seed=derive_seed(config.seed, name))

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None,
                last_step_only: bool = False) -> torch.Tensor:
        """x: (B, T, in_channels); padding_mask: (B, T) bool, True = padded step. Returns (B, T, out_dim),
        or (B, 1, out_dim), the last step's output, with ``last_step_only`` (the same numbers, less work)."""
        if x.dim() != 3 or x.shape[-1] != self.config.in_channels:
            raise ValueError(f"expected input of shape (batch, time, {self.config.in_channels}), got {tuple(x.shape)}")
        h = self.dropout(self.positional(self.embedding(x) * math.sqrt(self.config.d_model)))
        shrink_last_layer = last_step_only and self._rows_independent_after_attention()
        for i, layer in enumerate(self.layers):
            h = layer(h, padding_mask, last_row_only=shrink_last_layer and i == len(self.layers) - 1)
        if last_step_only:
            h = h[:, -1:]
        out = self.head(self._head_input(h))
        if self.config.has_linear_path:  # the last step's output only: it alone reads the whole window
            out = torch.cat([out[:, :-1], out[:, -1:] + self._path(x)[:, None]], dim=1)
        return _float32(out)

    def _path(self, x: torch.Tensor) -> torch.Tensor:
        """The linear path's output (B, out_dim) from windows x (B, T, in_channels)."""
        by_variable = x.transpose(1, 2)  # (B, in_channels, T): each variable's steps in a row
        if self.config.linear_path == "joint":
            return self.linear_path(by_variable.flatten(1))
        return self.linear_path(by_variable).transpose(1, 2).flatten(1)  # (B, ahead, in_channels), step-major

    def last_steps(self, rows: torch.Tensor, ends: torch.Tensor, queries: torch.Tensor | None = None) -> torch.Tensor:
        """The shared pass of a streamable Step-T model: the last-step outputs (B, K, out_dim) of the windows
        ending at ``ends`` (K,) of a long series ``rows`` (B, N, in_channels), each window's last row taking its
        input from ``queries`` (B, K, in_channels; default the rows at ``ends``; forecasting zeroes them).

        The same numbers as ``self(window, last_step_only=True)`` on each window, to float32 rounding, for one
        pass over the rows: every step's past stream (its state attending to itself only) once, and per target
        a query row attending to the keys and values of the ``max_len - 1`` steps before it at every layer."""
        problem = self.config.streaming_problem
        if problem is not None:
            raise ValueError(f"the shared pass needs a streamable model: {problem}")
        if self.training and self.config.norm == "batch":
            raise ValueError("the shared pass cannot train a batch norm: its statistics would gather other rows "
                             "than the windows'")
        past = self.config.max_len - 1
        if len(ends) and (int(ends.min()) < past or int(ends.max()) >= rows.shape[1]):
            raise ValueError(f"window ends must lie in [{past}, {rows.shape[1] - 1}] (each needs {past} rows "
                             "before it)")
        scale = math.sqrt(self.config.d_model)
        h = self.dropout(self.embedding(rows) * scale)
        g = self.dropout(self.embedding(rows[:, ends] if queries is None else queries) * scale)
        band = ends[:, None] - past + torch.arange(past, device=ends.device)
        steps = torch.arange(rows.shape[1], device=ends.device)
        for layer in self.layers:
            attention = layer.attention
            # Keys turned once by their own steps (RoPE), each query by its own: no window is ever turned anew.
            k, v = attention.turn_rows(attention.k_proj(h), steps), attention.v_proj(h)
            own = ((attention.turn_rows(attention.k_proj(g), ends), attention.v_proj(g)) if self.config.step_t_self
                   else None)
            mixed = attention.query_rows(attention.turn_rows(attention.q_proj(g), ends), k[:, band], v[:, band], own)
            g = layer.norm1(g + layer.dropout(attention.out_proj(mixed)))
            g = layer.norm2(g + layer.feed_forward(g))
            h = layer.norm1(h + layer.dropout(attention.out_proj(v)))  # a past step attends only to itself: its value
            h = layer.norm2(h + layer.feed_forward(h))
        return _float32(self.head(self._head_input(g)))

    def _head_input(self, h: torch.Tensor) -> torch.Tensor:
        return torch.relu(h) if self.config.head_activation == "relu" else h

    def _rows_independent_after_attention(self) -> bool:
        """Whether the last layer's rows after attention can be computed one at a time: not when the norm
        mixes time steps (LayerNorm over time) or a batch norm gathers statistics over rows in training."""
        return self.config.norm in ("none", "layer") or (self.config.norm == "batch" and not self.training)

    def linear_layers(self) -> dict[str, nn.Module]:
        """Every linear layer by name (the ones the layer factory made)."""
        return {name: m for name, m in self.named_modules() if isinstance(m, (SparseBinaryLinear, DenseLinear))}

    def storage(self) -> dict[str, LayerStorage]:
        """Every layer's own declaration of what it stores, by module name, in model order."""
        declared = ((name, m.storage()) for name, m in self.named_modules() if m is not self and hasattr(m, "storage"))
        return {name: storage for name, storage in declared if storage is not None}
