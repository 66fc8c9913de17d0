"""The direct multi-step forecasting baselines and the forecast errors, on small synthetic series."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from sbts.baselines import forecasting as fb
from sbts.baselines.forecasting import (BASELINES, Persistence, RidgeOnWindow, RidgePerVariable, SeasonalPersistence,
                                        WindowMean)
from sbts.errors import ConfigError, DataError
from sbts.metrics import forecasting as fm
from sbts.metrics.forecasting import FORECAST_METRIC_NOTES, forecast_errors

WINDOW = 12  # 11 observed rows: past numpy's 8-element pairwise-summation block, so the summation order shows
PERIOD = 24


def sliding(rows: np.ndarray, length: int) -> np.ndarray:
    """(N - length + 1, length, D): the ``length`` rows starting at each row."""
    return np.lib.stride_tricks.sliding_window_view(rows, length, axis=0).transpose(0, 2, 1)


def truth_at(rows: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    return np.asarray(sliding(rows, horizon)[origins], dtype=np.float64)


@pytest.fixture
def rows() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.standard_normal((400, 3)) + np.arange(3)).astype(np.float32)


def fitted(baseline, rows: np.ndarray, horizon: int, window: int = WINDOW):
    origins = np.arange(window - 1, 300 - horizon + 1)
    val_origins = np.arange(300, 350 - horizon + 1)
    return baseline(window=window, horizon=horizon, period=PERIOD).fit(rows, origins, val_origins)


# --- the interface ------------------------------------------------------------------------------

@pytest.mark.parametrize("horizon", [1, 5, 30])
@pytest.mark.parametrize("baseline", BASELINES)
def test_every_baseline_forecasts_every_step_of_every_variable_as_float64(baseline, horizon, rows):
    model = fitted(baseline, rows, horizon)
    origins = np.array([300, 301, 377, 400])  # 400: the forecast of the rows past the end of the series
    forecasts = model.predict(rows, origins)
    assert forecasts.shape == (4, horizon, 3) and forecasts.dtype == np.float64 and np.isfinite(forecasts).all()
    assert model.predict(rows, np.array([], dtype=np.int64)).shape == (0, horizon, 3)
    assert model.lookback == {"persistence": 1, "seasonal_persistence": PERIOD, "window_mean": WINDOW - 1,
                              "ridge": WINDOW - 1, "ridge_per_variable": WINDOW - 1}[model.name]
    description = model.describe()
    assert description["rule"] and description["horizon"] == horizon
    json.dumps(description)


def test_the_baselines_and_their_names():
    assert [b.name for b in BASELINES] == ["persistence", "seasonal_persistence", "window_mean", "ridge",
                                           "ridge_per_variable"]


@pytest.mark.parametrize("baseline", BASELINES)
def test_no_forecast_reads_the_rows_at_or_after_its_origin(baseline, rows):
    horizon = 30  # longer than the period: seasonal persistence wraps around its last season
    model = fitted(baseline, rows, horizon)
    for origin in (model.lookback, 150, 300, 399):
        clean = model.predict(rows, np.array([origin]))
        assert np.isfinite(clean).all()
        for poison in (np.nan, 1e30):
            poisoned = rows.copy()
            poisoned[origin:] = poison
            np.testing.assert_array_equal(model.predict(poisoned, np.array([origin])), clean)
        np.testing.assert_array_equal(model.predict(rows[:origin], np.array([origin])), clean)


@pytest.mark.parametrize("baseline", BASELINES)
def test_batches_change_no_forecast(baseline, rows, monkeypatch):
    model = fitted(baseline, rows, 7)
    origins = np.arange(300, 394)
    whole = model.predict(rows, origins)
    monkeypatch.setattr(fb, "PREDICT_BATCH_VALUES", 1)  # one origin at a time
    # ridge: a float32 matrix product of one row rounds differently from one of many
    np.testing.assert_allclose(model.predict(rows, origins), whole, rtol=1e-6 if model.name.startswith("ridge") else 0)


# --- one step ahead: today's baselines --------------------------------------------------------------

def test_one_step_ahead_persistence_and_window_mean_are_the_old_formulas_exactly(rows):
    windows = sliding(rows, WINDOW)  # the old baselines' input: the window ending at each forecast step
    origins = np.arange(WINDOW - 1, len(rows))
    persistence = fitted(Persistence, rows, 1).predict(rows, origins)
    np.testing.assert_array_equal(persistence[:, 0], np.asarray(windows[:, -2], dtype=np.float64))
    mean = fitted(WindowMean, rows, 1).predict(rows, origins)
    np.testing.assert_array_equal(mean[:, 0], np.asarray(windows[:, :-1], dtype=np.float64).mean(axis=1))
    small = np.arange(4 * 2, dtype=np.float32).reshape(4, 2)
    np.testing.assert_array_equal(WindowMean(4, 1).predict(small, np.array([3]))[0, 0], [2.0, 3.0])  # rows 0, 1, 2


def test_one_step_ahead_ridge_is_the_old_ridge_on_windows(rows):
    windows = sliding(rows, WINDOW)
    train, val, test = windows[:289], windows[289:339], windows[339:]  # forecast steps 11..299, 300..349, 350..
    features = lambda w: np.asarray(w[:, :-1], dtype=np.float32).reshape(len(w), -1)  # noqa: E731
    old_mse, old_models = {}, {}
    for alpha in fb.RIDGE_ALPHAS:
        old_models[alpha] = Ridge(alpha=alpha).fit(features(train), np.asarray(train[:, -1], dtype=np.float32))
        predicted = np.asarray(old_models[alpha].predict(features(val)), dtype=np.float64)
        old_mse[alpha] = float(np.mean(np.square(predicted - val[:, -1])))
    old_alpha = min(old_mse, key=old_mse.get)
    model = fitted(RidgeOnWindow, rows, 1)
    assert model.alpha_ == old_alpha
    np.testing.assert_allclose(list(model.val_mse_.values()), list(old_mse.values()), rtol=1e-6)
    np.testing.assert_allclose(model.predict(rows, np.arange(350, 400))[:, 0],
                               old_models[old_alpha].predict(features(test)), rtol=1e-5, atol=1e-6)


# --- seasonal persistence ---------------------------------------------------------------------------

def sine(n_rows: int, period: int = PERIOD) -> np.ndarray:
    """Two exactly periodic sines (one season tiled: no rounding differs between seasons)."""
    phase = 2 * np.pi * np.arange(period) / period
    season = np.stack([np.sin(phase), 0.5 * np.cos(phase) + 1], axis=1)
    return np.tile(season, (-(-n_rows // period), 1))[:n_rows].astype(np.float32)


def test_seasonal_persistence_detects_a_sines_period_and_forecasts_it_exactly():
    rows, horizon = sine(1000), 60  # 60: two and a half seasons ahead
    model = SeasonalPersistence(window=WINDOW, horizon=horizon).fit(rows, np.arange(WINDOW - 1, 700 - horizon + 1))
    description = model.describe()
    assert model.period_ == model.lookback == PERIOD
    assert description["period"] == PERIOD and description["period_source"] == "detected"
    assert description["detection"]["lags_searched"] == [fb.MIN_SEASON_LAG, 700 // fb.MIN_SEASONS_SEEN]
    origins = np.arange(700, 1000 - horizon + 1)
    np.testing.assert_array_equal(model.predict(rows, origins), truth_at(rows, origins, horizon))


def test_seasonal_persistence_repeats_the_last_season_by_its_formula(rows):
    horizon, period = 11, 4
    model = SeasonalPersistence(window=WINDOW, horizon=horizon, period=period).fit(rows, np.arange(11, 300))
    assert model.describe()["period_source"] == "given" and "detection" not in model.describe()
    origins = np.array([4, 17, 250, 400])
    expected = [[rows[o + k - period * (k // period + 1)] for k in range(horizon)] for o in origins]
    np.testing.assert_array_equal(model.predict(rows, origins), np.array(expected, dtype=np.float64))


# 35, 48: walks whose autocorrelation has a local maximum above MIN_SEASON_AUTOCORRELATION that does not repeat
@pytest.mark.parametrize("seed", [0, 1, 2, 35, 48])
def test_a_random_walk_has_no_season_and_gets_persistence(seed):
    rows = np.cumsum(np.random.default_rng(seed).standard_normal((3000, 2)), axis=0).astype(np.float32)
    model = SeasonalPersistence(window=WINDOW, horizon=8).fit(rows, np.arange(WINDOW - 1, 2000))
    description = model.describe()
    assert model.period_ == 1 and description["period_source"] == "none detected"
    assert "no season detected" in description["rule"] and description["detection"]["autocorrelation_at_period"] is None
    origins = np.arange(2000, 2990)
    np.testing.assert_array_equal(model.predict(rows, origins), Persistence(WINDOW, 8).predict(rows, origins))


def test_no_season_in_constant_rows_or_past_a_third_of_the_training_rows():
    constant = np.ones((500, 2), dtype=np.float32)
    assert SeasonalPersistence(WINDOW, 4).fit(constant, np.arange(WINDOW - 1, 400)).period_ == 1
    short = sine(3 * PERIOD - 1)  # a period must fit MIN_SEASONS_SEEN times in the training rows
    assert SeasonalPersistence(WINDOW, 1).fit(short, np.arange(WINDOW - 1, len(short))).period_ == 1
    assert SeasonalPersistence(WINDOW, 1).fit(sine(3 * PERIOD + 3), np.arange(WINDOW - 1, 75)).period_ == PERIOD


def test_seasonal_persistence_refuses_an_origin_with_less_than_a_season_before_it():
    rows = sine(500)
    model = SeasonalPersistence(WINDOW, 3).fit(rows, np.arange(WINDOW - 1, 400))
    with pytest.raises(DataError, match=r"origin 23 has 23 rows before it.*reads 24"):
        model.predict(rows, np.array([100, 23]))
    with pytest.raises(AttributeError, match="call fit"):
        SeasonalPersistence(WINDOW, 3).lookback


# --- ridge -------------------------------------------------------------------------------------------

def linear_autoregression(n_rows: int) -> np.ndarray:
    """A noiseless VAR(2) that neither dies out nor explodes: two rotations (eigenvalues on the unit circle)
    and a third variable driven by both."""
    rows = np.zeros((n_rows, 3))
    rows[0], rows[1] = [1.0, 0.0, 0.0], [0.9, 0.4, 0.2]
    c, s = np.cos(0.3), np.sin(0.3)
    a = np.array([[c, -s, 0.0], [s, c, 0.0], [0.3, 0.2, 0.2]])
    b = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.1, -0.2, 0.1]])
    for t in range(2, n_rows):
        rows[t] = a @ rows[t - 1] + b @ rows[t - 2]
    return rows.astype(np.float32)


def test_ridge_forecasts_a_linear_autoregression_four_steps_ahead_and_picks_its_penalty_on_validation():
    rows, horizon, window = linear_autoregression(1200), 4, 6
    ridge = RidgeOnWindow(window, horizon).fit(rows, np.arange(window - 1, 800 - horizon + 1),
                                                np.arange(800, 1000 - horizon + 1))
    assert set(ridge.val_mse_) == set(ridge.alphas) and ridge.alpha_ == min(ridge.val_mse_, key=ridge.val_mse_.get)
    val = np.arange(800, 1000 - horizon + 1)
    by_hand = np.mean(np.square(ridge.predict(rows, val) - truth_at(rows, val, horizon)))
    assert ridge.val_mse_[ridge.alpha_] == pytest.approx(by_hand, rel=1e-6)
    assert ridge.describe()["alpha_selected_on"].startswith("validation")
    test = np.arange(1000, 1200 - horizon + 1)
    truth = truth_at(rows, test, horizon)
    mse = np.mean(np.square(ridge.predict(rows, test) - truth))
    persistence = np.mean(np.square(Persistence(window, horizon).predict(rows, test) - truth))
    assert mse < 1e-3 and mse < persistence / 100
    plain = RidgeOnWindow(window, horizon).fit(rows, np.arange(window - 1, 100))
    assert plain.alpha_ == fb.DEFAULT_ALPHA and plain.val_mse_ == {}
    assert plain.describe()["alpha_selected_on"].startswith("none")


def test_ridge_thins_its_training_origins_to_bound_features_and_targets(monkeypatch):
    rows, horizon, window = linear_autoregression(1200), 4, 6
    origins = np.arange(window - 1, 800 - horizon + 1)
    per_origin = (window - 1 + horizon) * 3  # feature and target values
    monkeypatch.setattr(fb, "MAX_RIDGE_VALUES", 100 * per_origin)
    ridge = RidgeOnWindow(window, horizon).fit(rows, origins)
    assert ridge.thinning_ == -(-len(origins) // 100) and ridge.n_training_origins_ * per_origin <= fb.MAX_RIDGE_VALUES
    assert ridge.describe()["training_origins_used"] == f"every {ridge.thinning_} ({ridge.n_training_origins_})"
    monkeypatch.setattr(fb, "MAX_RIDGE_VALUES", len(origins) * per_origin)
    assert RidgeOnWindow(window, horizon).fit(rows, origins).describe()["training_origins_used"] == \
        f"all ({len(origins)})"


def test_ridge_per_variable_is_one_ridge_fit_on_every_variable_s_windows(rows):
    horizon, lookback = 3, WINDOW - 1
    model = fitted(RidgePerVariable, rows, horizon)
    train = np.arange(WINDOW - 1, 300 - horizon + 1)
    examples = [(rows[o - lookback:o, c], rows[o:o + horizon, c]) for o in train for c in range(3)]
    by_hand = Ridge(alpha=model.alpha_).fit(np.array([e[0] for e in examples]), np.array([e[1] for e in examples]))
    test = np.arange(350, 398)
    expected = np.stack([by_hand.predict(np.stack([rows[o - lookback:o, c] for o in test])) for c in range(3)], -1)
    np.testing.assert_allclose(model.predict(rows, test), expected, rtol=1e-4, atol=1e-5)
    assert model.alpha_ == min(model.val_mse_, key=model.val_mse_.get)
    assert "the same coefficients for every variable" in model.describe()["rule"]


def test_ridge_per_variable_treats_every_variable_alike(rows):
    order = [2, 0, 1]
    model, permuted = fitted(RidgePerVariable, rows, 4), fitted(RidgePerVariable, rows[:, order], 4)
    test = np.arange(350, 397)
    np.testing.assert_allclose(permuted.predict(rows[:, order], test), model.predict(rows, test)[..., order],
                               rtol=1e-4, atol=1e-5)


def test_ridge_per_variable_forecasts_a_shared_autoregression_better_than_joint_ridge_on_few_rows():
    """Three variables following one AR(2) law: per variable, the law is fitted from three times the examples with
    a fraction of the coefficients."""
    rng = np.random.default_rng(3)
    series = np.zeros((260, 3))
    series[:2] = rng.standard_normal((2, 3))
    for t in range(2, len(series)):
        series[t] = 1.6 * series[t - 1] - 0.8 * series[t - 2] + 0.1 * rng.standard_normal(3)
    rows, horizon, window = series.astype(np.float32), 5, 33
    train, val, test = np.arange(window - 1, 120 - horizon + 1), np.arange(120, 160), np.arange(160, 256)
    errors = {}
    for baseline in (RidgeOnWindow, RidgePerVariable):
        model = baseline(window, horizon).fit(rows, train, val)
        errors[baseline.name] = np.mean(np.square(model.predict(rows, test) - truth_at(rows, test, horizon)))
    assert errors["ridge_per_variable"] < errors["ridge"]


# --- refusals ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arguments, culprit", [
    ({"window": 12, "horizon": 0}, "horizon"), ({"window": 12, "horizon": -3}, "horizon"),
    ({"window": 12, "horizon": 2.0}, "horizon"), ({"window": 12, "horizon": True}, "horizon"),
    ({"window": 1, "horizon": 4}, "window"), ({"window": "12", "horizon": 4}, "window"),
])
@pytest.mark.parametrize("baseline", BASELINES)
def test_bad_arguments_are_refused_in_one_line(baseline, arguments, culprit):
    with pytest.raises(ConfigError, match=culprit) as refused:
        baseline(**arguments)
    assert repr(list(arguments.values())[list(arguments).index(culprit)]) in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_bad_period_or_penalty_is_refused():
    for period in (0, -24, 2.5):
        with pytest.raises(ConfigError, match=f"period must be an integer >= 1, got {period!r}"):
            SeasonalPersistence(WINDOW, 4, period=period)
    with pytest.raises(ConfigError, match="alphas"):
        RidgeOnWindow(WINDOW, 4, alphas=(1.0, -1.0))


@pytest.mark.parametrize("baseline", BASELINES)
def test_origins_that_break_the_contract_are_refused(baseline, rows):
    model = baseline(WINDOW, 10, period=PERIOD)
    with pytest.raises(DataError, match="origin 391 is past the series"):  # its targets run past the end
        model.fit(rows, np.arange(WINDOW - 1, 392))
    with pytest.raises(DataError, match="origin 10 has 10 rows before it"):
        model.fit(rows, np.arange(WINDOW - 2, 300))
    with pytest.raises(DataError, match="2-D"):
        model.fit(rows[None], np.arange(WINDOW - 1, 300))
    with pytest.raises(DataError, match="row indices"):
        model.fit(rows, np.arange(WINDOW - 1, 300).astype(float))
    fitted_model = model.fit(rows, np.arange(WINDOW - 1, 300))
    with pytest.raises(DataError, match="origin 401 is past the series"):
        fitted_model.predict(rows, np.array([401]))


# --- forecast errors ------------------------------------------------------------------------------------

def test_forecast_errors_average_over_origins_steps_and_variables_by_hand():
    truth = np.zeros((2, 3, 2))
    errors = np.array([[[1, 0], [2, 2], [0, -3]],
                       [[-1, 2], [0, 0], [1, 1]]], dtype=np.float64)
    std = np.array([2.0, 10.0])
    result = forecast_errors(truth + errors, truth, std, ["a", "b"])
    # step 1: errors 1, 0, -1, 2; step 2: 2, 2, 0, 0; step 3: 0, -3, 1, 1
    assert result["per_horizon_step"]["mse"] == [6 / 4, 8 / 4, 11 / 4]
    assert result["per_horizon_step"]["mae"] == [4 / 4, 4 / 4, 5 / 4]
    assert result["mse"] == pytest.approx(25 / 12) == pytest.approx(np.mean(result["per_horizon_step"]["mse"]))
    assert result["mae"] == pytest.approx(13 / 12)
    # variable a: 1, 2, 0, -1, 0, 1; b: 0, 2, -3, 2, 0, 1
    assert result["per_variable"] == {"a": {"mse": 7 / 6, "mae": 5 / 6}, "b": {"mse": 18 / 6, "mae": 8 / 6}}
    assert result["mse_original"] == pytest.approx((7 * 4 + 18 * 100) / 12)
    assert result["mae_original"] == pytest.approx((5 * 2 + 8 * 10) / 12)
    assert result["n_forecasts"] == 2 and result["horizon"] == 3 and "n_steps" not in result
    assert {"per_horizon_step", "n_forecasts, horizon"} <= set(FORECAST_METRIC_NOTES)
    assert "every step ahead" in FORECAST_METRIC_NOTES["mse, mae"]


def test_forecast_errors_in_chunks_of_float32_origins_are_the_direct_computation(monkeypatch):
    rng = np.random.default_rng(3)
    forecasts = rng.standard_normal((37, 5, 4)).astype(np.float32)
    truth = rng.standard_normal((37, 5, 4)).astype(np.float32)
    std = rng.uniform(0.5, 3.0, 4)
    errors = forecasts.astype(np.float64) - truth
    whole = forecast_errors(forecasts, truth, std)
    assert whole["mse"] == pytest.approx(np.mean(np.square(errors)))
    assert whole["mae_original"] == pytest.approx(np.mean(np.abs(errors * std)))
    assert whole["mse_original"] == pytest.approx(np.mean(np.square(errors * std)))
    np.testing.assert_allclose(whole["per_horizon_step"]["mse"], np.square(errors).mean(axis=(0, 2)))
    np.testing.assert_allclose([v["mae"] for v in whole["per_variable"].values()], np.abs(errors).mean(axis=(0, 1)))
    assert list(whole["per_variable"]) == ["x0", "x1", "x2", "x3"]
    monkeypatch.setattr(fm, "CHUNK_VALUES", 7)  # one origin at a time
    chunked = forecast_errors(forecasts, truth, std)
    assert chunked.keys() == whole.keys()
    for key in ("mse", "mae", "mse_original", "mae_original"):
        assert chunked[key] == pytest.approx(whole[key], rel=1e-12)
    np.testing.assert_allclose(chunked["per_horizon_step"]["mae"], whole["per_horizon_step"]["mae"], rtol=1e-12)


def test_one_step_ahead_errors_are_todays():
    rng = np.random.default_rng(4)
    forecasts, truth, std = rng.standard_normal((50, 1, 3)), rng.standard_normal((50, 1, 3)), np.array([1., 2., 3.])
    result = forecast_errors(forecasts, truth, std)
    errors = (forecasts - truth)[:, 0]
    assert result["mse"] == pytest.approx(np.mean(np.square(errors)))
    assert result["mse_original"] == pytest.approx(np.mean(np.square(errors * std)))
    assert result["per_horizon_step"]["mse"] == [pytest.approx(result["mse"])]


@pytest.mark.parametrize("forecasts, truth, message", [
    (np.zeros((4, 2, 3)), np.zeros((4, 3, 3)), "must be the same non-empty"),
    (np.zeros((4, 3)), np.zeros((4, 3)), "must be the same non-empty"),  # 2-D: one step ahead is (n, 1, D)
    (np.zeros((0, 2, 3)), np.zeros((0, 2, 3)), "must be the same non-empty"),
    (np.full((4, 2, 3), np.nan), np.zeros((4, 2, 3)), "24 forecast values are not finite"),
    (np.where(np.eye(3, dtype=bool), np.inf, 0.0)[None].repeat(2, 0), np.zeros((2, 3, 3)), "6 forecast values"),
])
def test_forecast_errors_refuse_mismatched_or_non_finite_forecasts(forecasts, truth, message):
    with pytest.raises(DataError, match=message) as refused:
        forecast_errors(forecasts, truth, np.ones(3))
    assert "\n" not in str(refused.value)


def test_forecast_errors_refuse_a_std_per_variable_of_the_wrong_length():
    with pytest.raises(DataError, match="one value per variable"):
        forecast_errors(np.zeros((2, 2, 3)), np.zeros((2, 2, 3)), np.ones(2))
