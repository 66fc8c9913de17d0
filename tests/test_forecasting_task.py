"""Forecasting end to end on small synthetic series: the target step is never visible, every validation and
test row is forecast once, scaling uses training rows only, baselines compute what they claim, runs, CLI,
export, the runtime and the estimator."""

from __future__ import annotations

import csv
import itertools
import json

import numpy as np
import pytest
import torch

from sbts.baselines import Persistence, RidgeOnWindow, WindowMean
from sbts.cli.main import main
from sbts.data.forecasting import ForecastData, SplitBounds
from sbts.errors import ConfigError, DataError, SBTSError
from sbts.heads.forecasting import Formulation, forecast_every_step, forecast_next, prepare_windows
from sbts.models import create_model
from sbts.runtime import ForecastRuntime, load
from sbts.tasks import forecasting
from sbts.heads.network import SeriesNetwork
from sbts.tasks.base import DataSource
from sbts.tasks.forecasting import ForecastOptions, ForecastTask, SBTForecaster, forecast_split, split_and_scale
from sbts.tasks.runs import last_step_function

from tests.conftest import randomise

train_run = ForecastTask().train_run


def build_model_config(model_name, overrides, *, n_channels):
    """The forecaster's model for ``n_channels`` variables, with the task's defaults for ``model_name``."""
    columns = [f"x{i}" for i in range(n_channels)]
    source = DataSource("series", ForecastData("series", np.zeros((100, n_channels)), columns, None, {}))
    return ForecastTask().run_config({"model_name": model_name, "model": overrides}, source).model


WINDOW = 12
TINY = {"d_model": 8, "n_heads": 2, "n_layers": 2, "d_ff": 16, "max_len": WINDOW}
FORMULATIONS = [Formulation(t, n) for t, n in itertools.product(("value", "change"), ("none", "window"))]


