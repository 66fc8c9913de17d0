"""Tests for anomaly-score thresholds: percentile, POT / SPOT (Siffer et al. 2017) and the leaky paper protocol."""

from __future__ import annotations

import inspect
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import genpareto

from sbts.errors import SBTSError
from sbts.metrics import thresholds as thresholds_module
from sbts.metrics.thresholds import (
    PAPER_ANOMALY_RATIOS,
    PAPER_POT_SETTINGS,
    SPOT,
    THRESHOLD_METHODS,
    Threshold,
    DEFAULT_DRIFT_SPAN,
    fit_threshold,
    paper_protocol_threshold,
    percentile_threshold,
    pot_threshold,
    relative_threshold,
)
from sbts.heads.anomaly import FixedRule, RelativeRule, decision_rule


def exponential_scores(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).exponential(size=n)


# ---------------------------------------------------------------------------------------------------
# relative (follows the score level)
# ---------------------------------------------------------------------------------------------------


def test_relative_rule_replays_its_fit_on_the_reference():
    """The rule started at the fit's initial level ends at the recorded level over the reference and flags the
    recorded fraction of it: the fit (metrics) and the rule (runtime) agree."""
    reference = exponential_scores(5_000, seed=1)
    threshold = relative_threshold(reference, 0.02, 300, fitted_on="validation scores")
    p = threshold.parameters
    replay = RelativeRule(p["initial_level"], p["margin"], p["span"], p["log_floor"])
    flags, thresholds = replay.run(reference)
    assert replay.level == pytest.approx(p["level"], rel=1e-12)
    assert flags.mean() == pytest.approx(p["reference_fraction_above"]) and 0.015 < flags.mean() <= 0.021
    np.testing.assert_array_equal(flags, reference > thresholds)
    assert decision_rule(threshold.to_dict()).threshold == pytest.approx(threshold.value)


def test_relative_threshold_follows_a_level_shift_that_a_fixed_one_flags_whole():
    rng = np.random.default_rng(2)
    reference = rng.lognormal(0.0, 0.3, 4_000)
    test = rng.lognormal(np.log(30.0), 0.3, 6_000)  # the whole level moved up 30x: drift, not anomalies
    test[5_000:5_010] *= 50.0  # a short burst far above the new level
    relative = relative_threshold(reference, 0.01, 500, fitted_on="val")
    fixed = percentile_threshold(reference, 0.01, "val")
    fixed_flags = decision_rule(fixed.to_dict()).run(test)[0]
    relative_flags = decision_rule(relative.to_dict()).run(test)[0]
    assert fixed_flags.mean() == 1.0
    assert relative_flags[5_000:5_010].all() and relative_flags[3_000:5_000].mean() < 0.05


def test_a_fixed_record_and_bad_relative_records():
    assert isinstance(decision_rule({"value": 2.0}), FixedRule)
    assert decision_rule({"value": 2.0}).run([1.0, 3.0])[0].tolist() == [False, True]
    good = relative_threshold(exponential_scores(2_000, seed=3), 0.01, 100, fitted_on="val").to_dict()
    assert isinstance(decision_rule(good), RelativeRule)
    for key, value in (("level", float("nan")), ("span", 0), ("span", 2.5), ("log_floor", 0.0), ("margin", None)):
        bad = {**good, "parameters": {**good["parameters"], key: value}}
        with pytest.raises(SBTSError, match="relative threshold needs"):
            decision_rule(bad, "model.sbts")
    with pytest.raises(SBTSError, match="finite number"):
        decision_rule({"value": float("inf")})
    with pytest.raises(SBTSError, match="drift span"):
        relative_threshold([1.0, 2.0], 0.1, 0, fitted_on="val")


# ---------------------------------------------------------------------------------------------------
# percentile
# ---------------------------------------------------------------------------------------------------


def test_percentile_hand_case() -> None:
    scores = np.arange(1.0, 101.0)
    threshold = percentile_threshold(scores[::-1], 0.05, "validation scores (100 steps)")
    # numpy "linear": position 0.95 * 99 = 94.05 between sorted[94] = 95 and sorted[95] = 96.
    assert threshold.value == pytest.approx(95.05, abs=1e-12)
    assert np.mean(scores > threshold.value) == 0.05
    assert threshold.parameters["reference_fraction_above"] == 0.05
    assert (threshold.method, threshold.uses_test_data) == ("percentile", False)
    assert threshold.fitted_on == "validation scores (100 steps)"


