"""C exports of models trained briefly on real data (JapaneseVowels, SMD, ETTm1) agree with the numpy runtime
on real test inputs: identical class predictions and anomaly decisions, scores and forecasts (one and three steps
ahead) to 1e-5, streams equal to batch."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import real_data_dir

from sbts import SBTAnomalyDetector, SBTClassifier, SBTForecaster
from sbts.data import resolve_classification
from sbts.data.anomaly import load_anomaly
from sbts.data.forecasting import load_forecasting
from sbts.export.c_build import CModel, compile_library, find_compiler
from sbts.export.c_source import c_sources
from sbts.runtime import load
from sbts.runtime.artifact import read_artifact
from sbts.runtime.inputs import read_cases

pytestmark = [pytest.mark.data, pytest.mark.skipif(find_compiler() is None, reason="no C compiler found")]
TINY = dict(d_model=16, n_heads=2, n_layers=2, d_ff=32, epochs=1, random_state=0)
STREAMABLE = dict(attention="step_t", norm="layer", pos_encoding="rope")  # the Step-T model a stream runs


def exported(tmp_path, estimator, form="ternary"):
    path = tmp_path / "model.sbts"
    estimator.export(path)
    artifact = read_artifact(path)
    generated = c_sources(artifact, form)
    out_dim = int(generated.header.split("#define SBTS_OUT_DIM ")[1].split()[0])
    return load(path), CModel(compile_library(generated, tmp_path / "c"), artifact.config.in_channels, out_dim)


def test_japanese_vowels_classifier_in_c(tmp_path):
    train_path, test_path = resolve_classification("UEA/JapaneseVowels", data_dir=real_data_dir())
    cases, labels = read_cases(train_path)
    classifier = SBTClassifier(model="sbt", density=0.5, **TINY).fit(cases, labels)
    runtime, c = exported(tmp_path, classifier, "mask")
    test_cases, _ = read_cases(test_path)
    logits = np.array([c.forward(case.T)[1] for case in test_cases])
    expected = runtime.decision_function(test_cases)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    assert list(runtime.class_names(logits)) == list(runtime.predict(test_cases))


def test_smd_detector_in_c_scores_decides_and_streams(tmp_path):
    data = load_anomaly("SMD/machine-1-6", data_dir=real_data_dir())
    detector = SBTAnomalyDetector(model="sbt", window=24, density=0.25, stride=8, **TINY, **STREAMABLE)
    detector.fit(data.train[:3000])
    runtime, c = exported(tmp_path, detector)
    series = data.test[:400]  # anomalies from step 246 on
    expected = runtime.decision_function(series)
    batch = np.array([c.forward(series[:t + 1])[1] for t in range(len(series))])
    np.testing.assert_allclose(batch[:, 0], expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(batch[:, 1].astype(int), runtime.predict(series))
    assert 0 < batch[:, 1].sum() < len(series)  # both decisions occur: their equality means something
    streamed = np.array([c.stream_update(row)[1] for row in series])
    np.testing.assert_allclose(streamed[:, 0], expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(streamed[:, 1], batch[:, 1])


@pytest.mark.parametrize("formulation", [dict(target="change", input_norm="window"),
                                         dict(target="change", input_norm="none"),
                                         dict(target="change", input_norm="none", horizon=3)])
def test_ettm1_forecaster_in_c(tmp_path, formulation):
    data = load_forecasting("ETT/ETTm1", data_dir=real_data_dir())
    forecaster = SBTForecaster(model="sbt", window=32, density=0.5, stride=8, **TINY, **STREAMABLE, **formulation)
    forecaster.fit(data.values[:4000])
    runtime, c = exported(tmp_path, forecaster)
    series = data.values[50000:50200]
    # float32 in C: the last value plus the change cancels to near zero in some channels (values up to ~10,
    # whose float32 spacing is ~1e-6), so the tolerance has an absolute part.
    close = dict(rtol=1e-5, atol=1e-6)
    horizon = formulation.get("horizon", 1)
    assert runtime.horizon == horizon and c.out_dim == horizon * series.shape[1]
    for end in (1, 10, 31, 200):  # out[k * D + c]: variable c, k + 1 steps ahead
        np.testing.assert_allclose(c.forward(series[:end])[1], runtime.predict(series[:end]).ravel(), **close)
    if runtime.streamable:
        stream = runtime.stream()
        for row in series:
            np.testing.assert_allclose(c.stream_update(row)[1], stream.update(row).ravel(), **close)
