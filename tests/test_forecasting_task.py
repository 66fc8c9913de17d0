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


def build_model_config(model_name, overrides, *, n_channels, horizon=1):
    """The forecaster's model for ``n_channels`` variables ``horizon`` steps ahead, with the task's defaults for
    ``model_name``."""
    columns = [f"x{i}" for i in range(n_channels)]
    source = DataSource("series", ForecastData("series", np.zeros((100, n_channels)), columns, None, {}))
    return ForecastTask().run_config({"model_name": model_name, "model": overrides,
                                      "task_options": {"horizon": horizon}}, source).model


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


@pytest.mark.parametrize("model_name,attention,linear_path", [
    ("sbt", "step_t", "none"), ("dense", "full", "none"), ("sbt", "full", "none"), ("dense", "step_t", "none"),
    ("sbt", "step_t", "joint"), ("dense", "full", "joint"), ("sbt", "full", "shared"), ("dense", "step_t", "shared")])
@pytest.mark.parametrize("formulation", FORMULATIONS, ids=lambda f: f"{f.target}-{f.input_norm}")
def test_forecasts_do_not_depend_on_the_true_value(model_name, attention, linear_path, formulation, tmp_path):
    """Through the torch model and the exported runtime, on every attention and formulation, with and without the
    linear paths (which read the whole window, the zeroed target slot included)."""
    from sbts.export.artifact import export_model

    config = build_model_config(model_name, {**TINY, "attention": attention, "linear_path": linear_path},
                                n_channels=3)
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
    assert one_row.shape == (1, 1, 2) and np.isnan(one_row).all()
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
    last, mean = windows[:, -2:-1], windows[:, :-1].mean(1, keepdims=True)  # (6, 1, 3): one step ahead
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
                                 {"horizon": 0}, {"horizon": "3"}, {"horizon": True}, {"horizon": 10**6},
                                 {"seasonal_period": 0}, {"seasonal_period": 2.5}])
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
    np.testing.assert_array_equal(target.numpy(), splits.rows[ends[3]:ends[3] + 1])
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
        assert forecasts.shape == (end - start, 1, 3)
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
    with pytest.raises(DataError, match="leaves 0 test rows"):
        split_and_scale(data_of(values), SplitBounds(300, 500, 500, "fraction"), window=WINDOW, stride=1,
                        formulation=Formulation())
    with pytest.raises(ConfigError, match="at least 2"):
        split_and_scale(data_of(values), SplitBounds(300, 400, 500, "fraction"), window=1, stride=1,
                        formulation=Formulation())