def test_percentile_fraction_above_on_continuous_scores() -> None:
    scores = np.random.default_rng(3).normal(size=10_000)
    threshold = percentile_threshold(scores, 0.01, "training scores")
    # 0.99 * 9999 = 9899.01 lies between sorted[9899] and sorted[9900]: exactly sorted[9900:] are above.
    assert int((scores > threshold.value).sum()) == 100


# ---------------------------------------------------------------------------------------------------
# POT
# ---------------------------------------------------------------------------------------------------


def test_pot_on_exponential_matches_the_true_quantile() -> None:
    threshold = pot_threshold(exponential_scores(200_000, seed=0), risk=1e-4, level=0.98, fitted_on="synthetic")
    # True (1 - 1e-4) quantile of Exp(1): -log(1e-4) = 9.2103. Over 30 seeds the estimate had mean 9.217 and
    # standard deviation 0.16 (largest error 0.38), so 0.5 is about three standard deviations.
    assert threshold.value == pytest.approx(-math.log(1e-4), abs=0.5)
    p = threshold.parameters
    assert p["initial_threshold"] == pytest.approx(-math.log(0.02), abs=0.05)
    assert p["gpd_shape"] == pytest.approx(0.0, abs=0.06)  # exponential tail: gamma = 0, sd ~ 1/sqrt(4000)
    assert p["gpd_scale"] == pytest.approx(1.0, abs=0.1)  # memorylessness: excesses are Exp(1)
    assert p["n_peaks"] == 4000 and p["n_reference_scores"] == 200_000


@pytest.mark.parametrize(("shape", "tolerance"), [(0.3, 0.08), (-0.2, 0.05)])
def test_pot_recovers_the_gpd_shape(shape: float, tolerance: float) -> None:
    scores = genpareto.rvs(shape, size=200_000, random_state=np.random.default_rng(1))
    threshold = pot_threshold(scores, fitted_on="synthetic")
    # Excesses of a GPD over a threshold are GPD with the same shape; over 30 seeds the estimate's standard
    # deviation was 0.025 (shape 0.3) and 0.012 (shape -0.2) with 4,000 peaks.
    assert threshold.parameters["gpd_shape"] == pytest.approx(shape, abs=tolerance)


def test_pot_value_follows_siffer_formula_from_recorded_parameters() -> None:
    threshold = pot_threshold(exponential_scores(20_000, seed=2), risk=1e-3, level=0.95, fitted_on="synthetic")
    p = threshold.parameters
    ratio = p["risk"] * p["n_reference_scores"] / p["n_peaks"]
    expected = p["initial_threshold"] + p["gpd_scale"] / p["gpd_shape"] * (ratio ** -p["gpd_shape"] - 1.0)
    assert threshold.value == pytest.approx(expected, rel=1e-12)


def test_pot_quantile_gamma_zero_branch_is_the_limit_of_the_general_one() -> None:
    pot_quantile = thresholds_module._pot_quantile
    exponential_branch = pot_quantile(2.0, 0.0, 1.5, 1e-4, 10_000, 200)
    assert exponential_branch == pytest.approx(2.0 - 1.5 * math.log(1e-4 * 10_000 / 200))
    assert pot_quantile(2.0, 1e-9, 1.5, 1e-4, 10_000, 200) == pytest.approx(exponential_branch, rel=1e-6)


def test_pot_paper_settings_apply_the_multiplier() -> None:
    scores = exponential_scores(400_000, seed=4)  # level 0.99995 leaves 20 peaks
    smd = pot_threshold(scores, **PAPER_POT_SETTINGS["SMD"], fitted_on="synthetic")
    plain = pot_threshold(scores, risk=1e-5, level=0.99995, fitted_on="synthetic")
    assert smd.value == pytest.approx(1.04 * plain.value, rel=1e-12)
    assert smd.parameters["threshold_multiplier"] == 1.04
    assert "times 1.04" in smd.to_dict()["description"]
    assert PAPER_POT_SETTINGS["MSL"]["level"] == PAPER_POT_SETTINGS["SMAP"]["level"] == 0.97


# ---------------------------------------------------------------------------------------------------
# Threshold records
# ---------------------------------------------------------------------------------------------------


