"""Streamable Step-T models: rotary positions relative to the query, per-step norms, and the rule that says
which configurations a sliding window can reuse past states for."""

from __future__ import annotations

import numpy as np
import pytest

from sbts.config import ModelConfig
from sbts.frozen_tensors import rotary_tables, rotate_pairs

BASE = dict(in_channels=3, out_dim=3, max_len=10, d_model=8, n_heads=2, n_layers=2, d_ff=16)


def test_rotary_scores_depend_only_on_the_distance():
    rng = np.random.default_rng(0)
    q, k = rng.standard_normal((1, 4)).astype(np.float32), rng.standard_normal((1, 4)).astype(np.float32)
    cos, sin = rotary_tables(40, 4)

    def score(a, b):
        turned_q = rotate_pairs(q, cos[a:a + 1], sin[a:a + 1])
        return float((turned_q @ rotate_pairs(k, cos[b:b + 1], sin[b:b + 1]).T)[0, 0])

    assert score(9, 3) == pytest.approx(score(30, 24), rel=1e-5) == pytest.approx(score(6, 0), rel=1e-5)
    assert score(9, 3) != pytest.approx(score(9, 4), rel=1e-3)


@pytest.mark.parametrize("fields,problem", [
    (dict(attention="step_t", pos_encoding="rope", norm="layer"), None),
    (dict(attention="step_t", pos_encoding="none", norm="none"), None),
    (dict(attention="step_t", pos_encoding="rope", norm="batch"), None),  # eval-mode batch norm is per step
    (dict(attention="step_t", pos_encoding="sinusoidal", norm="layer"), "pos_encoding sinusoidal"),
    (dict(attention="step_t", pos_encoding="learnable", norm="none"), "pos_encoding learnable"),
    (dict(attention="step_t", pos_encoding="rope", norm="layer_time"), "norm layer_time"),
    (dict(attention="full", pos_encoding="rope", norm="layer"), "attention full"),
    (dict(attention="qkv_mask", pos_encoding="none", norm="none"), "attention qkv_mask"),
])
def test_the_config_says_whether_it_streams_and_names_the_option_that_does_not(fields, problem):
    config = ModelConfig(**BASE, **fields)
    assert config.streamable == (problem is None)
    assert (config.streaming_problem is None) if problem is None else config.streaming_problem.startswith(problem)


def test_rope_leaves_the_last_channel_of_an_odd_head_as_it_is():
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    cos, sin = rotary_tables(5, 3)
    turned = rotate_pairs(x, cos, sin)
    np.testing.assert_array_equal(turned[..., 2], x[..., 2])
    np.testing.assert_allclose(np.linalg.norm(turned[..., :2], axis=-1), np.linalg.norm(x[..., :2], axis=-1),
                               rtol=1e-6)


# --- cached streaming = batch scoring ----------------------------------------------------------------------

def exported_detector(tmp_path, window=8, **fields):
    from conftest import randomise

    from sbts.data.preprocessing import ChannelScaler
    from sbts.export.artifact import export_model
    from sbts.models import create_model
    from sbts.runtime import load

    model = randomise(create_model("sbt", **{**BASE, "max_len": window, **fields}))
    scaler = ChannelScaler(np.array([0.5, -1.0, 2.0]), np.array([1.0, 2.0, 0.5]))
    path = tmp_path / "detector.sbts"
    export_model(model, path, task="anomaly", inference_state={"threshold": {"value": 1.0, "method": "given"}},
                 scaler=scaler)
    return load(path)


STREAMABLE = [dict(attention="step_t", pos_encoding="rope", norm="layer"),
              dict(attention="step_t", pos_encoding="rope", norm="none", d_model=6, n_heads=2),  # odd heads
              dict(attention="step_t", pos_encoding="none", norm="none"),
              dict(attention="step_t", pos_encoding="rope", norm="batch", step_t_self=True)]