def test_run_reports_standardised_and_original_errors_next_to_every_baseline(trained_run, values):
    run_dir, metrics = trained_run
    n = len(values)
    assert metrics["split"]["method"] == "fraction"
    assert metrics["split"]["rows"] == {"train": int(0.7 * n), "val": n - int(0.7 * n) - int(0.2 * n),
                                        "test": int(0.2 * n)}
    assert metrics["test"]["n_forecasts"] == int(0.2 * n)
    assert metrics["val"]["n_forecasts"] == metrics["split"]["rows"]["val"]
    assert set(metrics["baselines"]) == {"persistence", "seasonal_persistence", "window_mean", "ridge",
                                         "ridge_per_variable"}
    for entry in [metrics["test"]] + [b["test"] for b in metrics["baselines"].values()]:
        assert np.isfinite([entry["mse"], entry["mae"], entry["mse_original"], entry["mae_original"]]).all()
    ratios = metrics["compared_with_baselines"]["mse_ratio_to"]
    assert ratios["persistence"] == pytest.approx(metrics["test"]["mse"] / metrics["baselines"]["persistence"]["test"]
                                                  ["mse"])
    assert metrics["paper_formulation"] is False
    assert metrics["formulation"] == {"target": "change", "input_norm": "window", "horizon": 1}
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
    assert len(rows) - 1 == metrics["test"]["n_forecasts"]
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
        formulation))
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
    assert metrics["formulation"] == {"target": "change", "input_norm": "window", "horizon": 1}
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
    np.testing.assert_allclose([float(v) for v in rows[-1][1:]], load(tmp_path / "m.sbts").predict(values[:50])[0],
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
    np.testing.assert_allclose([float(v) for v in rows[3][1:]], runtime.predict(values[:302])[0], rtol=1e-5)
    np.testing.assert_allclose([float(v) for v in rows[1][1:]], runtime.predict(values[:300])[0], rtol=1e-5)
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
    forecast = estimator.predict(1, y=values[:450])
    assert forecast.shape == (1, 3)
    np.testing.assert_array_equal(estimator.predict(), estimator.predict(y=values[:400]))  # after the fitted series
    every = estimator.predict_every_step(values[450:], context=values[:450])
    assert every.shape == (50, 1, 3)
    np.testing.assert_allclose(every[0], forecast, rtol=1e-5)
    assert np.mean((every[:, 0] - values[450:]) ** 2) < np.var(values[450:], axis=0).mean()  # better than the mean
    runtime = load(estimator.export(tmp_path / "est.sbts").path)
    np.testing.assert_allclose(runtime.predict(values[:450]), forecast, rtol=1e-4)
    with pytest.raises(DataError, match="expected shape"):
        estimator.predict(y=values[:10, :2])
    with pytest.raises(ConfigError, match="fh must be an int or a list"):
        estimator.predict(values[:10])  # a history passed where the steps ahead go
    with pytest.raises(SBTSError, match="not fitted"):
        SBTForecaster().predict()


def test_task_loss_is_the_mse_of_the_forecast_of_the_last_row(values):
    splits = split_and_scale(data_of(values), SplitBounds(300, 400, 500, "fraction"), window=WINDOW, stride=50,
                             formulation=Formulation("change", "window"))
    model = randomise(create_model(build_model_config("sbt", TINY, n_channels=3)))
    batch = tuple(torch.stack(items) for items in zip(*[splits.train_set()[i] for i in range(4)]))
    forward_last = last_step_function(model, torch.device("cpu"))
    windows = np.stack([splits.rows[e - WINDOW + 1:e + 1] for e in splits.train_set().ends[:4]])
    expected = np.mean((prepare_windows(windows, splits.formulation).forecast(
        forward_last(prepare_windows(windows, splits.formulation).x))[:, 0] - windows[:, -1]) ** 2)
    assert float(ForecastTask().training_loss(model, batch).detach()) == pytest.approx(expected, rel=1e-5)


# --- horizons: h steps ahead from every origin ------------------------------------------------------------

HORIZON = 3


def test_training_examples_target_the_next_h_rows_inside_the_training_period(values):
    splits = split_and_scale(data_of(values), SplitBounds(300, 400, 500, "fraction"), window=WINDOW, stride=5,
                             formulation=Formulation("change", "window", HORIZON))
    train = splits.train_set()
    assert train.ends[0] == WINDOW - 1 and train.ends[-1] == 300 - HORIZON  # its last target is row 299
    _, target, *_ = train[2]
    np.testing.assert_array_equal(target.numpy(), splits.rows[train.ends[2]:train.ends[2] + HORIZON])
    assert splits.span("val") == (300, 400 - HORIZON + 1) and splits.span("test") == (400, 500 - HORIZON + 1)
    targets = splits.targets("test")
    assert targets.shape == (500 - 400 - HORIZON + 1, HORIZON, 3)
    np.testing.assert_array_equal(targets[5], splits.rows[405:405 + HORIZON])
    assert splits.val_set().ends[-1] == 400 - HORIZON  # the last validation origin's targets end at row 399
    with pytest.raises(DataError, match="fewer than the horizon of 200"):
        split_and_scale(data_of(values), SplitBounds(300, 400, 500, "fraction"), window=WINDOW, stride=5,
                        formulation=Formulation(horizon=200))
    with pytest.raises(DataError, match="horizon 290 forecasts"):
        split_and_scale(data_of(values), SplitBounds(300, 400, 800, "fraction"), window=WINDOW, stride=5,
                        formulation=Formulation(horizon=290))


@pytest.mark.parametrize("formulation", [Formulation("value", "none", HORIZON),
                                         Formulation("change", "window", HORIZON)],
                         ids=lambda f: f"{f.target}-{f.input_norm}")
def test_forecasts_of_every_step_ahead_never_read_the_origin_or_later(formulation):
    model = randomise(create_model(build_model_config("dense", TINY, n_channels=3, horizon=HORIZON)))
    forward_last = last_step_function(model, torch.device("cpu"))
    series = np.random.default_rng(11).standard_normal((30, 3)).astype(np.float32)
    base = forecast_every_step(forward_last, series, WINDOW, formulation, context=series[:4])
    assert base.shape == (30, HORIZON, 3) and np.isfinite(base).all()
    changed = series.copy()
    changed[17:] += 100.0
    again = forecast_every_step(forward_last, changed, WINDOW, formulation, context=series[:4])
    np.testing.assert_allclose(again[:18], base[:18], rtol=1e-5, atol=1e-6)  # origins up to 17 read rows < 17
    assert not np.allclose(again[18], base[18])
    np.testing.assert_allclose(forecast_next(forward_last, series[:17], WINDOW, formulation), base[17], rtol=1e-5,
                               atol=1e-6)


def test_a_run_config_gives_the_head_h_values_per_variable(csv_path):
    task = ForecastTask()
    source = task.load(str(csv_path))
    run = task.run_config(spec(csv_path, horizon=HORIZON), source)
    assert (run.model.in_channels, run.model.out_dim) == (3, 3 * HORIZON)
    assert task.run_config(spec(csv_path), source).model.out_dim == 3  # h = 1: the paper's single step
    with pytest.raises(ConfigError, match="out_dim is 3 in the config"):
        task.run_config({**spec(csv_path, horizon=HORIZON), "model": {**TINY, "out_dim": 3}}, source)


def test_shared_pass_loss_equals_the_windowed_loss_at_a_horizon(values):
    from sbts.tasks.runs import shared_block_loss

    splits = split_and_scale(data_of(values), SplitBounds(300, 400, 500, "fraction"), window=WINDOW, stride=1,
                             formulation=Formulation("change", "none", HORIZON))
    config = build_model_config("sbt", {**TINY, "attention": "step_t", "norm": "layer", "pos_encoding": "rope"},
                                n_channels=3, horizon=HORIZON)
    model = randomise(create_model(config)).eval()
    block = splits.train_blocks(8)[3]
    windowed = ForecastTask().training_loss(model, tuple(torch.stack(items) for items in zip(
        *[splits.train_set()[i] for i in range(24, 32)])))
    assert [int(e) for e in block.ends + int(splits.train_ends()[24]) - int(block.ends[0])] == list(
        splits.train_ends()[24:32])
    assert float(shared_block_loss(model, block).detach()) == pytest.approx(float(windowed.detach()), rel=1e-5)


def test_a_run_at_a_horizon_reports_every_step_ahead_and_exports_predicts_and_streams(tmp_path, csv_path, values,
                                                                                       capsys):
    run_dir = tmp_path / "run"
    metrics = train_run(spec(csv_path, model_name="dense", epochs=1, horizon=HORIZON, target="change",
                             input_norm="none"), run_dir, verbose=False)
    test_origins = 100 - HORIZON + 1  # 500 rows: 350 / 50 / 100 by the default fractions
    assert metrics["horizon"] == HORIZON and metrics["formulation"]["horizon"] == HORIZON
    assert metrics["test"]["n_forecasts"] == test_origins and metrics["test"]["horizon"] == HORIZON
    per_step = metrics["test"]["per_horizon_step"]["mse"]
    assert len(per_step) == HORIZON and np.mean(per_step) == pytest.approx(metrics["test"]["mse"], rel=1e-6)
    for name, entry in metrics["baselines"].items():
        assert len(entry["test"]["per_horizon_step"]["mse"]) == HORIZON, name
    assert metrics["baselines"]["seasonal_persistence"]["period"] == 24  # the series' daily sine
    forecasts = np.load(run_dir / "test_forecasts.npy", allow_pickle=False)
    assert forecasts.shape == (test_origins, HORIZON, 3) and forecasts.dtype == np.float32
    rows = list(csv.reader(open(run_dir / "test_predictions.csv")))
    assert len(rows) - 1 == test_origins
    np.testing.assert_allclose([float(v) for v in rows[1][3::2]], forecasts[0, 0], rtol=1e-5)  # step one ahead
    # the persistence baseline's numbers, independently: every step ahead repeats the row before the origin
    truth = values[400:500]
    origins_truth = np.stack([truth[i:i + HORIZON] for i in range(test_origins)])
    repeated = np.repeat(values[399:399 + test_origins, None], HORIZON, axis=1)
    std = values[:350].std(0)
    assert metrics["baselines"]["persistence"]["test"]["mse"] == pytest.approx(
        np.mean(((repeated - origins_truth) / std) ** 2), rel=1e-4)

    artifact = tmp_path / "h.sbts"
    assert main(["export", str(run_dir), "-o", str(artifact)]) == 0
    runtime = load(artifact)
    assert runtime.horizon == HORIZON
    every = runtime.predict_every_step(values[400:500], context=values[:400])
    np.testing.assert_allclose(every[:test_origins], forecasts, rtol=1e-4, atol=1e-4)
    np.savetxt(tmp_path / "history.csv", values[:40], delimiter=",")
    out = tmp_path / "two.csv"
    assert main(["predict", str(artifact), "--input", str(tmp_path / "history.csv"), "--horizon", "2",
                 "-o", str(out)]) == 0
    table = list(csv.reader(open(out)))
    assert table[0] == ["step", "v0+1", "v1+1", "v2+1", "v0+2", "v1+2", "v2+2"] and len(table) == 42
    np.testing.assert_allclose([float(v) for v in table[-1][1:]], runtime.predict(values[:40])[:2].ravel(),
                               rtol=1e-6)
    assert main(["predict", str(artifact), "--input", str(tmp_path / "history.csv"), "-o", str(tmp_path / "all.csv")
                 ]) == 0
    assert list(csv.reader(open(tmp_path / "all.csv")))[0][1:] == [f"v{c}+{k}" for k in (1, 2, 3) for c in range(3)]
    capsys.readouterr()
    assert main(["predict", str(artifact), "--input", str(tmp_path / "history.csv"), "--horizon", "4"]) == 2
    assert "forecasts 1 to 3 step(s) ahead" in capsys.readouterr().err
    stream = runtime.stream(context=values[:400])
    np.testing.assert_allclose(stream.update_many(values[400:405]), every[1:6], rtol=1e-4, atol=1e-5)


def test_horizon_applies_to_forecasters_only(tmp_path, capsys):
    from sbts.config import ModelConfig
    from sbts.export.artifact import export_model

    path = tmp_path / "clf.sbts"
    export_model(create_model(ModelConfig(in_channels=2, out_dim=2, max_len=8, d_model=8, d_ff=16, density=0.5)),
                 path, task="classification", inference_state={"classes": ["a", "b"]})
    assert main(["predict", str(path), "--input", str(path), "--horizon", "2"]) == 2
    assert "--horizon applies to forecasters" in capsys.readouterr().err


def test_an_artifact_from_before_horizons_forecasts_one_step(tmp_path, trained_run, values):
    from sbts.runtime.artifact import read_artifact

    run_dir, _ = trained_run
    assert main(["export", str(run_dir), "-o", str(tmp_path / "m.sbts")]) == 0
    runtime = load(tmp_path / "m.sbts")
    artifact = read_artifact(tmp_path / "m.sbts")
    del artifact.document["task_state"]["formulation"]["horizon"]
    older = ForecastRuntime(artifact)
    assert older.horizon == 1
    np.testing.assert_array_equal(older.predict(values[:60]), runtime.predict(values[:60]))
    artifact.document["task_state"]["formulation"]["horizon"] = 2  # the head's outputs are for one step
    with pytest.raises(SBTSError, match="needs 6 outputs; the model has 3"):
        ForecastRuntime(artifact)


# --- the estimator: fh, pandas in and out -------------------------------------------------------------------

@pytest.fixture(scope="module")
def hourly_forecaster():
    import pandas as pd

    frame = pd.DataFrame(synthetic_series(300, 2), columns=["load", "temp"],
                         index=pd.date_range("2021-03-01", periods=300, freq="h", name="time"))
    return frame, SBTForecaster(window=WINDOW, d_model=8, d_ff=16, epochs=1, batch_size=32, stride=2,
                                horizon=HORIZON, device="cpu").fit(frame)


def test_predict_fh_continues_the_index_and_keeps_the_columns(hourly_forecaster):
    import pandas as pd

    frame, forecaster = hourly_forecaster
    ahead = forecaster.predict(HORIZON)
    assert isinstance(ahead, pd.DataFrame) and list(ahead.columns) == ["load", "temp"]
    assert list(ahead.index) == list(pd.date_range("2021-03-13 12:00", periods=HORIZON, freq="h"))
    assert ahead.index.name == "time"
    np.testing.assert_allclose(ahead.to_numpy(), forecaster.predict(y=frame.to_numpy()))
    picked = forecaster.predict([3, 1])
    np.testing.assert_array_equal(picked.to_numpy(), ahead.to_numpy()[[2, 0]])
    assert list(picked.index) == [ahead.index[2], ahead.index[0]]
    np.testing.assert_allclose(forecaster.predict(2, y=frame.iloc[:100]).to_numpy(),
                               forecaster.predict_every_step(frame.iloc[100:101], context=frame.iloc[:100])[0, :2],
                               rtol=1e-5)
    assert forecaster.predict(fh=np.array([2])).shape == (1, 2)


def test_predict_fh_on_other_indexes_and_one_variable():
    import pandas as pd

    values = synthetic_series(200, 1)[:, 0]
    series = pd.Series(values, index=pd.RangeIndex(1000, 1200, 5 // 5 * 1), name="load")
    forecaster = SBTForecaster(window=WINDOW, d_model=8, d_ff=16, epochs=1, horizon=2, device="cpu").fit(series)
    ahead = forecaster.predict()
    assert isinstance(ahead, pd.Series) and ahead.name == "load" and list(ahead.index) == [1200, 1201]
    stepped = pd.Series(values, index=np.arange(0, 1000, 5))
    assert list(forecaster.predict(y=stepped.rename("load")).index) == [1000, 1005]
    irregular = pd.Series(values, index=pd.DatetimeIndex(np.datetime64("2021-01-01") + np.cumsum(
        np.random.default_rng(0).integers(1, 9, 200)).astype("timedelta64[h]")), name="load")
    with pytest.raises(DataError, match="no regular frequency"):  # never labels that could collide with real ones
        forecaster.predict(y=irregular)
    with pytest.raises(DataError, match="no constant step"):
        forecaster.predict(y=pd.Series(values[:4], index=[0, 1, 5, 6], name="load"))
    assert isinstance(forecaster.predict(y=values[:50]), np.ndarray)
    daily = pd.Series(values, index=pd.period_range("2020-01-01", periods=200, freq="D"), name="load")
    assert list(forecaster.predict(y=daily).index.astype(str)) == ["2020-07-19", "2020-07-20"]
    # the step comes from the whole fitted index, not from the rows a forecast reads
    sparse = pd.Series(values, index=np.arange(0, 2000, 10), name="load")
    assert list(SBTForecaster(window=3, d_model=8, d_ff=16, epochs=1, horizon=2, device="cpu").fit(
        sparse).predict().index) == [2000, 2010]


@pytest.mark.parametrize("fh, message", [(0, "step 0 ahead is outside 1..3"), (4, "step 4 ahead is outside"),
                                         (10**30, "outside 1..3"), ([1, 5], "step 5 ahead"), ([], "fh must be"),
                                         ([1.5], "fh must be"), ("2", "fh must be"), ([[1], [2, 3]], "fh must be"),
                                         ([2, 2], "step 2 ahead is given twice"), ("series", "a Series of shape")])
def test_bad_fh_is_refused(hourly_forecaster, fh, message):
    import pandas as pd

    frame, forecaster = hourly_forecaster
    if fh == "series":  # a history passed the way predict(y_history) took it
        fh = pd.Series([1, 2, 3])
    with pytest.raises(ConfigError, match=message):
        forecaster.predict(fh)


def test_exogenous_x_is_refused_in_fit_and_predict(hourly_forecaster):
    frame, forecaster = hourly_forecaster
    with pytest.raises(SBTSError, match="exogenous X is not supported"):
        forecaster.predict(2, X=frame)
    with pytest.raises(SBTSError, match="exogenous X is not supported"):
        SBTForecaster(window=WINDOW, epochs=1).fit(frame, X=frame)


def test_the_estimator_streams_h_steps_ahead(hourly_forecaster):
    frame, forecaster = hourly_forecaster
    stream = forecaster.stream(context=frame.iloc[:200])
    out = stream.update(frame.to_numpy()[200])
    assert out.shape == (HORIZON, 2)
    np.testing.assert_allclose(out, forecaster.predict(y=frame.iloc[:201]).to_numpy(), rtol=1e-5, atol=1e-6)


def test_a_seasonal_period_longer_than_the_training_rows_is_refused_before_training(tmp_path, csv_path):
    with pytest.raises(ConfigError, match="seasonal_period 400: longer than the 350 training rows"):
        train_run(spec(csv_path, seasonal_period=400), tmp_path / "run", verbose=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_one_step_config_at_a_horizon_says_what_to_change(tmp_path, csv_path, capsys):
    import yaml

    config = tmp_path / "one_step.yaml"
    config.write_text(yaml.safe_dump({"model": {"in_channels": 3, "out_dim": 3, "max_len": WINDOW}}))
    assert main(["train", "forecasting", "--data", str(csv_path), "--config", str(config), "--horizon", "4",
                 "--out", str(tmp_path / "run")]) == 2
    assert "horizon 4 needs 12: leave out_dim out of the config" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--horizon", "0"], ["--horizon", "two"], ["--horizon", "1000000"],
                                   ["--seasonal-period", "0"]])
def test_bad_horizon_flags_exit_2_with_one_line_and_leave_nothing(tmp_path, csv_path, capsys, flags):
    try:
        code = main(["train", "forecasting", "--data", str(csv_path), "--out", str(tmp_path / "run"), *flags])
    except SystemExit as exit:  # argparse's refusal of a value that is not a number
        code = exit.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert ("horizon" in err or "seasonal_period" in err or "seasonal-period" in err)
    assert not (tmp_path / "run").exists()
