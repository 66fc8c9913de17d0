"""Counter-based random numbers that numpy, PyTorch and C reproduce bit for bit.

A frozen weight matrix of a sparse-binary layer is never stored: it is regenerated from one
64-bit integer seed. Element ``i`` (row-major, 0-based) of a layer's stream is

    z = seed + (i + 1) * 0x9E3779B97F4A7C15          (mod 2**64)
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9          (mod 2**64)
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB          (mod 2**64)
    z =  z ^ (z >> 31)                                # SplitMix64 output
    u = (z >> 11) * 2**-53                            # uniform in [0, 1), exact in float64

and a uniform weight in [-b, b) is ``float32((2u - 1) * b)`` computed in float64, with
``b = 1/sqrt(fan_in)`` (PyTorch's default ``nn.Linear`` range). Every step is exact integer or
correctly rounded IEEE arithmetic, so a C implementation gives the same bits.
"""

from __future__ import annotations

import hashlib

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_SEED_MASK = (1 << 64) - 1


def splitmix64(seed: int, start: int, count: int) -> np.ndarray:
    """Outputs ``start .. start+count-1`` of the SplitMix64 stream of ``seed`` as uint64."""
    idx = np.arange(start + 1, start + count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed & _SEED_MASK) + idx * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def uniform01(seed: int, start: int, count: int) -> np.ndarray:
    """Uniform float64 in [0, 1) from the top 53 bits of each SplitMix64 output."""
    return (splitmix64(seed, start, count) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def uniform_weights(seed: int, shape: tuple[int, ...], bound: float, start: int = 0) -> np.ndarray:
    """float32 array of ``shape`` uniform in [-bound, bound), elements ``start..`` of the stream."""
    count = int(np.prod(shape))
    values = (2.0 * uniform01(seed, start, count) - 1.0) * float(bound)
    return values.astype(np.float32).reshape(shape)


def derive_seed(base_seed: int, name: str) -> int:
    """A layer's 64-bit seed from the model seed and the layer's name (stable across runs)."""
    digest = hashlib.blake2b(f"{int(base_seed)}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")
