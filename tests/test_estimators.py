"""The one estimator base: the conventions of scikit-learn, aeon and PyOD users, for all three estimators."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest
from conftest import synthetic_cases
from sklearn.exceptions import NotFittedError

import sbts
from sbts.cli.main import main
from sbts.errors import SBTSError
from sbts.runtime import load

TINY = dict(d_model=8, d_ff=16, n_layers=1, batch_size=32, device="cpu")


def sine_series(n=600, channels=2, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return np.sin(2 * np.pi * t[:, None] / 20 + np.arange(channels)) + 0.05 * rng.standard_normal((n, channels))


def test_all_three_are_importable_from_sbts():
    assert {sbts.SBTClassifier.task_class.name, sbts.SBTAnomalyDetector.task_class.name,
            sbts.SBTForecaster.task_class.name} == {"classification", "anomaly", "forecasting"}


@pytest.mark.parametrize("estimator,method,data", [
    (sbts.SBTClassifier, "predict", np.zeros((2, 3, 8))),
    (sbts.SBTClassifier, "decision_function", np.zeros((2, 3, 8))),
    (sbts.SBTAnomalyDetector, "decision_function", np.zeros((20, 2))),
    (sbts.SBTAnomalyDetector, "predict_proba", np.zeros((20, 2))),
    (sbts.SBTForecaster, "predict", np.zeros((20, 2))),
])
def test_use_before_fit_is_not_fitted_error(estimator, method, data):
    with pytest.raises(NotFittedError, match="not fitted yet"):
        getattr(estimator(), method)(data)
    with pytest.raises(SBTSError):  # and an sbts error: one line, caught by the CLI
        getattr(estimator(), method)(data)


def test_classifier_refuses_continuous_targets_and_takes_univariate_2d_input():
    X = np.random.default_rng(0).standard_normal((20, 16))
    with pytest.raises(SBTSError, match="continuous"):
        sbts.SBTClassifier(**TINY, epochs=1).fit(X, np.linspace(0, 1, 20))
    labels = np.arange(20) % 2
    clf = sbts.SBTClassifier(**TINY, epochs=1).fit(X, labels)  # (n_cases, n_timepoints): one channel
    assert clf.n_features_in_ == 1 and clf.predict(X).shape == (20,)
    assert clf.decision_function(X).shape == (20,)  # two classes: one score per case, as scikit-learn


def test_classifier_declares_aeon_capabilities():
    tags = sbts.SBTClassifier._tags
    assert tags["capability:multivariate"] and tags["capability:unequal_length"] and tags["capability:missing_values"]
    sk_tags = sbts.SBTClassifier().__sklearn_tags__()
    assert sk_tags.input_tags.three_d_array and sk_tags.input_tags.allow_nan


def test_classifier_fills_missing_values():
    train, labels = synthetic_cases(30, min_len=16, max_len=16, seed=1)
    X = np.stack(train)
    X[0, 1, 3:6] = np.nan
    clf = sbts.SBTClassifier(**TINY, epochs=1).fit(X, labels)
    assert np.isfinite(clf.predict_proba(X)).all()


@pytest.fixture(scope="module")
def detector():
    series = sine_series()
    return sbts.SBTAnomalyDetector(window=8, epochs=2, **TINY).fit(series[:400]), series


def test_detector_pyod_probabilities_and_confidence(detector):
    fitted, series = detector
    test = series[400:].copy()
    test[100:105] += 4.0
    scores = fitted.decision_function(test)
    order = np.argsort(scores)
    for method in ("linear", "unify"):
        proba = fitted.predict_proba(test, method=method)
        assert proba.shape == (200, 2) and np.allclose(proba.sum(1), 1) and ((proba >= 0) & (proba <= 1)).all()
        assert np.all(np.diff(proba[order, 1]) >= -1e-12)  # monotone in the score
    with pytest.raises(SBTSError, match="linear or unify"):
        fitted.predict_proba(test, method="rank")
    confidence = fitted.predict_confidence(test)
    assert confidence.shape == (200,) and ((confidence >= 0) & (confidence <= 1)).all()
    assert confidence[np.argmax(scores)] > 0.9  # the most anomalous step is surely an anomaly
    assert len(fitted.decision_scores_) == 400 and set(np.unique(fitted.labels_)) <= {0, 1}


def test_detector_fit_predict_score():
    series = sine_series()
    series[300:310] += 4.0
    labels = np.zeros(len(series), dtype=int)
    labels[300:310] = 1
    detector = sbts.SBTAnomalyDetector(window=8, epochs=2, val_fraction=0.1, **TINY)
    assert detector.fit_predict_score(series, labels) > 0.9
    assert 0 < detector.fit_predict_score(series, labels, scoring="average_precision_score") <= 1
    with pytest.raises(SBTSError, match="one 0/1 label per step"):
        detector.fit_predict_score(series, labels[:-1])


def test_forecaster_keeps_column_names_through_export_and_predict(tmp_path, capsys):
    values = sine_series(400, 2) + 5
    frame = pd.DataFrame(values, columns=["load", "temp"])
    forecaster = sbts.SBTForecaster(window=8, epochs=1, **TINY).fit(frame)
    assert forecaster.columns_ == ["load", "temp"] and list(forecaster.feature_names_in_) == ["load", "temp"]
    np.testing.assert_allclose(forecaster.predict(y=frame[-20:]), forecaster.predict(y=values[-20:]))
    with pytest.raises(SBTSError, match="not the fitted variables"):
        forecaster.predict(y=frame[["temp", "load"]])
    artifact = tmp_path / "f.sbts"
    forecaster.export(artifact)
    assert load(artifact).columns == ["load", "temp"]
    frame[-30:].to_csv(tmp_path / "history.csv", index=False)
    out = tmp_path / "forecasts.csv"
    assert main(["predict", str(artifact), "--input", str(tmp_path / "history.csv"), "-o", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["step", "load", "temp"] and len(rows) == 31
    np.testing.assert_allclose([float(rows[-1]["load"]), float(rows[-1]["temp"])],
                               forecaster.predict(y=values[-30:])[0], rtol=1e-4)
    frame[["temp", "load"]].to_csv(tmp_path / "swapped.csv", index=False)
    assert main(["predict", str(artifact), "--input", str(tmp_path / "swapped.csv")]) == 2
    assert "not the model's variables" in capsys.readouterr().err


def test_forecaster_refuses_exogenous_inputs():
    with pytest.raises(SBTSError, match="exogenous X is not supported"):
        sbts.SBTForecaster(window=8, epochs=1, **TINY).fit(sine_series(), X=sine_series())
