"""Building blocks: the sparse-binary and dense linears, attention modes, norms, positional encodings."""

from sbts.layers.attention import MultiHeadAttention, fixed_activation_mask
from sbts.layers.linear import DenseLinear, LinearStorage, SparseBinaryLinear, kept_count, make_linear
from sbts.layers.norms import MaskedBatchNorm, NoNorm, TimeLayerNorm, make_norm
from sbts.layers.positional import PositionalEncoding, sinusoidal_table
from sbts.layers.seeded_random import derive_seed, splitmix64, uniform01, uniform_weights

__all__ = [
    "DenseLinear", "LinearStorage", "MaskedBatchNorm", "MultiHeadAttention", "NoNorm", "PositionalEncoding",
    "SparseBinaryLinear", "TimeLayerNorm", "derive_seed", "fixed_activation_mask", "kept_count", "make_linear",
    "make_norm", "sinusoidal_table", "splitmix64", "uniform01", "uniform_weights",
]
