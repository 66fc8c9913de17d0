"""The encoder's normalisation options (paper-spec §1.1)."""

from __future__ import annotations

import torch
from torch import nn

from sbts.layers.storage import FLOAT_BITS, LayerStorage, StoredTensor


class MaskedBatchNorm(nn.BatchNorm1d):
    """BatchNorm over d_model whose statistics use only the valid (non-padded) steps.

    Padded steps would otherwise pull the batch mean and variance towards the padding value.
    Padded outputs are set to zero; they are never attended to nor pooled.
    """

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if padding_mask is None:
            return super().forward(x.reshape(-1, x.shape[-1])).view_as(x)
        valid = ~padding_mask
        out = torch.zeros_like(x)
        out[valid] = super().forward(x[valid])
        return out

    def storage(self) -> LayerStorage:
        d = self.num_features
        return LayerStorage("batch_norm", (d,), tensors=(
            StoredTensor("weight", d, FLOAT_BITS, trainable=True), StoredTensor("bias", d, FLOAT_BITS, trainable=True),
            StoredTensor("running_mean", d, FLOAT_BITS, trainable=False),
            StoredTensor("running_var", d, FLOAT_BITS, trainable=False)))


class TimeLayerNorm(nn.LayerNorm):
    """LayerNorm across the time axis of each channel (normalized_shape = window length), as the paper."""

    def __init__(self, window: int):
        super().__init__(window)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if padding_mask is not None:
            raise ValueError("layer_time norm mixes all steps of a window; it cannot take padded input")
        if x.shape[1] != self.normalized_shape[0]:
            raise ValueError(f"layer_time norm needs windows of exactly {self.normalized_shape[0]} steps, got {x.shape[1]}")
        return super().forward(x.transpose(1, 2)).transpose(1, 2)

    def storage(self) -> LayerStorage:
        w = self.normalized_shape[0]
        return LayerStorage("layer_time_norm", (w,), tensors=(
            StoredTensor("weight", w, FLOAT_BITS, trainable=True), StoredTensor("bias", w, FLOAT_BITS, trainable=True)))


class StepLayerNorm(nn.LayerNorm):
    """LayerNorm over the features of each step (``norm: layer``): per step, so streamable. Padded outputs are
    zero, as MaskedBatchNorm's."""

    def __init__(self, d_model: int):
        super().__init__(d_model)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        out = super().forward(x)
        return out if padding_mask is None else out.masked_fill(padding_mask[..., None], 0.0)

    def storage(self) -> LayerStorage:
        d = self.normalized_shape[0]
        return LayerStorage("layer_norm", (d,), tensors=(
            StoredTensor("weight", d, FLOAT_BITS, trainable=True), StoredTensor("bias", d, FLOAT_BITS, trainable=True)))


class NoNorm(nn.Module):
    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return x


def make_norm(kind: str, d_model: int, window: int) -> nn.Module:
    if kind == "batch":
        return MaskedBatchNorm(d_model)
    if kind == "layer_time":
        return TimeLayerNorm(window)
    if kind == "layer":
        return StepLayerNorm(d_model)
    return NoNorm()
