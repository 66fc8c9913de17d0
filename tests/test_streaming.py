"""Streamable Step-T models: rotary positions relative to the query, per-step norms, and the rule that says
which configurations a sliding window can reuse past states for."""

from __future__ import annotations

import json

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
              dict(attention="step_t", pos_encoding="none", norm="none", head_activation="none"),
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
                               target="change", input_norm="none", device="cpu").fit(series[:200])
    stream = forecaster.stream(context=series[:200])
    assert isinstance(stream, CachedForecastStream)
    streamed = stream.update_many(series[200:230])
    np.testing.assert_allclose(streamed[-1], forecaster.predict(y=series[:230]), rtol=1e-4, atol=1e-5)
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
    assert main(argv + ["--force"]) == 2  # fail: the default
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
    quiet = subprocess.run([sys.executable, "-m", "sbts", "predict", str(tmp_path / "forecaster.sbts"), "--stream",
                            "--input", "-", "--quiet"], input=text, capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == proc.stdout


# --- the shared pass in torch -----------------------------------------------------------------------------

SHARED = STREAMABLE[:2] + [dict(attention="step_t", pos_encoding="none", norm="layer", step_t_self=True,
                                head_activation="none")]


@pytest.mark.parametrize("fields", SHARED, ids=lambda f: "-".join(map(str, f.values())))
@pytest.mark.parametrize("zero_queries", [False, True], ids=["anomaly", "forecasting"])
def test_shared_pass_equals_the_windows_in_outputs_and_gradients(fields, zero_queries):
    import torch
    from conftest import randomise

    from sbts.models import create_model

    window = 8
    model = randomise(create_model("sbt", **{**BASE, "max_len": window, **fields})).train()
    torch.manual_seed(1)
    rows = torch.randn(2, 40, 3)
    ends = torch.tensor([7, 8, 20, 39, 39])  # the first possible end, neighbours, the last, a repeat
    queries = torch.zeros(2, len(ends), 3) if zero_queries else None
    windows = torch.stack([rows[:, e - window + 1:e + 1] for e in ends.tolist()], 1).reshape(-1, window, 3).clone()
    if zero_queries:
        windows[:, -1] = 0
    shared = model.last_steps(rows, ends, queries)
    windowed = model(windows, last_step_only=True)[:, 0].reshape(2, len(ends), -1)
    torch.testing.assert_close(shared, windowed, rtol=1e-5, atol=1e-6)
    grads = []
    for out in (shared, windowed):
        model.zero_grad()
        out.square().mean().backward(retain_graph=True)
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_the_shared_pass_refuses_what_it_cannot_compute():
    import torch

    from sbts.models import create_model

    with pytest.raises(ValueError, match="pos_encoding sinusoidal"):
        create_model("sbt", **BASE, attention="step_t").last_steps(torch.zeros(1, 20, 3), torch.tensor([12]))
    model = create_model("sbt", **BASE, attention="step_t", pos_encoding="rope", norm="batch")
    with pytest.raises(ValueError, match="batch norm"):
        model.train().last_steps(torch.zeros(1, 20, 3), torch.tensor([12]))
    with pytest.raises(ValueError, match=r"window ends must lie in \[9, 19\]"):
        model.eval().last_steps(torch.zeros(1, 20, 3), torch.tensor([8]))


# --- the shared pass in numpy, and every path against the windowed one ---------------------------------------

@pytest.mark.parametrize("fields", SHARED, ids=lambda f: "-".join(map(str, f.values())))
@pytest.mark.parametrize("context_rows", [0, 3, 30])
def test_numpy_shared_scores_equal_window_by_window_scores(tmp_path, fields, context_rows):
    from sbts.heads.anomaly import score_series
    from sbts.heads.network import SeriesNetwork

    detector = exported_detector(tmp_path, **fields)
    assert detector.network.shared is not None
    rng = np.random.default_rng(8)
    series, context = rng.standard_normal((700, 3)), rng.standard_normal((context_rows, 3))  # > one chunk
    scaled, before = detector._scale(series), detector._scale(context) if context_rows else None
    windowed = score_series(detector.last_step, scaled, 8, before)
    np.testing.assert_allclose(detector.decision_function(series, context if context_rows else None), windowed,
                               rtol=1e-5, atol=1e-7)
    assert SeriesNetwork(detector.last_step).shared is None


@pytest.mark.parametrize("target", ["value", "change"])
@pytest.mark.parametrize("context_rows", [0, 30])
def test_numpy_shared_forecasts_equal_window_by_window_forecasts(tmp_path, target, context_rows):
    from sbts.heads.forecasting import Formulation, forecast_every_step

    forecaster = exported_forecaster(tmp_path, (target, "none"), **STREAMABLE[0])
    rng = np.random.default_rng(9)
    series, context = rng.standard_normal((600, 3)), rng.standard_normal((context_rows, 3))
    before = forecaster._scale(context) if context_rows else None
    windowed = forecast_every_step(forecaster.last_step, forecaster._scale(series), 8, Formulation(target), before)
    shared = forecaster.predict_every_step(series, context if context_rows else None)
    np.testing.assert_allclose(shared, forecaster._unscale(windowed), rtol=1e-5, atol=1e-5)


def test_torch_scoring_and_forecasting_use_the_shared_pass_and_match_the_runtime(tmp_path):
    """The estimator (torch shared pass) and its export (numpy shared pass) give the same scores."""
    from sbts import SBTAnomalyDetector

    series = np.sin(np.arange(900)[:, None] / 7 + np.arange(3)) + 0.1 * np.random.default_rng(10).standard_normal(
        (900, 3))
    detector = SBTAnomalyDetector(window=16, epochs=1, d_model=8, d_ff=16, pos_encoding="rope", norm="layer",
                                  device="cpu").fit(series[:600])
    detector.export(tmp_path / "d.sbts")
    from sbts.runtime import load

    np.testing.assert_allclose(detector.decision_function(series[600:], series[:600]),
                               load(tmp_path / "d.sbts").decision_function(series[600:], series[:600]),
                               rtol=1e-4, atol=1e-6)


# --- training through the shared pass -------------------------------------------------------------------------

@pytest.mark.parametrize("task", ["anomaly", "forecasting"])
def test_shared_blocks_cover_every_training_target_once_and_give_the_windowed_loss(task):
    import torch
    from conftest import randomise

    from sbts.data.forecasting import ForecastData, SplitBounds
    from sbts.heads.forecasting import Formulation
    from sbts.models import create_model
    from sbts.tasks import anomaly, forecasting
    from sbts.tasks.runs import SharedBlock

    rng = np.random.default_rng(11)
    window, stride, block = 8, 3, 5
    if task == "anomaly":
        splits = anomaly.split_and_scale(rng.standard_normal((120, 3)), None, None, window=window, val_fraction=0.2,
                                         stride=stride, member_lengths=[70, 50])
        windows, blocks, objective = splits.train_set(), splits.train_blocks(block), anomaly.AnomalyTask()
        targets = windows.starts + window - 1
    else:
        data = ForecastData("y", rng.standard_normal((120, 3)), ["a", "b", "c"], None, {})
        splits = forecasting.split_and_scale(data, SplitBounds(90, 120, 120, "fraction"), window=window, stride=stride,
                                             formulation=Formulation("change"), require_test=False)
        windows, blocks, objective = splits.train_set(), splits.train_blocks(block), forecasting.ForecastTask()
        targets = windows.ends
    covered = np.concatenate([b.ends.numpy() + int(e[0]) - (window - 1) for b, e in
                              zip((blocks[i] for i in range(len(blocks))), blocks.blocks)])
    np.testing.assert_array_equal(np.sort(covered), np.sort(targets))  # every target once, no block across members
    model = randomise(create_model("sbt", **{**BASE, "max_len": window}, attention="step_t", pos_encoding="rope",
                                   norm="layer")).train()
    first = blocks[0]
    assert isinstance(first, SharedBlock) and len(first.ends) == block
    windowed = [windows[i] for i in range(block)]
    batch = tuple(torch.stack(parts) for parts in zip(*windowed))
    torch.testing.assert_close(objective.training_loss(model, first), objective.training_loss(model, batch),
                               rtol=1e-5, atol=1e-7)


def test_a_streamable_run_trains_through_the_shared_pass(tmp_path):
    from sbts.tasks.anomaly import AnomalyTask
    from sbts.tasks.runs import SharedBlocks

    rng = np.random.default_rng(12)
    t = np.arange(700)
    series = np.sin(2 * np.pi * t[:, None] / 25 + np.arange(3)) + 0.05 * rng.standard_normal((700, 3))
    folder = tmp_path / "data"
    folder.mkdir()
    np.savetxt(folder / "train.csv", series[:400], delimiter=",")
    np.savetxt(folder / "test.csv", series[400:], delimiter=",")
    spec = {"task": "anomaly", "data": str(folder), "model": {**BASE, "max_len": 16, "pos_encoding": "rope",
                                                                "norm": "layer"},
            "train": {"epochs": 4, "batch_size": 32, "device": "cpu", "patience": 0}, "task_options": {}}
    task = AnomalyTask()
    run, data, _ = task.resolve(spec)
    assert isinstance(task.datasets(data, run)[0], SharedBlocks)
    metrics = task.train_run(spec, tmp_path / "run", verbose=False)
    losses = [json.loads(line)["train_loss"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0] and metrics["n_test"] == 300


def test_predict_stream_bad_uses_are_one_line_errors(tmp_path, capsys):
    from conftest import randomise

    from sbts.cli.main import main
    from sbts.export.artifact import export_model
    from sbts.models import create_model

    exported_detector(tmp_path, **STREAMABLE[0])
    classifier = tmp_path / "classifier.sbts"
    export_model(randomise(create_model("sbt", **BASE)), classifier, task="classification",
                 inference_state={"classes": ["a", "b", "c"]})
    cases = [(["predict", str(classifier), "--stream", "--input", "-"], "--stream applies to anomaly detectors"),
             (["predict", str(tmp_path / "detector.sbts"), "--stream", "--proba", "--input", "-"],
              "--proba applies to classifiers"),
             (["predict", str(tmp_path / "detector.sbts"), "--stream", "--input", str(tmp_path / "missing.csv"),
               "-o", str(tmp_path / "out.csv")], "missing.csv: cannot read"),
             (["predict", str(tmp_path / "detector.sbts"), "--stream", "--input", str(tmp_path / "rows.csv"),
               "-o", str(tmp_path / "rows.csv")], "is an input of this command")]
    (tmp_path / "rows.csv").write_text("0,0,0\n")
    for argv, fragment in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("sbts: error: ") and fragment in err[0], err
    assert not (tmp_path / "out.csv").exists() and (tmp_path / "rows.csv").read_text() == "0,0,0\n"  # nothing lost
