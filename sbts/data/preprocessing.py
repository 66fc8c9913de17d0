"""Turning parsed variable-length series into model-ready arrays.

The order is: :func:`fill_missing` on each split, :class:`ChannelScaler` fitted on the training
split only (so no test statistics leak into training), then :func:`pad_to_length` to a batchable
``(n_cases, length, n_channels)`` array plus a padding mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sbts.errors import DataError

__all__ = ["ChannelScaler", "fill_missing", "pad_to_length"]

# A channel whose standard deviation is below this is treated as constant: dividing by it would
# blow noise up to huge values (or divide by zero), so it is divided by 1 instead.
_MIN_STD = 1e-8


def fill_missing(series: list[np.ndarray], where: str) -> list[np.ndarray]:
    """Fill NaN in each case and channel; returns new float64 arrays (inputs are not modified).

    Interior gaps are linearly interpolated over time; leading and trailing NaN take the nearest
    valid value. A channel without any finite value, or containing +-inf, cannot be filled
    meaningfully and raises :class:`DataError` naming ``where`` (e.g. the file), the case and channel.
    """
    out: list[np.ndarray] = []
    for i, case in enumerate(series):
        arr = np.array(case, dtype=np.float64)  # a copy: callers keep their raw data
        if arr.ndim != 2:
            raise ValueError(f"case {i}: expected shape (n_channels, length), got {arr.shape}")
        for c in range(arr.shape[0]):
            x = arr[c]
            if np.isinf(x).any():
                t = int(np.flatnonzero(np.isinf(x))[0])
                raise DataError(
                    f"{where}: case index {i} (case #{i + 1}), channel {c}: infinite value at time step {t}"
                )
            valid = ~np.isnan(x)
            if valid.all():
                continue
            if not valid.any():
                raise DataError(f"{where}: case index {i} (case #{i + 1}), channel {c}: no finite value to fill from")
            steps = np.arange(x.shape[0], dtype=np.float64)
            # np.interp holds the first/last valid value constant outside the valid range, which is
            # exactly "nearest valid value" for leading and trailing gaps.
            arr[c] = np.interp(steps, steps[valid], x[valid])
        out.append(arr)
    return out


class ChannelScaler:
    """Per-channel z-score with statistics from the training series only.

    ``std`` is the divisor actually used: channels whose standard deviation is below ``1e-8``
    (constant channels) get 1 so nothing divides by zero.
    """

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None) -> None:
        self.mean: np.ndarray = np.zeros(0) if mean is None else np.asarray(mean, dtype=np.float64)
        self.std: np.ndarray = np.ones(0) if std is None else _safe_std(np.asarray(std, dtype=np.float64))
        if self.mean.shape != self.std.shape or self.mean.ndim != 1:
            raise ValueError(f"mean and std must be 1-D of equal length, got {self.mean.shape} and {self.std.shape}")

    @property
    def n_channels(self) -> int:
        return int(self.mean.shape[0])

    def fit(self, series: list[np.ndarray]) -> ChannelScaler:
        """Compute mean and population std per channel over all time steps of all cases.

        Two passes over the cases (sum, then squared deviations) instead of concatenating them:
        no big temporary copy and no precision loss from sum-of-squares. NaN values are ignored.
        """
        if not series:
            raise ValueError("ChannelScaler.fit needs at least one case")
        n_channels = series[0].shape[0]
        count = np.zeros(n_channels)
        total = np.zeros(n_channels)
        for i, case in enumerate(series):
            if case.ndim != 2 or case.shape[0] != n_channels:
                raise ValueError(f"case {i}: expected shape ({n_channels}, length), got {case.shape}")
            x = case.astype(np.float64, copy=False)
            valid = ~np.isnan(x)
            count += valid.sum(axis=1)
            total += np.where(valid, x, 0.0).sum(axis=1)
        if (count == 0).any():
            bad = int(np.flatnonzero(count == 0)[0])
            raise ValueError(f"channel {bad} has no values to fit on (fill missing values first)")
        mean = total / count
        sq = np.zeros(n_channels)
        for case in series:
            d = case.astype(np.float64, copy=False) - mean[:, None]
            sq += np.where(np.isnan(d), 0.0, d * d).sum(axis=1)
        std = np.sqrt(sq / count)
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            raise ValueError("non-finite channel statistics (the series contain inf: call fill_missing first)")
        self.mean = mean
        self.std = _safe_std(std)
        return self

    def transform(self, series: list[np.ndarray]) -> list[np.ndarray]:
        """Return ``(x - mean) / std`` per channel as new float32 arrays."""
        if self.mean.size == 0:
            raise ValueError("ChannelScaler is not fitted")
        mean = self.mean[:, None]
        std = _safe_std(self.std)[:, None]  # guard again: from_dict may carry a zero
        out: list[np.ndarray] = []
        for i, case in enumerate(series):
            if case.ndim != 2 or case.shape[0] != self.n_channels:
                raise ValueError(f"case {i}: expected shape ({self.n_channels}, length), got {case.shape}")
            out.append(((case.astype(np.float64, copy=False) - mean) / std).astype(np.float32))
        return out

    def transform_rows(self, rows: np.ndarray) -> np.ndarray:
        """One long series as rows (n_steps, n_channels) -> scaled float32 rows of the same shape."""
        return self.transform([np.asarray(rows, dtype=np.float64).T])[0].T.copy()

    def inverse_transform_rows(self, rows: np.ndarray) -> np.ndarray:
        """Scaled rows (n_steps, n_channels) -> float64 rows in the original units."""
        return np.asarray(rows, dtype=np.float64) * self.std + self.mean

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe representation (plain lists of floats)."""
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChannelScaler:
        try:
            mean = np.asarray(d["mean"], dtype=np.float64)
            std = np.asarray(d["std"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid ChannelScaler dict: {exc}") from None
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            raise ValueError("invalid ChannelScaler dict: non-finite mean or std")
        return cls(mean, std)

    def __repr__(self) -> str:
        return f"ChannelScaler(n_channels={self.n_channels})"


def _safe_std(std: np.ndarray) -> np.ndarray:
    return np.where(np.abs(std) < _MIN_STD, 1.0, std)


def pad_to_length(series: list[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack cases into ``X`` float32 ``(n_cases, length, n_channels)`` (time before channels).

    Padded steps are 0.0 and ``padding_mask`` (bool, ``(n_cases, length)``) is True there. A case
    longer than ``length`` raises ValueError: truncating silently would drop data.
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    n_channels = series[0].shape[0] if series else 0
    x = np.zeros((len(series), length, n_channels), dtype=np.float32)
    mask = np.ones((len(series), length), dtype=bool)
    for i, case in enumerate(series):
        if case.ndim != 2 or case.shape[0] != n_channels:
            raise ValueError(f"case {i}: expected shape ({n_channels}, length), got {case.shape}")
        n = case.shape[1]
        if n > length:
            raise ValueError(f"case {i} has length {n}, longer than the padding length {length}")
        x[i, :n, :] = case.T
        mask[i, :n] = False
    return x, mask
