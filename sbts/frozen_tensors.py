"""The tensors a model regenerates instead of storing (numpy only, shared with the torch-free runtime).

Frozen random weights and biases of the linears, the fixed Q/K/V activation masks and the
sinusoidal positional table are all functions of a seed and a shape, so neither checkpoints nor
exported artifacts hold them.

Counter-based random numbers that numpy, PyTorch and C reproduce bit for bit: a frozen weight matrix of a sparse-binary layer is never stored: it is regenerated from one
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
import math

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


def kept_count(density: float, n: int) -> int:
    """ceil(density * n), robust to float error (0.07 * 100 is 7.000000000000001), at least 1."""
    return max(1, math.ceil(density * n - 1e-9))


def seeded_weight_and_bias(seed: int, out_features: int, in_features: int, bias: bool):
    """W uniform in +-1/sqrt(fan_in) (PyTorch's nn.Linear range), then the bias from the same stream."""
    bound = 1.0 / math.sqrt(in_features)
    n = out_features * in_features
    weight = uniform_weights(seed, (out_features, in_features), bound)
    bias_values = uniform_weights(seed, (out_features,), bound, start=n) if bias else None
    return weight, bias_values


def activation_mask(seed: int, length: int, width: int, density: float) -> np.ndarray:
    """A length x width float32 0/1 mask keeping exactly ceil(density * width) entries in every row.

    Row t keeps the entries with the smallest values among stream elements t*width .. (t+1)*width-1.
    """
    keep = kept_count(density, width)
    order = np.argsort(uniform01(seed, 0, length * width).reshape(length, width), axis=1, kind="stable")
    mask = np.zeros((length, width), dtype=np.float32)
    np.put_along_axis(mask, order[:, :keep], 1.0, axis=1)
    return mask


def sinusoidal_table(length: int, d_model: int) -> np.ndarray:
    """The fixed (length, d_model) float32 positional table: sin on even, cos on odd channels."""
    position = np.arange(length, dtype=np.float64)[:, None]
    freq = np.exp(np.arange(0, d_model, 2, dtype=np.float64) * (-math.log(10000.0) / d_model))
    table = np.zeros((length, d_model), dtype=np.float64)
    table[:, 0::2] = np.sin(position * freq)
    table[:, 1::2] = np.cos(position * freq[: d_model // 2])
    return table.astype(np.float32)


ROTARY_BASE = 10000.0  # the usual RoPE base (Su et al. 2021): the slowest pair turns once per ~62,000 steps


def rotary_tables(length: int, head_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin (length, head_dim // 2), float32, of the rotary angles: position t turns the channel pair
    (2i, 2i + 1) of every head by t * ROTARY_BASE ** (-2i / head_dim)."""
    position = np.arange(length, dtype=np.float64)[:, None]
    angles = position * ROTARY_BASE ** (-2 * np.arange(head_dim // 2, dtype=np.float64) / head_dim)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def rotate_pairs(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate the channel pairs of ``x`` (..., T, head_dim) by the angles of its T positions (cos and sin
    (T, head_dim // 2)): what RoPE does to queries and keys, so that their product depends only on the
    distance between the two positions. An odd head's last channel has no pair and stays as it is."""
    paired = 2 * cos.shape[-1]
    even, odd = x[..., 0:paired:2], x[..., 1:paired:2]
    out = x.copy()
    out[..., 0:paired:2] = even * cos - odd * sin
    out[..., 1:paired:2] = even * sin + odd * cos
    return out