def synthetic_series(n=500, channels=3, seed=0):
    """Sines with a slow trend and noise: forecastable, with levels that move."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    phases = rng.uniform(0, 2 * np.pi, channels)
    return (10 + np.sin(2 * np.pi * t[:, None] / 24 + phases) * np.arange(1, channels + 1) + 0.002 * t[:, None]
            + 0.05 * rng.standard_normal((n, channels)))


def write_csv(path, values, start="2020-01-01T00:00", step_hours=1):
    dates = np.datetime64(start) + np.arange(len(values)) * np.timedelta64(step_hours, "h")
    lines = ["date," + ",".join(f"v{i}" for i in range(values.shape[1]))]
    lines += [str(d).replace("T", " ") + "," + ",".join(f"{v:.6f}" for v in row) for d, row in zip(dates, values)]
    path.write_text("\n".join(lines) + "\n")
    return path


def data_of(values, name="y"):
    return ForecastData(name, values, [f"v{i}" for i in range(values.shape[1])], None, {})


def spec(path, model_name="sbt", epochs=2, **task_options):
    return {"task": "forecasting", "data": str(path), "model_name": model_name,
            "model": dict(TINY, **({"density": 0.5} if model_name == "sbt" else {})),
            "train": {"epochs": epochs, "batch_size": 32, "stride": 3, "device": "cpu"},
            "task_options": task_options}


@pytest.fixture(scope="module")
def values():
    return synthetic_series()


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory, values):
    return write_csv(tmp_path_factory.mktemp("data") / "series.csv", values)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, csv_path):
    run_dir = tmp_path_factory.mktemp("runs") / "sbt"
    metrics = train_run(spec(csv_path), run_dir, verbose=False)
    return run_dir, metrics


# --- the target step is never visible ---------------------------------------------------------

@pytest.mark.parametrize("formulation", FORMULATIONS, ids=lambda f: f"{f.target}-{f.input_norm}")
def test_prepared_windows_zero_the_target_and_never_read_it(formulation):
    windows = np.random.default_rng(0).standard_normal((5, WINDOW, 3)).astype(np.float32)
    changed = windows.copy()
    changed[:, -1] = np.nan  # the true value of the step to forecast
    a, b = prepare_windows(windows, formulation), prepare_windows(changed, formulation)
    assert (a.x[:, -1] == 0).all()
    for name in ("x", "base", "scale", "offset"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


@pytest.mark.parametrize("model_name,attention", [("sbt", "step_t"), ("dense", "full"), ("sbt", "full"),
                                                   ("dense", "step_t")])
@pytest.mark.parametrize("formulation", FORMULATIONS, ids=lambda f: f"{f.target}-{f.input_norm}")
def test_forecasts_do_not_depend_on_the_true_value(model_name, attention, formulation, tmp_path):
    """Through the torch model and the exported runtime, on every attention and formulation."""
    from sbts.export.artifact import export_model

    config = build_model_config(model_name, {**TINY, "attention": attention}, n_channels=3)
    model = randomise(create_model(config))
    with torch.no_grad():  # lift the last norm's output so the ReLU before the head passes it: the output varies
        model.layers[-1].norm2.bias += 2.0
    export_model(model, tmp_path / "m.sbts", task="forecasting",
                 inference_state={"formulation": formulation.to_dict(), "columns": ["a", "b", "c"]})
    series = np.random.default_rng(1).standard_normal((40, 3)).astype(np.float32)
    for forward_last in (last_step_function(model, torch.device("cpu")), load(tmp_path / "m.sbts").last_step):
        base = forecast_every_step(forward_last, series, WINDOW, formulation, context=series[:5])
        for t in (0, 17, 39):  # each row's forecast ignores that row's own value
            changed = series.copy()
            changed[t] += 100.0
            again = forecast_every_step(forward_last, changed, WINDOW, formulation, context=series[:5])
            np.testing.assert_allclose(again[t], base[t], rtol=1e-5, atol=1e-6)
            assert t == 39 or not np.allclose(again[t + 1], base[t + 1], rtol=0, atol=1e-7)  # the next row reads it


def test_without_context_the_first_row_has_no_forecast():
    model = create_model(build_model_config("sbt", TINY, n_channels=2))
    series = np.random.default_rng(2).standard_normal((20, 2)).astype(np.float32)
    forecasts = forecast_every_step(last_step_function(model, torch.device("cpu")), series, WINDOW, Formulation())
    assert np.isnan(forecasts[0]).all() and np.isfinite(forecasts[1:]).all()
    one_row = forecast_every_step(last_step_function(model, torch.device("cpu")), series[:1], WINDOW, Formulation())
    assert one_row.shape == (1, 2) and np.isnan(one_row).all()
    with pytest.raises(DataError, match="no history"):
        forecast_next(last_step_function(model, torch.device("cpu")), series[:0], WINDOW, Formulation())


def test_next_step_forecast_equals_the_every_step_forecast_of_an_appended_row():
    model = randomise(create_model(build_model_config("dense", TINY, n_channels=2)))
    forward_last = last_step_function(model, torch.device("cpu"))
    series = np.random.default_rng(3).standard_normal((30, 2)).astype(np.float32)
    appended = np.concatenate([series, np.full((1, 2), 7.0, np.float32)])
    every = forecast_every_step(forward_last, appended[10:], WINDOW, Formulation("change", "window"),
                                context=appended[:10])
    np.testing.assert_allclose(forecast_next(forward_last, series, WINDOW, Formulation("change", "window")), every[-1],
                               rtol=1e-6)


def test_formulations_map_a_zero_output_to_their_reference_forecast():
    windows = np.random.default_rng(4).standard_normal((6, WINDOW, 3)).astype(np.float32) * 3 + 5
    last, mean = windows[:, -2], windows[:, :-1].mean(1)
    zero = np.zeros((6, 3), np.float32)
    np.testing.assert_allclose(prepare_windows(windows, Formulation("value", "none")).forecast(zero), 0)
    np.testing.assert_allclose(prepare_windows(windows, Formulation("change", "none")).forecast(zero), last)
    np.testing.assert_allclose(prepare_windows(windows, Formulation("value", "window")).forecast(zero), mean,
                               rtol=1e-5)
    np.testing.assert_allclose(prepare_windows(windows, Formulation("change", "window")).forecast(zero), last,
                               rtol=1e-5)


def test_window_norm_inputs_are_standardised_per_window_and_flat_windows_stay_finite():
    windows = np.random.default_rng(5).standard_normal((4, WINDOW, 2)).astype(np.float32) * 10 + 50
    windows[0, :, 1] = 3.0  # a flat channel
    x = prepare_windows(windows, Formulation("value", "window")).x[:, :-1]
    assert np.isfinite(x).all()
    np.testing.assert_allclose(x[1:].mean(1), 0, atol=1e-4)
    np.testing.assert_allclose(x[1:].std(1), 1, atol=1e-3)


@pytest.mark.parametrize("bad", [{"target": "delta"}, {"input_norm": "revin"}, {"split": "random"},
                                 {"fractions": [0.7, 0.3]}, {"fractions": "0.7,0.1,0.2"},
                                 {"split": "fraction", "train_end": "2020-01-01"}, {"train_end": 5, "split": "dates"},
                                 {"horizon": 3}])
def test_bad_options_are_refused(bad):
    with pytest.raises(ConfigError):
        ForecastOptions.from_dict(bad)


# --- splits, windows and scaling ------------------------------------------------------------------

def test_training_examples_hold_whole_windows_with_the_target_zeroed(values):
    splits = split_and_scale(data_of(values), SplitBounds(300, 400, 500, "fraction"), window=WINDOW, stride=5,
                             formulation=Formulation())
    train = splits.train_set()
    ends = train.ends
    assert ends[0] == WINDOW - 1 and ends[-1] == 299 and (np.diff(ends)[:-1] == 5).all()
    x, target, base, scale, offset = train[3]
    assert x.shape == (WINDOW, 3) and (x[-1] == 0).all()
    np.testing.assert_allclose(x[:-1].numpy(), splits.rows[ends[3] - WINDOW + 1:ends[3]])
    np.testing.assert_array_equal(target.numpy(), splits.rows[ends[3]])
    val = splits.val_set()
    assert val.ends[0] == 300 and val.ends[-1] == 399


def test_every_validation_and_test_row_is_forecast_once_from_the_rows_before_it(values):
    splits = split_and_scale(data_of(values), SplitBounds(300, 380, 470, "fraction"), window=WINDOW, stride=7,
                             formulation=Formulation())
    seen = []

    def forward_last(x):
        seen.append(x.copy())
        return np.zeros((len(x), 3), np.float32)

    for split, (start, end) in (("val", (300, 380)), ("test", (380, 470))):
        seen.clear()
        forecasts = forecast_split(SeriesNetwork(forward_last), splits, split)
        assert forecasts.shape == (end - start, 3)
        inputs = np.concatenate(seen)
        assert len(inputs) == end - start
        for i, row in enumerate(range(start, end)):  # the window of row t: rows t-w+1 .. t-1, then the zeroed slot
            np.testing.assert_array_equal(inputs[i, :-1], splits.rows[row - WINDOW + 1:row])
        assert len(splits.windows(split)) == end - start


def test_scaler_is_fitted_on_training_rows_only(values):
    bounds = SplitBounds(300, 400, 500, "fraction")
    splits = split_and_scale(data_of(values), bounds, window=WINDOW, stride=1, formulation=Formulation())
    np.testing.assert_allclose(splits.scaler.mean, values[:300].mean(0))
    np.testing.assert_allclose(splits.scaler.std, values[:300].std(0))
    changed = values.copy()
    changed[300:] *= 50
    assert np.allclose(split_and_scale(data_of(changed), bounds, window=WINDOW, stride=1,
                                       formulation=Formulation()).scaler.mean, splits.scaler.mean)


def test_too_short_a_training_period_or_no_test_rows_is_refused(values):
    with pytest.raises(DataError, match="shorter than the window"):
        split_and_scale(data_of(values), SplitBounds(10, 400, 500, "fraction"), window=WINDOW, stride=1,
                        formulation=Formulation())
    with pytest.raises(DataError, match="no test rows"):
        split_and_scale(data_of(values), SplitBounds(300, 500, 500, "fraction"), window=WINDOW, stride=1,
                        formulation=Formulation())
    with pytest.raises(ConfigError, match="at least 2"):
        split_and_scale(data_of(values), SplitBounds(300, 400, 500, "fraction"), window=1, stride=1,
                        formulation=Formulation())


# --- baselines ------------------------------------------------------------------------------------

def test_persistence_and_window_mean_compute_what_they_claim():
    windows = np.arange(2 * 4 * 2, dtype=np.float64).reshape(2, 4, 2)
    windows[:, -1] = np.nan  # never read
    np.testing.assert_array_equal(Persistence().fit(windows).predict(windows), windows[:, -2])
    np.testing.assert_allclose(WindowMean().fit(windows).predict(windows), windows[:, :-1].mean(1))
    np.testing.assert_allclose(WindowMean().predict(windows)[0], [2.0, 3.0])  # mean of rows 0,1,2: (0,2,4), (1,3,5)


def test_ridge_recovers_a_linear_autoregression_and_picks_its_penalty_on_validation():
    rng = np.random.default_rng(6)
    n = 2000
    y = np.zeros((n, 2))
    for t in range(2, n):  # y_t = A y_{t-1} + 0.2 y_{t-2} + noise
        y[t] = np.array([[0.5, 0.2], [-0.1, 0.6]]) @ y[t - 1] + 0.2 * y[t - 2] + 0.1 * rng.standard_normal(2)
    windows = np.lib.stride_tricks.sliding_window_view(y, 5, axis=0).transpose(0, 2, 1)
    ridge = RidgeOnWindow().fit(windows[:1500], windows[1500:1700])
    assert set(ridge.val_mse_) == set(ridge.alphas) and ridge.alpha_ == min(ridge.val_mse_, key=ridge.val_mse_.get)
    mse = np.mean(np.square(ridge.predict(windows[1700:]) - windows[1700:, -1]))
    assert mse < 0.0115  # the noise variance is 0.01
    assert mse < np.mean(np.square(Persistence().predict(windows[1700:]) - windows[1700:, -1]))
    blind = windows[1700:].copy()
    blind[:, -1] = 1e6
    np.testing.assert_allclose(ridge.predict(blind), ridge.predict(windows[1700:]))
    assert RidgeOnWindow().fit(windows[:100]).describe()["alpha"] == 1.0  # no validation: the default penalty


# --- runs, CLI, export and the runtime ------------------------------------------------------------

def test_run_reports_standardised_and_original_errors_next_to_every_baseline(trained_run, values):
    run_dir, metrics = trained_run
    n = len(values)
    assert metrics["split"]["method"] == "fraction"
    assert metrics["split"]["rows"] == {"train": int(0.7 * n), "val": n - int(0.7 * n) - int(0.2 * n),
                                        "test": int(0.2 * n)}
    assert metrics["test"]["n_steps"] == int(0.2 * n) and metrics["val"]["n_steps"] == metrics["split"]["rows"]["val"]
    assert set(metrics["baselines"]) == {"persistence", "window_mean", "ridge"}
    for entry in [metrics["test"]] + [b["test"] for b in metrics["baselines"].values()]:
        assert np.isfinite([entry["mse"], entry["mae"], entry["mse_original"], entry["mae_original"]]).all()
    ratios = metrics["compared_with_baselines"]["mse_ratio_to"]
    assert ratios["persistence"] == pytest.approx(metrics["test"]["mse"] / metrics["baselines"]["persistence"]["test"]
                                                  ["mse"])
    assert metrics["paper_formulation"] is False and metrics["formulation"] == {"target": "change", "input_norm": "window"}
    assert metrics["split"]["dates"]["test"][1].startswith("2020-01-21")  # row 499, hourly from 2020-01-01


def test_persistence_in_the_report_matches_an_independent_computation(trained_run, values):
    _, metrics = trained_run
    n_train, n_test = int(0.7 * len(values)), int(0.2 * len(values))
    mean, std = values[:n_train].mean(0), values[:n_train].std(0)
    z = (values - mean) / std
    errors = z[-n_test:] - z[-n_test - 1:-1]
    assert metrics["baselines"]["persistence"]["test"]["mse"] == pytest.approx(np.mean(errors ** 2), rel=1e-5)
    assert metrics["baselines"]["persistence"]["test"]["mae_original"] == pytest.approx(
        np.mean(np.abs(errors * std)), rel=1e-5)


def test_predictions_file_has_every_test_step_in_original_units(trained_run, values):
    run_dir, metrics = trained_run
    with open(run_dir / "test_predictions.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["step", "date", "v0", "v0_forecast", "v1", "v1_forecast", "v2", "v2_forecast"]
    assert len(rows) - 1 == metrics["test"]["n_steps"]
    truth = np.array([[float(r[2]), float(r[4]), float(r[6])] for r in rows[1:]])
    np.testing.assert_allclose(truth, values[-len(truth):], rtol=1e-5)
    forecast = np.array([[float(r[3]), float(r[5]), float(r[7])] for r in rows[1:]])
    assert np.mean((forecast - truth) ** 2) == pytest.approx(metrics["test"]["mse_original"], rel=1e-4)


def test_evaluate_reproduces_the_run(trained_run):
    run_dir, metrics = trained_run
    again = forecasting.ForecastTask().evaluate_run(run_dir, device="cpu")
    assert again["test"]["mse"] == pytest.approx(metrics["test"]["mse"], rel=1e-6)
    assert again["baselines"]["ridge"]["test"]["mse"] == pytest.approx(metrics["baselines"]["ridge"]["test"]["mse"])


def test_changed_data_file_is_refused_on_evaluate(tmp_path, values):
    path = write_csv(tmp_path / "series.csv", values)
    run_dir = tmp_path / "run"
    train_run(spec(path, epochs=1), run_dir, verbose=False)
    write_csv(path, values * 1.01)
    with pytest.raises(DataError, match="differs from the series data"):
        forecasting.ForecastTask().evaluate_run(run_dir, device="cpu")


def test_resume_continues_to_the_same_result(tmp_path, csv_path):
    full = train_run(spec(csv_path, epochs=3), tmp_path / "full", verbose=False)
    part = tmp_path / "part"

    def stop_after_two(epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt

    assert train_run(spec(csv_path, epochs=3), part, verbose=False, on_epoch_end=stop_after_two)["interrupted"]
    resumed = train_run({}, part, resume=True, verbose=False)
    assert resumed["test"]["mse"] == pytest.approx(full["test"]["mse"], rel=1e-6)


@pytest.mark.parametrize("model_name,formulation", [("sbt", f) for f in FORMULATIONS] + [("dense", FORMULATIONS[3])],
                         ids=lambda v: f"{v.target}-{v.input_norm}" if isinstance(v, Formulation) else v)
def test_exported_forecaster_matches_torch(tmp_path, values, model_name, formulation):
    path = write_csv(tmp_path / "series.csv", values)
    run_dir = tmp_path / "run"
    train_run(spec(path, model_name, epochs=1, **formulation.to_dict()), run_dir, verbose=False)
    assert main(["export", str(run_dir), "-o", str(tmp_path / "m.sbts")]) == 0
    runtime = load(tmp_path / "m.sbts")
    assert isinstance(runtime, ForecastRuntime) and runtime.formulation == formulation
    trained = forecasting.ForecastTask().load_trained(run_dir)
    history = values[:200]
    expected = trained.scaler.inverse_transform_rows(forecast_next(
        last_step_function(trained.model, torch.device("cpu")), trained.scaler.transform_rows(history), WINDOW,
        formulation)[None])[0]
    np.testing.assert_allclose(runtime.predict(history), expected, rtol=1e-4, atol=1e-5)
    every = runtime.predict_every_step(values[200:260], context=values[:200])
    np.testing.assert_allclose(every[-1], runtime.predict(values[:259]), rtol=1e-5)


def test_cli_train_evaluate_export_predict_and_plot(tmp_path, csv_path, values, capsys):
    run_dir = tmp_path / "run"
    code = main(["train", "forecasting", "--data", str(csv_path), "--model", "dense", "--window", str(WINDOW),
                 "--d-model", "8", "--epochs", "1", "--stride", "4", "--target", "change", "--input-norm", "window",
                 "--split", "dates", "--train-end", "2020-01-13", "--val-end", "2020-01-16", "--device", "cpu",
                 "--quiet", "--out", str(run_dir)])
    out = capsys.readouterr().out
    assert code == 0
    printed = json.loads(out)
    assert {"mse", "mae"} <= set(printed["test"]) and "best_baseline" in printed["compared_with_baselines"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["split"]["rows"] == {"train": 288, "val": 72, "test": 140}
    assert metrics["formulation"] == {"target": "change", "input_norm": "window"}
    assert main(["evaluate", str(run_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["test"]["mse"] == pytest.approx(metrics["test"]["mse"], rel=1e-6)
    assert main(["export", str(run_dir), "-o", str(tmp_path / "m.sbts")]) == 0
    np.savetxt(tmp_path / "history.csv", values[:50], delimiter=",")
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "m.sbts"), "--input", str(tmp_path / "history.csv"), "-o",
                 str(tmp_path / "forecasts.csv")]) == 0
    rows = list(csv.reader(open(tmp_path / "forecasts.csv")))
    assert rows[0] == ["step", "v0", "v1", "v2"] and len(rows) == 52  # one per step, and the next step
    assert rows[1][1:] == ["", "", ""]  # the first step has no history
    np.testing.assert_allclose([float(v) for v in rows[-1][1:]], load(tmp_path / "m.sbts").predict(values[:50]),
                               rtol=1e-6)
    pytest.importorskip("matplotlib")
    assert main(["plot", str(run_dir), "-o", str(tmp_path / "f.png"), "--variables", "v1,v2", "--start", "10"]) == 0
    assert (tmp_path / "f.png").stat().st_size > 1000
    assert main(["plot", str(run_dir), "-o", str(tmp_path / "g.png"), "--variables", "v9"]) == 2
    assert "unknown variable" in capsys.readouterr().err


def test_predict_reads_dated_inputs_uses_the_context_and_checks_columns(tmp_path, trained_run, values, capsys):
    run_dir, _ = trained_run
    assert main(["export", str(run_dir), "-o", str(tmp_path / "m.sbts")]) == 0
    runtime = load(tmp_path / "m.sbts")
    write_csv(tmp_path / "context.csv", values[:300])
    write_csv(tmp_path / "short.csv", values[300:302], start="2020-01-13T12:00")  # shorter than the window
    assert main(["predict", str(tmp_path / "m.sbts"), "--input", str(tmp_path / "short.csv"), "--context",
                 str(tmp_path / "context.csv"), "-o", str(tmp_path / "out.csv")]) == 0
    rows = list(csv.reader(open(tmp_path / "out.csv")))
    assert rows[0] == ["step", "v0", "v1", "v2"] and len(rows) == 4
    np.testing.assert_allclose([float(v) for v in rows[3][1:]], runtime.predict(values[:302]), rtol=1e-5)
    np.testing.assert_allclose([float(v) for v in rows[1][1:]], runtime.predict(values[:300]), rtol=1e-5)
    np.savetxt(tmp_path / "one.csv", values[:1], delimiter=",")
    assert main(["predict", str(tmp_path / "m.sbts"), "--input", str(tmp_path / "one.csv"), "-o",
                 str(tmp_path / "one_out.csv")]) == 0
    rows = list(csv.reader(open(tmp_path / "one_out.csv")))
    assert rows[1][1:] == ["", "", ""] and len(rows) == 3 and all(rows[2][1:])
    swapped = (tmp_path / "context.csv").read_text().replace("date,v0,v1,v2", "date,v1,v0,v2", 1)
    (tmp_path / "swapped.csv").write_text(swapped)
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "m.sbts"), "--input", str(tmp_path / "swapped.csv")]) == 2
    assert "columns v1,v0,v2 are not the model's variables v0,v1,v2" in capsys.readouterr().err


def test_without_validation_rows_selection_is_on_training_loss_and_says_so(tmp_path, values):
    np.savetxt(tmp_path / "train.csv", values[:400], delimiter=",")
    np.savetxt(tmp_path / "test.csv", values[400:], delimiter=",")
    metrics = train_run(spec(f"{tmp_path / 'train.csv'},{tmp_path / 'test.csv'}", epochs=1), tmp_path / "run",
                        verbose=False)
    assert metrics["split"]["rows"] == {"train": 400, "val": 0, "test": 100} and metrics["val"] == {}
    assert metrics["selection"].startswith("lowest training loss (no validation rows)")
    assert "val" not in metrics["baselines"]["ridge"] and metrics["baselines"]["ridge"]["alpha"] == 1.0


def test_comparison_with_a_perfect_baseline():
    report = forecasting.comparison({"mse": 0.5}, {"persistence": {"test": {"mse": 0.0}},
                                                   "ridge": {"test": {"mse": 1.0}}})
    assert report == {"mse_ratio_to": {"persistence": float("inf"), "ridge": 0.5}, "best_baseline": "persistence",
                      "beats_every_baseline": False}


def bad_line_file(tmp_path, values):
    lines = write_csv(tmp_path / "ok.csv", values).read_text().splitlines()
    return lines


@pytest.mark.parametrize("problem,edit,message", [
    ("non-numeric", lambda lines: lines.__setitem__(40, lines[40].rsplit(",", 1)[0] + ",abc"), "not a number"),
    ("not increasing", lambda lines: lines.__setitem__(40, lines[38].split(",")[0] + "," +
                                                        lines[40].split(",", 1)[1]), "increasing"),
    ("nan", lambda lines: lines.__setitem__(40, lines[40].rsplit(",", 1)[0] + ",nan"), "not finite"),
    ("ragged", lambda lines: lines.__setitem__(40, lines[40] + ",1.0"), "columns"),
])
def test_cli_bad_series_gives_one_line_and_exit_2(tmp_path, values, capsys, problem, edit, message):
    lines = bad_line_file(tmp_path, values)
    edit(lines)
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    code = main(["train", "forecasting", "--data", str(path), "--window", str(WINDOW), "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "bad.csv:41" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_cli_refuses_short_series_mismatched_files_and_misplaced_options(tmp_path, values, capsys):
    short = write_csv(tmp_path / "short.csv", values[:30])
    assert main(["train", "forecasting", "--data", str(short), "--window", "24", "--quiet", "--out",
                 str(tmp_path / "run")]) == 2
    assert "shorter than the window" in capsys.readouterr().err
    np.savetxt(tmp_path / "train.csv", values[:300], delimiter=",")
    np.savetxt(tmp_path / "test.csv", values[300:, :2], delimiter=",")
    assert main(["train", "forecasting", "--data", f"{tmp_path / 'train.csv'},{tmp_path / 'test.csv'}", "--quiet",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "train.csv" in err and "test.csv" in err
    assert main(["train", "forecasting", "--data", str(short), "--val-fraction", "0.2", "--quiet", "--out",
                 str(tmp_path / "run")]) == 2
    assert "--val-fraction is not an option of sbts train forecasting" in capsys.readouterr().err
    assert main(["train", "forecasting", "--data", str(short), "--split-fractions", "0.7,x", "--quiet", "--out",
                 str(tmp_path / "run")]) == 2
    assert "--split-fractions" in capsys.readouterr().err
    np.savetxt(tmp_path / "test.csv", values[300:], delimiter=",")
    assert main(["train", "forecasting", "--data", f"{tmp_path / 'train.csv'},{tmp_path / 'test.csv'}",
                 "--split-fractions", "0.6,0.2,0.2", "--quiet", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "split fractions cannot be used with split files" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


# --- the estimator ----------------------------------------------------------------------------------

def test_estimator_fits_predicts_the_next_step_and_exports(tmp_path, values):
    estimator = SBTForecaster(window=WINDOW, d_model=8, d_ff=16, epochs=2, batch_size=32, stride=2,
                              target="change", device="cpu").fit(values[:400])
    assert estimator.n_features_in_ == 3 and estimator.best_epoch_ >= 1
    forecast = estimator.predict(values[:450])
    assert forecast.shape == (3,)
    every = estimator.predict_every_step(values[450:], context=values[:450])
    assert every.shape == (50, 3)
    np.testing.assert_allclose(every[0], forecast, rtol=1e-5)
    assert np.mean((every - values[450:]) ** 2) < np.var(values[450:], axis=0).mean()  # better than the mean
    runtime = load(estimator.export(tmp_path / "est.sbts").path)
    np.testing.assert_allclose(runtime.predict(values[:450]), forecast, rtol=1e-4)
    with pytest.raises(DataError, match="expected shape"):
        estimator.predict(values[:10, :2])
    with pytest.raises(SBTSError, match="not fitted"):
        SBTForecaster().predict(values[:10])


def test_task_loss_is_the_mse_of_the_forecast_of_the_last_row(values):
    splits = split_and_scale(data_of(values), SplitBounds(300, 400, 500, "fraction"), window=WINDOW, stride=50,
                             formulation=Formulation("change", "window"))
    model = randomise(create_model(build_model_config("sbt", TINY, n_channels=3)))
    batch = tuple(torch.stack(items) for items in zip(*[splits.train_set()[i] for i in range(4)]))
    forward_last = last_step_function(model, torch.device("cpu"))
    windows = np.stack([splits.rows[e - WINDOW + 1:e + 1] for e in splits.train_set().ends[:4]])
    expected = np.mean((prepare_windows(windows, splits.formulation).forecast(
        forward_last(prepare_windows(windows, splits.formulation).x)) - windows[:, -1]) ** 2)
    assert float(ForecastTask().training_loss(model, batch).detach()) == pytest.approx(expected, rel=1e-5)
