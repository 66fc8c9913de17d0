"""Tests for missing-value filling, per-channel scaling and padding."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sbts.data.preprocessing import ChannelScaler, fill_missing, pad_to_length
from sbts.errors import DataError

nan = np.nan


# ---------------------------------------------------------------------------------------------------
# fill_missing
# ---------------------------------------------------------------------------------------------------


def test_fill_interior_linear_interpolation() -> None:
    case = np.array([[1.0, nan, nan, 7.0, nan, 9.0], [0.0, 10.0, nan, 30.0, 40.0, 50.0]])
    (out,) = fill_missing([case], "toy.ts")
    # 1 -> 7 over three steps: 3 and 5; 7 -> 9 over two steps: 8; 10 -> 30 over two steps: 20.
    np.testing.assert_allclose(out, [[1, 3, 5, 7, 8, 9], [0, 10, 20, 30, 40, 50]])
    assert out.dtype == np.float64
    assert np.isnan(case[0, 1]), "the input must not be modified"


def test_fill_leading_and_trailing_use_nearest_valid() -> None:
    case = np.array([[nan, nan, 2.5, 4.5, nan], [nan, -1.0, nan, nan, nan]])
    (out,) = fill_missing([case], "toy.ts")
    np.testing.assert_allclose(out, [[2.5, 2.5, 2.5, 4.5, 4.5], [-1, -1, -1, -1, -1]])


def test_fill_leaves_complete_cases_alone() -> None:
    cases = [np.arange(6, dtype=float).reshape(2, 3), np.ones((2, 5))]
    out = fill_missing(cases, "toy.ts")
    for a, b in zip(out, cases, strict=True):
        np.testing.assert_array_equal(a, b)


def test_fill_all_nan_channel_is_an_error() -> None:
    cases = [np.ones((2, 3)), np.ones((2, 3)), np.array([[1.0, 2.0, 3.0], [nan, nan, nan]])]
    with pytest.raises(DataError) as info:
        fill_missing(cases, "data/Toy_TRAIN.ts")
    msg = str(info.value)
    assert "\n" not in msg
    assert "data/Toy_TRAIN.ts" in msg and "case index 2" in msg and "#3" in msg and "channel 1" in msg


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_fill_inf_is_an_error(bad: float) -> None:
    cases = [np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0, bad], [3.0, 4.0]])]
    with pytest.raises(DataError) as info:
        fill_missing(cases, "Toy_TEST.ts")
    msg = str(info.value)
    assert "\n" not in msg
    assert "Toy_TEST.ts" in msg and "case index 1" in msg and "#2" in msg and "channel 0" in msg
    assert "infinite" in msg


# ---------------------------------------------------------------------------------------------------
# ChannelScaler
# ---------------------------------------------------------------------------------------------------


def test_scaler_statistics_over_all_time_steps_of_all_cases() -> None:
    train = [np.array([[1.0, 2.0, 3.0], [10.0, 10.0, 10.0]]), np.array([[4.0, 5.0], [20.0, 20.0]])]
    scaler = ChannelScaler().fit(train)
    values0 = np.array([1, 2, 3, 4, 5.0])
    values1 = np.array([10, 10, 10, 20, 20.0])
    np.testing.assert_allclose(scaler.mean, [values0.mean(), values1.mean()])
    np.testing.assert_allclose(scaler.std, [values0.std(), values1.std()])
    out = scaler.transform(train)
    assert all(o.dtype == np.float32 for o in out)
    np.testing.assert_allclose(np.concatenate(out, axis=1).mean(axis=1), [0, 0], atol=1e-6)
    np.testing.assert_allclose(np.concatenate(out, axis=1).std(axis=1), [1, 1], atol=1e-6)


def test_scaler_uses_training_statistics_only() -> None:
    train = [np.array([[0.0, 2.0, 4.0]])]  # mean 2, std sqrt(8/3)
    test = [np.array([[100.0, 102.0]])]
    scaler = ChannelScaler().fit(train)
    (out,) = scaler.transform(test)
    std = np.sqrt(8.0 / 3.0)
    np.testing.assert_allclose(out, [[(100 - 2) / std, (102 - 2) / std]], rtol=1e-6)


def test_scaler_constant_channel_does_not_divide_by_zero() -> None:
    train = [np.array([[5.0, 5.0, 5.0], [1.0, 2.0, 3.0]]), np.array([[5.0, 5.0], [4.0, 5.0]])]
    scaler = ChannelScaler().fit(train)
    assert scaler.std[0] == 1.0
    with np.errstate(all="raise"):
        out = scaler.transform(train + [np.array([[6.0], [0.0]])])
    assert all(np.isfinite(o).all() for o in out)
    np.testing.assert_array_equal(out[0][0], [0, 0, 0])
    assert out[2][0, 0] == pytest.approx(1.0)


def test_scaler_tiny_std_treated_as_constant() -> None:
    scaler = ChannelScaler().fit([np.array([[1.0, 1.0 + 1e-12, 1.0]])])
    assert scaler.std[0] == 1.0


def test_scaler_round_trip_through_json() -> None:
    rng = np.random.default_rng(0)
    train = [rng.normal(3.0, 2.0, size=(4, 20)) for _ in range(5)]
    scaler = ChannelScaler().fit(train)
    restored = ChannelScaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    np.testing.assert_array_equal(restored.mean, scaler.mean)
    np.testing.assert_array_equal(restored.std, scaler.std)
    for a, b in zip(restored.transform(train), scaler.transform(train), strict=True):
        np.testing.assert_array_equal(a, b)


def test_scaler_rejects_channel_mismatch_and_bad_dict() -> None:
    scaler = ChannelScaler().fit([np.ones((2, 3))])
    with pytest.raises(ValueError, match="case 0"):
        scaler.transform([np.ones((3, 3))])
    with pytest.raises(ValueError):
        ChannelScaler.from_dict({"mean": [0.0, 1.0]})
    with pytest.raises(ValueError):
        ChannelScaler.from_dict({"mean": [0.0, 1.0], "std": [1.0]})


# ---------------------------------------------------------------------------------------------------
# pad_to_length
# ---------------------------------------------------------------------------------------------------


def test_pad_shapes_mask_and_values() -> None:
    a = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    b = np.array([[7.0], [8.0]])
    x, mask = pad_to_length([a, b], 4)
    assert x.shape == (2, 4, 2) and x.dtype == np.float32
    assert mask.shape == (2, 4) and mask.dtype == np.bool_
    # Time before channels: x[i, t, c] == series[i][c, t].
    np.testing.assert_array_equal(x[0], [[1, 4], [2, 5], [3, 6], [0, 0]])
    np.testing.assert_array_equal(x[1], [[7, 8], [0, 0], [0, 0], [0, 0]])
    np.testing.assert_array_equal(mask, [[False, False, False, True], [False, True, True, True]])


def test_pad_exact_length_has_no_padding() -> None:
    x, mask = pad_to_length([np.ones((3, 5))], 5)
    assert not mask.any() and x.shape == (1, 5, 3)


def test_pad_too_long_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"case 1 has length 6.*4"):
        pad_to_length([np.ones((2, 3)), np.ones((2, 6))], 4)
