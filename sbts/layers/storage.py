"""What a layer stores and computes, declared by the layer itself (torch-free), and its counted row.

Every module that holds or regenerates a tensor implements ``storage() -> LayerStorage``. The
compression summary reads these declarations and applies an accounting's rules per ``kind``
(``sbts.layers.kinds``), one ``LayerCount`` per layer; it never inspects layer classes. ``bits``
are what a deployment needs per value: 1 for a sparse-binary weight position, 32 for a float, 64
for a seed, 0 for a tensor regenerated from a seed or a formula.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

FLOAT_BITS = 32
SEED_BITS = 64


@dataclass(frozen=True)
class StoredTensor:
    """One tensor a layer keeps besides its weight positions."""

    name: str  # bias, alpha, seed, weight (norm gain), running_mean, table, q_mask, ...
    count: int  # number of values
    bits: int  # bits per value a deployment stores (0: regenerated)
    trainable: bool  # a trained parameter (running statistics, seeds and regenerated tensors are not)


@dataclass(frozen=True)
class LayerStorage:
    """A layer's declaration: its accounting kind, weight positions and the other tensors it keeps."""

    kind: str  # sparse_binary_linear, dense_linear, batch_norm, layer_time_norm, positional_*, attention
    shape: tuple[int, ...]
    positions: int = 0  # weight positions of a linear (out * in)
    kept: int = 0  # non-zero weights among them
    weight_bits: int = 0  # bits per weight position (1 sparse binary, 32 dense)
    tensors: tuple[StoredTensor, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)  # kind-specific facts (attention mode, heads, ...)

    def tensor(self, name: str) -> StoredTensor | None:
        return next((t for t in self.tensors if t.name == name), None)

    @property
    def bits(self) -> int:
        """Bits a deployment stores for this layer (uncompressed)."""
        return self.positions * self.weight_bits + sum(t.count * t.bits for t in self.tensors)


@dataclass
class LayerCount:
    """One row of a summary: a layer's counts under one accounting."""

    name: str
    kind: str
    shape: tuple[int, ...]
    positions: int = 0
    kept: int = 0
    params: int = 0
    nonzero: int = 0
    bits: int = 0
    flops: float = 0

    @property
    def density(self) -> float | None:
        return self.kept / self.positions if self.positions else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, without the name (the summary keys rows by name)."""
        fields = {key: value for key, value in asdict(self).items() if key != "name"}
        return {**fields, "shape": list(self.shape), "density": self.density}