@pytest.mark.parametrize("fields", STREAMABLE, ids=lambda f: "-".join(map(str, f.values())))
@pytest.mark.parametrize("context_rows", [0, 3, 20])
def test_cached_stream_scores_equal_batch_scoring(tmp_path, fields, context_rows):
    """Every step once, across ring-buffer wrap-around (60 steps, window 8), with a context shorter than the
    window, none, or a long one; and after reset()."""
    from sbts.runtime.streaming import CachedScoreStream

    detector = exported_detector(tmp_path, **fields)
    rng = np.random.default_rng(1)
    series, context = rng.standard_normal((60, 3)), rng.standard_normal((context_rows, 3))
    batch = detector.decision_function(series, context if context_rows else None)
    stream = detector.stream(context=context if context_rows else None)
    assert isinstance(stream, CachedScoreStream)
    streamed = stream.update_many(series)
    np.testing.assert_allclose(streamed, batch, rtol=1e-5, atol=1e-7)
    stream.reset()
    np.testing.assert_allclose(stream.update_many(series[:10]), batch[:10], rtol=1e-5, atol=1e-7)


def test_a_bad_observation_leaves_the_stream_as_it_was(tmp_path):
    from sbts.errors import DataError

    detector = exported_detector(tmp_path, **STREAMABLE[0])
    series = np.random.default_rng(2).standard_normal((20, 3))
    stream = detector.stream()
    first = stream.update_many(series[:10])
    with pytest.raises(DataError, match="observation 10: Input contains NaN"):
        stream.update(np.array([np.nan, 0.0, 0.0]))
    with pytest.raises(DataError, match="observation 10"):
        stream.update(np.zeros(4))
    rest = stream.update_many(series[10:])
    np.testing.assert_allclose(np.concatenate([first, rest]), detector.decision_function(series), rtol=1e-5)


def test_a_non_streamable_detector_streams_by_recomputing_windows(tmp_path):
    from sbts.heads.anomaly import ScoreStream

    detector = exported_detector(tmp_path, attention="step_t", pos_encoding="sinusoidal", norm="none")
    assert isinstance(detector.stream(), ScoreStream)


def test_the_detector_streams_a_streamable_model_one_step_at_a_time():
    from sbts import SBTAnomalyDetector
    from sbts.runtime.streaming import CachedScoreStream

    series = np.sin(np.arange(400)[:, None] / 5 + np.arange(2)) + 0.05 * np.random.default_rng(3).standard_normal(
        (400, 2))
    detector = SBTAnomalyDetector(window=8, epochs=1, d_model=8, d_ff=16, pos_encoding="rope", norm="layer",
                                  device="cpu").fit(series[:300])
    stream = detector.stream(context=series[:300])
    assert isinstance(stream, CachedScoreStream)
    np.testing.assert_allclose(stream.update_many(series[300:]), detector.decision_function(series[300:],
                                                                                            series[:300]),
                               rtol=1e-4, atol=1e-6)


# --- forecasts, one step per observation ------------------------------------------------------------------

def exported_forecaster(tmp_path, formulation=("value", "none"), window=8, **fields):
    from conftest import randomise

    from sbts.data.preprocessing import ChannelScaler
    from sbts.export.artifact import export_model
    from sbts.models import create_model
    from sbts.runtime import load

    model = randomise(create_model("sbt", **{**BASE, "max_len": window, **fields}))
    path = tmp_path / "forecaster.sbts"
    scaler = ChannelScaler(np.array([1.0, 0.0, -2.0]), np.array([2.0, 1.0, 3.0]))
    export_model(model, path, task="forecasting", scaler=scaler,
                 inference_state={"formulation": {"target": formulation[0], "input_norm": formulation[1]},
                                  "columns": ["a", "b", "c"]})
    return load(path)


@pytest.mark.parametrize("target", ["value", "change"])
@pytest.mark.parametrize("context_rows", [0, 4, 30])
def test_cached_forecast_stream_equals_forecasting_the_history(tmp_path, target, context_rows):
    from sbts.runtime.streaming import CachedForecastStream

    forecaster = exported_forecaster(tmp_path, (target, "none"), **STREAMABLE[0])
    rng = np.random.default_rng(4)
    series, context = rng.standard_normal((40, 3)), rng.standard_normal((context_rows, 3))
    stream = forecaster.stream(context if context_rows else None)
    assert isinstance(stream, CachedForecastStream)
    streamed = stream.update_many(series)
    expected = [forecaster.predict(series[:i + 1], context=context if context_rows else None) for i in range(40)]
    np.testing.assert_allclose(streamed, np.array(expected), rtol=1e-5, atol=1e-6)
    every = forecaster.predict_every_step(series[1:], context=np.concatenate([context, series[:1]]))
    np.testing.assert_allclose(streamed[:-1], every, rtol=1e-5, atol=1e-6)  # row i forecasts step i + 1
    stream.reset()
    np.testing.assert_allclose(stream.update_many(series[:5]), streamed[:5], rtol=1e-6)