def test_to_dict_is_json_safe_and_describes_the_fit() -> None:
    threshold = pot_threshold(exponential_scores(5_000, seed=5), fitted_on="validation scores (5,000 steps)")
    record = threshold.to_dict()
    assert set(record) == {"value", "method", "fitted_on", "uses_test_data", "parameters", "description"}
    assert json.loads(json.dumps(record, allow_nan=False)) == record
    assert {"risk", "level", "initial_threshold", "gpd_shape", "gpd_scale", "n_peaks"} <= set(record["parameters"])
    description = record["description"]
    assert "\n" not in description and description.startswith(f"score > {threshold.value:.6g}: POT")
    assert "validation scores (5,000 steps)" in description


def test_threshold_rejects_leaky_records_that_do_not_say_test_and_unsafe_parameters() -> None:
    with pytest.raises(SBTSError, match="must say so in fitted_on"):
        Threshold(1.0, "best_f1", "all scores", True, {})
    with pytest.raises(SBTSError, match="JSON-safe"):
        Threshold(1.0, "percentile", "validation scores", False, {"quantile": float("nan")})
    with pytest.raises(SBTSError, match="threshold value must be finite"):
        Threshold(float("inf"), "percentile", "validation scores", False, {})


def test_description_of_another_method_lists_its_parameters() -> None:
    record = Threshold(np.float32(2.5), "best_f1", "TEST scores and labels", True, {"grid": 100}).to_dict()
    assert type(record["value"]) is float
    assert record["description"] == "score > 2.5: best_f1 with grid=100; fitted on TEST scores and labels"


# ---------------------------------------------------------------------------------------------------
# Thresholds depend only on what they are given
# ---------------------------------------------------------------------------------------------------


def test_fit_threshold_cannot_receive_test_data() -> None:
    names = set(inspect.signature(fit_threshold).parameters)
    assert names == {"method", "reference_scores", "fitted_on", "contamination", "risk", "level", "span"}
    with pytest.raises(TypeError):
        fit_threshold("percentile", reference_scores=[1.0, 2.0], fitted_on="val", contamination=0.1,
                      test_scores=[3.0])  # type: ignore[call-arg]


@pytest.mark.parametrize("seed", range(5))
def test_fit_threshold_is_a_function_of_the_reference_scores_only(seed: int) -> None:
    rng = np.random.default_rng(seed)
    reference = rng.gamma(2.0, size=int(rng.integers(2_000, 6_000)))
    kept = reference.copy()
    for method, settings in (("percentile", {"contamination": 0.01}), ("pot", {"risk": 1e-3, "level": 0.95}),
                             ("relative", {"contamination": 0.01, "span": 200})):
        first = fit_threshold(method, reference_scores=reference, fitted_on="val", **settings)
        # Unrelated work in between (another threshold on other scores) must not change the result.
        paper_protocol_threshold(reference, reference, rng.normal(size=100), 0.01)
        second = fit_threshold(method, reference_scores=reference.copy(), fitted_on="val", **settings)
        assert first == second
        assert not first.uses_test_data
    np.testing.assert_array_equal(reference, kept)


def test_fit_threshold_dispatches_with_defaults() -> None:
    reference = exponential_scores(5_000, seed=6)
    assert fit_threshold("pot", reference_scores=reference, fitted_on="val") == pot_threshold(reference,
                                                                                              fitted_on="val")
    assert (fit_threshold("percentile", reference_scores=reference, fitted_on="val", contamination=0.02)
            == percentile_threshold(reference, 0.02, "val"))
    assert (fit_threshold("relative", reference_scores=reference, fitted_on="val", contamination=0.02)
            == relative_threshold(reference, 0.02, DEFAULT_DRIFT_SPAN, fitted_on="val"))
    assert THRESHOLD_METHODS == ("percentile", "pot", "relative")


def test_paper_protocol_uses_test_scores_and_says_so() -> None:
    train, val, test = np.arange(1.0, 51.0), np.arange(51.0, 61.0), np.arange(61.0, 101.0)
    threshold = paper_protocol_threshold(train, val, test, anomaly_ratio=0.05)
    assert threshold.value == pytest.approx(95.05, abs=1e-12)  # the 0.95 quantile of 1..100, as above
    assert threshold.uses_test_data is True and threshold.method == "paper_protocol"
    assert "test" in threshold.fitted_on.lower()
    shifted = paper_protocol_threshold(train, val, test + 100.0, anomaly_ratio=0.05)
    assert shifted.value != threshold.value
    assert PAPER_ANOMALY_RATIOS == {"SMD": 0.005, "MSL": 0.01, "SMAP": 0.01}


