"""The two linear layers every Transformer linear is built from, and the factory that picks one.

``SparseBinaryLinear`` (Biprop): frozen random weights W regenerated from a 64-bit seed, a trainable
score per weight, and a forward weight ``alpha * sign(W) * M`` where M keeps the top
``ceil(density * n)`` entries of |scores| and ``alpha = ||M * W||_1 / ||M||_1``. The values are
ternary {-alpha, 0, +alpha}. ``DenseLinear`` is an ordinary float layer with the same seeded
initialisation, so dense and sparse-binary models share one structure.

Each layer declares its own storage (``storage()``) so that summaries read it instead of
switching on layer types.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sbts.config import check_density
from sbts.frozen_tensors import derive_seed, kept_count, seeded_weight_and_bias, uniform_weights
from sbts.layers.storage import FLOAT_BITS, SEED_BITS, LayerStorage, StoredTensor


def top_k_mask(abs_scores: torch.Tensor, kept: int) -> torch.Tensor:
    """0/1 mask of the ``kept`` largest entries (ties broken by torch.topk, so exactly ``kept``)."""
    flat = abs_scores.reshape(-1)
    top = torch.topk(flat, kept, sorted=False).indices
    return torch.zeros_like(flat).index_fill_(0, top, 1.0).view_as(abs_scores)


class _TopKMask(torch.autograd.Function):
    """alpha * M from |scores| with the edge-popup straight-through gradient.

    Backward returns ``grad * |W|`` for |scores|; combined with ``W_eff = sign(W) * (alpha * M)``
    this gives dL/d|S| = dL/dW_eff * W. alpha is treated as a constant.
    """

    @staticmethod
    def forward(ctx, abs_scores: torch.Tensor, weight: torch.Tensor, kept: int) -> torch.Tensor:
        mask = top_k_mask(abs_scores, kept)
        alpha = (weight.abs() * mask).sum() / kept
        ctx.save_for_backward(weight)
        return alpha * mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (weight,) = ctx.saved_tensors
        return grad * weight.abs(), None, None


class SparseBinaryLinear(nn.Module):
    """Biprop linear layer: frozen seeded W, trainable scores, ternary forward weight."""

    weight_bits = 1

    def __init__(self, in_features: int, out_features: int, bias: bool = False, *, density: float = 0.5, seed: int = 0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.density = check_density(density)
        self.seed = int(seed)
        self.kept = kept_count(self.density, in_features * out_features)
        weight, bias_values = seeded_weight_and_bias(self.seed, out_features, in_features, bias)
        # Buffers, not parameters: the optimiser never sees W or the bias, so they cannot change.
        # Not persistent: checkpoints hold the seed (in the model config), never W itself.
        self.register_buffer("weight", torch.from_numpy(weight), persistent=False)
        self.register_buffer("bias", torch.from_numpy(bias_values) if bias else None, persistent=False)
        score_bound = 1.0 / math.sqrt(in_features)  # kaiming_uniform(a=sqrt(5)) range
        scores = uniform_weights(derive_seed(self.seed, "scores"), (out_features, in_features), score_bound)
        self.scores = nn.Parameter(torch.from_numpy(scores))
        self._cache: tuple | None = None

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density

    def mask(self) -> torch.Tensor:
        """The current 0/1 mask (top ``kept`` of |scores|)."""
        return top_k_mask(self.scores.detach().abs(), self.kept)

    def alpha(self) -> torch.Tensor:
        return (self.weight.abs() * self.mask()).sum() / self.kept

    def effective_weight(self) -> torch.Tensor:
        """alpha * sign(W) * M; sign(0) counts as +1 so every kept weight is exactly +-alpha."""
        if torch.compiler.is_compiling():
            # torch.compile and torch.export trace the weight into the graph (top-k included, once per graph):
            # the eager cache below keys on tensor versions and data pointers, which a tracer cannot read
            # (export fails) or guards on (one recompilation per layer).
            return self._ternary_weight()
        key = (self.scores._version, self.scores.data_ptr(), self.scores.device,
               self.weight._version, self.weight.data_ptr())
        # Version counters miss writes through ``.data`` and fused optimiser steps, so the cache
        # also keeps a copy of the scores it was built from and compares contents (cheap next to top-k).
        if (not torch.is_grad_enabled() and self._cache is not None and self._cache[0] == key
                and torch.equal(self._cache[2], self.scores)):
            return self._cache[1]  # inference reuses the ternary weight until the scores change
        weight = self._ternary_weight()
        self._cache = (key, weight.detach(), self.scores.detach().clone()) if not torch.is_grad_enabled() else None
        return weight

    def _ternary_weight(self) -> torch.Tensor:
        sign = torch.where(self.weight >= 0, 1.0, -1.0).to(self.weight.dtype)
        return sign * _TopKMask.apply(self.scores.abs(), self.weight, self.kept)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)

    def storage(self) -> LayerStorage:
        # The seed regenerates sign(W) and the frozen bias; alpha is one float per layer.
        tensors = [StoredTensor("alpha", 1, FLOAT_BITS, trainable=False), StoredTensor("seed", 1, SEED_BITS, False)]
        if self.bias is not None:
            tensors.append(StoredTensor("bias", self.out_features, 0, trainable=False))
        return LayerStorage("sparse_binary_linear", (self.out_features, self.in_features),
                            positions=self.in_features * self.out_features, kept=self.kept,
                            weight_bits=self.weight_bits, tensors=tuple(tensors))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"density={self.density:g}, kept={self.kept}, seed={self.seed}")


class DenseLinear(nn.Linear):
    """Float32 linear layer initialised from the same seeded stream as ``SparseBinaryLinear``."""

    weight_bits = 32

    def __init__(self, in_features: int, out_features: int, bias: bool = False, *, seed: int = 0):
        super().__init__(in_features, out_features, bias=bias)
        self.seed = int(seed)
        weight, bias_values = seeded_weight_and_bias(self.seed, out_features, in_features, bias)
        with torch.no_grad():
            self.weight.copy_(torch.from_numpy(weight))
            if bias:
                self.bias.copy_(torch.from_numpy(bias_values))

    def storage(self) -> LayerStorage:
        kept = int(np.count_nonzero(self.weight.detach().cpu().numpy()))
        tensors = () if self.bias is None else (StoredTensor("bias", self.out_features, FLOAT_BITS, trainable=True),)
        return LayerStorage("dense_linear", (self.out_features, self.in_features),
                            positions=self.in_features * self.out_features, kept=kept,
                            weight_bits=self.weight_bits, tensors=tensors)


def make_linear(kind: str, in_features: int, out_features: int, *, bias: bool, density: float, seed: int) -> nn.Module:
    """The layer factory: every linear of the Transformer goes through here."""
    if kind == "sparse_binary":
        return SparseBinaryLinear(in_features, out_features, bias, density=density, seed=seed)
    if kind == "dense":
        return DenseLinear(in_features, out_features, bias, seed=seed)
    raise ValueError(f"unknown linear kind {kind!r}")
