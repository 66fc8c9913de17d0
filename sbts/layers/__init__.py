"""Building blocks: the sparse-binary and dense linears, attention modes, norms, positional encodings."""

from sbts.layers.attention import MultiHeadAttention, fixed_activation_mask
from sbts.layers.linear import DenseLinear, SparseBinaryLinear, make_linear
from sbts.layers.norms import MaskedBatchNorm, NoNorm, TimeLayerNorm, make_norm
from sbts.layers.positional import PositionalEncoding
from sbts.layers.storage import LayerStorage, StoredTensor

__all__ = [
    "DenseLinear", "LayerStorage", "MaskedBatchNorm", "MultiHeadAttention", "NoNorm", "PositionalEncoding",
    "SparseBinaryLinear", "StoredTensor", "TimeLayerNorm", "fixed_activation_mask", "make_linear", "make_norm",
]