# ---------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------


def _ties_below_risk() -> np.ndarray:
    # 950 zeros and 50 distinct positive scores: the 0.5 quantile is 0, leaving 50 peaks (5%), fewer than risk 10%.
    return np.concatenate([np.zeros(950), np.linspace(1.0, 2.0, 50)])


def _few_peaks_error_case() -> Threshold:
    return pot_threshold(np.arange(100.0), fitted_on="val")


@pytest.mark.parametrize(("call", "message"), [
    (lambda: percentile_threshold([], 0.05, "val"), "reference_scores is empty"),
    (lambda: percentile_threshold([1.0, np.nan, 2.0], 0.05, "val"), r"1 non-finite scores \(first at index 1: nan\)"),
    (lambda: pot_threshold([1.0, 2.0, np.inf], fitted_on="val"), "non-finite scores"),
    (lambda: percentile_threshold(np.ones((3, 2)), 0.05, "val"), r"must be 1-D .* shape \(3, 2\)"),
    (lambda: percentile_threshold([1.0, 2.0], 0.0, "val"), r"contamination must be in \(0, 0.5\] .* got 0.0"),
    (lambda: percentile_threshold([1.0, 2.0], 0.7, "val"), r"contamination must be in \(0, 0.5\] .* got 0.7"),
    (lambda: percentile_threshold([1.0, 2.0], "a lot", "val"), "contamination must be a number"),
    (lambda: percentile_threshold([1.0, 2.0], 0.1, ""), "fitted_on must describe"),
    (lambda: pot_threshold(np.arange(1000.0), risk=0.02, level=0.98, fitted_on="val"),
     r"risk=0.02 must be below 1 - level = 0.02"),
    (lambda: pot_threshold(np.arange(1000.0), risk=1.5, fitted_on="val"), r"risk must be in \(0, 1\)"),
    (lambda: pot_threshold(np.arange(1000.0), level=1.0, fitted_on="val"), r"level must be in \(0, 1\)"),
    (lambda: pot_threshold(_ties_below_risk(), risk=0.1, level=0.5, fitted_on="val"),
     r"risk=0.1 must be below the fraction of scores above the initial threshold \(50/1000"),
    (_few_peaks_error_case, r"only 2 of 100 scores exceed the initial threshold at level=0.98; .* at least 10"),
    (lambda: pot_threshold(np.concatenate([np.zeros(980), np.ones(20)]), level=0.9, fitted_on="val"),
     "all 20 peaks over the initial threshold are equal"),
    (lambda: pot_threshold([1.0], threshold_multiplier=0.0, fitted_on="val"),
     "threshold_multiplier must be a positive number, got 0.0"),
    (lambda: paper_protocol_threshold([1.0], [2.0], [3.0], anomaly_ratio=1.0), "not a percentage"),
    (lambda: paper_protocol_threshold([1.0], [2.0], [], anomaly_ratio=0.01), "test_scores is empty"),
    (lambda: fit_threshold("best_f1", reference_scores=[1.0], fitted_on="val"),
     "unknown threshold method 'best_f1'; known: percentile, pot"),
    (lambda: fit_threshold("percentile", reference_scores=[1.0], fitted_on="val", contamination=0.1, risk=1e-3),
     "risk does not apply to threshold method 'percentile'"),
    (lambda: fit_threshold("pot", reference_scores=[1.0], fitted_on="val", contamination=0.1),
     "contamination does not apply to threshold method 'pot'"),
    (lambda: fit_threshold("percentile", reference_scores=[1.0], fitted_on="val"), "needs contamination"),
    (lambda: SPOT(refit_every=0), "refit_every must be a positive integer"),
    (lambda: SPOT(risk=0.05, level=0.98), "risk=0.05 must be below 1 - level"),
    (lambda: SPOT().step(1.0), "before SPOT.fit"),
    (lambda: SPOT(level=0.9).fit(np.arange(1000.0)).step(float("nan")), "non-finite score nan at stream step 0"),
])
def test_bad_input_raises_one_line_error(call, message: str) -> None:
    with pytest.raises(SBTSError, match=message) as caught:
        call()
    assert "\n" not in str(caught.value)


