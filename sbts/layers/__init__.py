"""Building blocks: the sparse-binary and dense linears, attention modes, norms, positional encodings."""

from sbts.layers.attention import MultiHeadAttention, fixed_activation_mask
from sbts.layers.linear import DenseLinear, LinearStorage, SparseBinaryLinear, make_linear
from sbts.layers.norms import MaskedBatchNorm, NoNorm, TimeLayerNorm, make_norm
from sbts.layers.positional import PositionalEncoding

__all__ = [
    "DenseLinear", "LinearStorage", "MaskedBatchNorm", "MultiHeadAttention", "NoNorm", "PositionalEncoding",
    "SparseBinaryLinear", "TimeLayerNorm", "fixed_activation_mask", "make_linear", "make_norm",
]
