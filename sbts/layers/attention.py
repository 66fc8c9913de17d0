"""Multi-head self-attention with the paper's three modes.

- ``full``: every step attends to every (non-padded) step.
- ``step_t``: each past step attends only to itself; the last step attends to all past steps
  (and to itself only if ``step_t_self``; the official code excludes it). Computed exactly without
  a w x w matrix: past rows are their own value vectors, the last row is one softmax row.
- ``qkv_mask``: fixed random 0/1 masks on the Q, K and V activations (one w x d mask each, the same
  for every sample), keeping a fraction ``qkv_density`` of every step's d activations; regenerated
  from the layer seed (not stored). Row t depends only on the seed and t, so the mask of a step does
  not depend on the longest series the model was built for.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from sbts.frozen_tensors import ROTARY_BASE, activation_mask, derive_seed, rotary_tables
from sbts.layers.storage import SEED_BITS, LayerStorage, StoredTensor


def fixed_activation_mask(seed: int, length: int, width: int, density: float) -> torch.Tensor:
    """``activation_mask`` as a tensor: ceil(density * width) kept entries in every row."""
    return torch.from_numpy(activation_mask(seed, length, width, density))


def _turn(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Turn the channel pairs of split heads (..., T, dh) by angles (T, dh // 2); an odd head's last channel has
    no pair and stays as it is."""
    paired = 2 * cos.shape[-1]
    even, odd = x[..., 0:paired:2], x[..., 1:paired:2]
    turned = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)
    return torch.cat([turned, x[..., paired:]], dim=-1)


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, make_linear: Callable[[str, int, int, bool], nn.Module], *,
                 mode: str = "full", step_t_self: bool = False, qkv_density: float = 0.5,
                 max_len: int = 0, seed: int = 0, rotary: bool = False):
        super().__init__()
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.mode, self.step_t_self, self.qkv_density, self.max_len = mode, step_t_self, qkv_density, max_len
        self.q_proj = make_linear("q_proj", d_model, d_model, True)
        self.k_proj = make_linear("k_proj", d_model, d_model, True)
        self.v_proj = make_linear("v_proj", d_model, d_model, True)
        self.out_proj = make_linear("out_proj", d_model, d_model, True)
        # The masks' seeds, so that an exported model regenerates the masks instead of storing them.
        self.mask_seeds = {f"{name}_mask": derive_seed(seed, f"{name}_mask") for name in ("q", "k", "v")
                           } if mode == "qkv_mask" else {}
        for key, mask_seed in self.mask_seeds.items():
            self.register_buffer(key, fixed_activation_mask(mask_seed, max_len, d_model, qkv_density), persistent=False)
        self.rotary = rotary  # RoPE: queries and keys turned by their positions (recomputed, never stored)
        if rotary:
            cos, sin = rotary_tables(max_len, self.head_dim)
            self.register_buffer("rotary_cos", torch.from_numpy(cos), persistent=False)
            self.register_buffer("rotary_sin", torch.from_numpy(sin), persistent=False)

    def storage(self) -> LayerStorage:
        """The attention core (the projections declare themselves); Q/K/V masks are regenerated from the seed."""
        masks = (StoredTensor("mask_seed", 3, SEED_BITS, trainable=False),
                 *(StoredTensor(f"{name}_mask", self.max_len * self.d_model, 0, trainable=False)
                   for name in ("q", "k", "v"))) if self.mode == "qkv_mask" else ()
        return LayerStorage("attention", (self.n_heads, self.head_dim), tensors=masks, details={
            "mode": self.mode, "n_heads": self.n_heads, "head_dim": self.head_dim, "d_model": self.d_model,
            "qkv_density": self.qkv_density, "step_t_self": self.step_t_self})

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, h, T, dh)
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)

    def _rotate(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """RoPE on split heads (B, h, T, dh) at positions start .. start + T - 1 (identity without rotary)."""
        if not self.rotary:
            return x
        t = x.shape[2]
        if start + t > self.rotary_cos.shape[0]:
            raise ValueError(f"sequence length {start + t} exceeds the model's max_len {self.rotary_cos.shape[0]}")
        return _turn(x, self.rotary_cos[start:start + t], self.rotary_sin[start:start + t])

    def turn_rows(self, x: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """RoPE of rows (B, N, d) at the absolute ``steps`` (N,) of a long series (identity without rotary): a
        query and a key turned by their own steps multiply as they would in any window holding both."""
        if not self.rotary:
            return x
        frequencies = ROTARY_BASE ** (-2 * torch.arange(self.head_dim // 2, dtype=torch.float64) / self.head_dim)
        angles = steps.to(torch.float64).cpu()[:, None] * frequencies
        cos, sin = angles.cos().to(x.dtype).to(x.device), angles.sin().to(x.dtype).to(x.device)
        b, n, _ = x.shape
        return _turn(x.view(b, n, self.n_heads, self.head_dim).transpose(1, 2), cos, sin).transpose(1, 2).reshape(
            b, n, self.d_model)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None,
                last_row_only: bool = False) -> torch.Tensor:
        """x: (B, T, d); padding_mask: (B, T) bool, True where a step is padding (never attended to).

        With ``last_row_only`` only the last step queries: the output is its row, (B, 1, d).
        """
        t = x.shape[1]
        # Under step_t only the last step has a real query; the other rows are their own values.
        queries_last = last_row_only or self.mode == "step_t"
        q = self.q_proj(x[:, -1:] if queries_last else x)
        k, v = self.k_proj(x), self.v_proj(x)
        if self.mode == "step_t":
            if padding_mask is not None:
                raise ValueError("step_t attention takes fixed-length windows, not a padding mask")
            last = self._step_t_last(q, k, v)
            return self.out_proj(last if last_row_only else torch.cat([v[:, :-1], last], dim=1))
        if self.mode == "qkv_mask":
            if t > self.q_mask.shape[0]:
                raise ValueError(f"sequence length {t} exceeds the model's max_len {self.q_mask.shape[0]}")
            q, k, v = q * self.q_mask[t - q.shape[1]:t], k * self.k_mask[:t], v * self.v_mask[:t]
        attn_mask = None if padding_mask is None else ~padding_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(self._rotate(self._split(q), t - q.shape[1]),
                                             self._rotate(self._split(k), 0), self._split(v), attn_mask=attn_mask)
        return self.out_proj(out.transpose(1, 2).reshape(q.shape))

    def query_rows(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                   own: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Step-T attention of K query rows (B, K, d), each the last step of its own window, over that window's
        past keys and values (B, K, P, d), and with ``own`` (its key and value, (B, K, d)) too (``step_t_self``).
        Under RoPE queries and keys come turned by their steps (``turn_rows``). Returns (B, K, d), before the
        output projection."""
        b, n, p, _ = keys.shape
        if own is not None:
            keys, values = torch.cat([keys, own[0][:, :, None]], 2), torch.cat([values, own[1][:, :, None]], 2)

        def heads(x: torch.Tensor) -> torch.Tensor:  # (B, K, T, d) -> (B * K, h, T, dh)
            return x.reshape(b * n, x.shape[2], self.n_heads, self.head_dim).transpose(1, 2)

        weights = torch.softmax(heads(q[:, :, None]) @ heads(keys).transpose(-1, -2) / math.sqrt(self.head_dim), -1)
        return (weights @ heads(values)).transpose(1, 2).reshape(b, n, self.d_model)

    def _step_t_last(self, q_last: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The last step's attention output (B, 1, d): one softmax row over the past steps (and itself
        only with ``step_t_self``)."""
        t = k.shape[1]
        if t < 2 and not self.step_t_self:
            raise ValueError("step_t attention needs at least 2 steps (the last step attends to the past ones)")
        context = t if self.step_t_self else t - 1
        k_ctx, v_ctx = self._rotate(self._split(k[:, :context]), 0), self._split(v[:, :context])
        q_last = self._rotate(self._split(q_last), t - 1)
        weights = torch.softmax(q_last @ k_ctx.transpose(-1, -2) / math.sqrt(self.head_dim), dim=-1)
        return (weights @ v_ctx).transpose(1, 2).reshape(q_last.shape[0], 1, self.d_model)