def test_non_finite_gpd_fit_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    failing_fit = SimpleNamespace(fit=lambda peaks, floc: (float("nan"), 0.0, 1.0))
    monkeypatch.setattr(thresholds_module, "genpareto", failing_fit)
    with pytest.raises(SBTSError, match=r"the GPD fit to 100 peaks failed \(shape=nan"):
        pot_threshold(exponential_scores(5_000, seed=7), fitted_on="val")


# ---------------------------------------------------------------------------------------------------
# SPOT
# ---------------------------------------------------------------------------------------------------


def spot_stream(seed: int) -> np.ndarray:
    """Exponential scores with a few extreme ones, so that the stream has normal steps, peaks and anomalies."""
    stream = exponential_scores(600, seed)
    stream[[100, 300, 301]] = 40.0
    return stream


def test_spot_initial_threshold_is_pot() -> None:
    initial = exponential_scores(5_000, seed=8)
    spot = SPOT(risk=1e-3, level=0.95).fit(initial, fitted_on="validation scores")
    assert spot.threshold == pot_threshold(initial, risk=1e-3, level=0.95, fitted_on="val").value


def test_spot_run_equals_repeated_step() -> None:
    initial, stream = exponential_scores(5_000, seed=9), spot_stream(seed=10)
    flags, thresholds = SPOT().fit(initial).run(stream)
    stepper = SPOT().fit(initial)
    stepped = [stepper.step(score) for score in stream]
    np.testing.assert_array_equal(flags, [flag for flag, _ in stepped])
    np.testing.assert_array_equal(thresholds, [threshold for _, threshold in stepped])
    np.testing.assert_array_equal(flags, stream > thresholds)
    assert flags[[100, 300, 301]].all()
    assert len(np.unique(thresholds)) > 1, "the stream's peaks must have moved the threshold"


def test_spot_without_peaks_keeps_the_pot_threshold() -> None:
    initial = exponential_scores(5_000, seed=11)
    spot = SPOT().fit(initial)
    pot_value = pot_threshold(initial, fitted_on="val").value
    below = np.random.default_rng(12).uniform(0.0, spot.initial_threshold, size=500)
    flags, thresholds = spot.run(below)
    assert not flags.any()
    np.testing.assert_array_equal(thresholds, pot_value)
    assert spot.threshold == pot_value


def test_spot_does_not_add_anomalies_to_the_peaks() -> None:
    spot = SPOT().fit(exponential_scores(5_000, seed=13))
    before = (spot.threshold, len(spot.peaks), spot.n_observed, spot.gpd_shape)
    assert spot.step(10 * spot.threshold) == (True, before[0])
    assert (spot.threshold, len(spot.peaks), spot.n_observed, spot.gpd_shape) == before
    # A peak below the threshold, by contrast, is added, refits the GPD (refit_every=1) and moves the threshold.
    is_anomaly, used = spot.step((spot.initial_threshold + spot.threshold) / 2)
    assert (is_anomaly, used) == (False, before[0])
    assert len(spot.peaks) == before[1] + 1 and spot.gpd_shape != before[3] and spot.threshold != before[0]


def test_spot_refit_every_keeps_the_fit_but_follows_the_peak_count() -> None:
    spot = SPOT(risk=1e-3, level=0.95, refit_every=1_000).fit(exponential_scores(5_000, seed=14))
    shape, scale, t = spot.gpd_shape, spot.gpd_scale, spot.initial_threshold
    spot.run(spot_stream(seed=15))
    # Algorithm 1 recomputes the threshold at peaks only, so end on one to compare with the current counts.
    assert spot.step((t + spot.threshold) / 2)[0] is False
    assert (spot.gpd_shape, spot.gpd_scale) == (shape, scale)
    assert len(spot.peaks) > 251  # the stream added peaks besides the last one
    ratio = spot.risk * spot.n_observed / len(spot.peaks)
    assert spot.threshold == pytest.approx(t + scale / shape * (ratio ** -shape - 1.0), rel=1e-12)


def test_spot_to_threshold_records_online_updates() -> None:
    spot = SPOT().fit(exponential_scores(5_000, seed=16), fitted_on="validation scores")
    spot.run(spot_stream(seed=17))
    threshold = spot.to_threshold()
    assert threshold.fitted_on.startswith("initialised on validation scores; updated online on the scored stream")
    assert (threshold.method, threshold.uses_test_data, threshold.value) == ("spot", False, spot.threshold)
    assert threshold.parameters["n_stream_steps"] == 600 and threshold.parameters["n_stream_anomalies"] >= 3
    json.dumps(threshold.to_dict(), allow_nan=False)