def test_a_window_normalised_forecaster_streams_by_recomputing_windows(tmp_path):
    from sbts.heads.forecasting import WindowForecastStream

    forecaster = exported_forecaster(tmp_path, ("change", "window"), **STREAMABLE[0])
    assert not forecaster.streamable
    stream = forecaster.stream()
    assert isinstance(stream, WindowForecastStream)
    series = np.random.default_rng(5).standard_normal((12, 3))
    np.testing.assert_allclose(stream.update_many(series)[-1], forecaster.predict(series), rtol=1e-6)


def test_the_forecaster_streams_a_streamable_model_one_step_at_a_time():
    from sbts import SBTForecaster
    from sbts.runtime.streaming import CachedForecastStream

    series = 3 + np.sin(np.arange(300)[:, None] / 6 + np.arange(2))
    forecaster = SBTForecaster(window=8, epochs=1, d_model=8, d_ff=16, pos_encoding="rope", norm="layer",
                               target="change", device="cpu").fit(series[:200])
    stream = forecaster.stream(context=series[:200])
    assert isinstance(stream, CachedForecastStream)
    streamed = stream.update_many(series[200:230])
    np.testing.assert_allclose(streamed[-1], forecaster.predict(series[:230]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(streamed[:-1], forecaster.predict_every_step(series[201:230], context=series[:201]),
                               rtol=1e-4, atol=1e-5)


# --- sbts predict --stream ----------------------------------------------------------------------------------

def test_predict_stream_writes_one_line_per_row_and_reports_bad_rows(tmp_path, capsys):
    import csv

    from sbts.cli.main import main

    detector = exported_detector(tmp_path, **STREAMABLE[0])
    series = np.random.default_rng(6).standard_normal((30, 3))
    lines = ["a,b,c"] + [",".join(f"{v:.6f}" for v in row) for row in series]
    lines.insert(11, "1.0,oops,2.0")  # line 12 of the file
    lines.insert(21, "1.0,2.0")  # line 22
    (tmp_path / "rows.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "scores.csv"
    argv = ["predict", str(tmp_path / "detector.sbts"), "--stream", "--input", str(tmp_path / "rows.csv"),
            "-o", str(out)]
    assert main(argv + ["--on-bad-row", "skip"]) == 0
    err = capsys.readouterr().err
    assert "line 12: bad row (not numbers); skipped" in err and "line 22: bad row (2 values, the model takes 3)" in err
    rows = list(csv.DictReader(out.open()))
    expected = detector.decision_function(np.round(series, 6))
    np.testing.assert_allclose([float(r["score"]) for r in rows], expected, rtol=1e-5)
    assert [int(r["predicted"]) for r in rows] == list((expected > 1.0).astype(int))
    assert main(argv) == 2  # fail: the default
    assert "rows.csv: line 12: bad row (not numbers)" in capsys.readouterr().err


def test_predict_stream_reads_standard_input_and_says_when_it_recomputes_windows(tmp_path):
    import subprocess
    import sys

    exported_forecaster(tmp_path, ("value", "window"), **STREAMABLE[0])
    series = np.random.default_rng(7).standard_normal((6, 3))
    text = "\n".join(",".join(f"{v:.6f}" for v in row) for row in series) + "\n"
    proc = subprocess.run([sys.executable, "-m", "sbts", "predict", str(tmp_path / "forecaster.sbts"), "--stream",
                           "--input", "-"], input=text, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "recomputes its window for every row (input_norm window" in proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "step,a_next,b_next,c_next" and len(lines) == 7
