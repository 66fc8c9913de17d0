"""Building blocks: the sparse-binary and dense linears, attention modes, norms, positional encodings.

The names are imported lazily, so that the torch-free submodules (``storage``, ``kinds``), which the
numpy runtime reads, import without torch.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "MultiHeadAttention": "sbts.layers.attention",
    "fixed_activation_mask": "sbts.layers.attention",
    "DenseLinear": "sbts.layers.linear",
    "SparseBinaryLinear": "sbts.layers.linear",
    "make_linear": "sbts.layers.linear",
    "MaskedBatchNorm": "sbts.layers.norms",
    "NoNorm": "sbts.layers.norms",
    "TimeLayerNorm": "sbts.layers.norms",
    "StepLayerNorm": "sbts.layers.norms",
    "make_norm": "sbts.layers.norms",
    "PositionalEncoding": "sbts.layers.positional",
    "LayerStorage": "sbts.layers.storage",
    "StoredTensor": "sbts.layers.storage",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sbts.layers' has no attribute {name!r}")
