"""sbts.report.forecast_plot: the forecasts of finished forecasting runs (one step ahead, and the fan of h-step
paths for h > 1) against the truth, dates on the x axis when the series has them, the default stretch at the end
of the test period, and one-line errors for bad ranges and bad run files."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest

from sbts.cli.main import main
from sbts.errors import ConfigError, DataError
from sbts.report.figure import step_range
from sbts.report.forecast_plot import (DEFAULT_STEPS, FAN_SPANS, MAX_FAN_PATHS, default_steps, fan_origins,
                                       forecast_figure, plot_forecasts, plot_range, read_predictions, read_run)

from tests.test_forecasting_task import spec, synthetic_series, train_run, write_csv

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Real runs: dated h = 3 with 398 test origins (more than DEFAULT_STEPS), undated h = 1 and h = 4."""
    root = tmp_path_factory.mktemp("forecast_plot")
    dated = write_csv(root / "dated.csv", synthetic_series(n=1000))
    undated = root / "undated.csv"
    np.savetxt(undated, synthetic_series(n=600, channels=2), delimiter=",", fmt="%.6f")
    made = {"dated_h3": (dated, {"horizon": 3, "split": "fraction", "fractions": [0.5, 0.1, 0.4]}),
            "undated_h1": (undated, {}), "undated_h4": (undated, {"horizon": 4})}
    for name, (data, options) in made.items():
        train_run(spec(data, model_name="dense", epochs=1, **options), root / name, verbose=False)
    return {name: root / name for name in made}


@pytest.fixture
def plt():
    pytest.importorskip("matplotlib")
    from sbts.report.figure import pyplot

    plt = pyplot("figure.png")
    yield plt
    plt.close("all")


def lines(figure, gid, panel=0):
    return [line for line in figure.axes[panel].lines if line.get_gid() == gid]


# --- drawing --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["dated_h3", "undated_h1", "undated_h4"])
def test_runs_draw_a_png(runs, plt, tmp_path, name):
    path = plot_forecasts(runs[name], tmp_path / "f.png")
    assert path == tmp_path / "f.png"
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 1000


def test_dates_label_the_x_axis_when_the_series_has_them(runs, plt):
    import matplotlib.dates as mdates

    figure = forecast_figure(plt, runs["dated_h3"])
    x = lines(figure, "truth")[0].get_xdata()
    assert x.dtype.kind == "M" and x[0] == np.datetime64("2020-01-01T00:00") + np.timedelta64(600 + 62, "h")
    bottom = figure.axes[1]
    assert isinstance(bottom.xaxis.get_major_formatter(), mdates.ConciseDateFormatter)
    assert bottom.get_xlabel() == "date"
    assert all(label.get_rotation() == 30 for label in bottom.get_xticklabels())
    assert lines(figure, "path")[0].get_xdata().dtype.kind == "M"

    figure = forecast_figure(plt, runs["undated_h1"])
    x = lines(figure, "truth")[0].get_xdata()
    assert x.dtype.kind in "if" and x.tolist() == list(range(len(x)))
    assert figure.axes[1].get_xlabel() == "test step"


def test_the_default_range_is_the_last_steps(runs, plt):
    run = read_run(runs["dated_h3"])
    assert run.n_steps == 398 > DEFAULT_STEPS
    figure = forecast_figure(plt, runs["dated_h3"])
    truth = lines(figure, "truth")[0]
    np.testing.assert_array_equal(truth.get_xdata(), run.dates[-DEFAULT_STEPS:])
    np.testing.assert_array_equal(truth.get_ydata(), run.truth[-DEFAULT_STEPS:, 0])
    np.testing.assert_array_equal(lines(figure, "one_step")[0].get_ydata(), run.forecasts[-DEFAULT_STEPS:, 0])
    assert [axes.get_ylabel() for axes in figure.axes] == ["v0", "v1"]  # the first two variables
    assert "horizon 3" in figure.get_suptitle() and "dated_h3 (dense)" in figure.get_suptitle()
    # a short test period is shown whole; a long horizon widens the stretch so that a fan fits
    assert len(lines(forecast_figure(plt, runs["undated_h1"]), "truth")[0].get_xdata()) == 120
    assert plot_range(None, None, 1000, 1) == (1000 - DEFAULT_STEPS, 1000)
    assert default_steps(200) == FAN_SPANS * 200 and plot_range(None, None, 1000, 200) == (400, 1000)
    assert plot_range(10, None, 1000) == (10, 1000) and plot_range(None, 400, 1000) == (400 - DEFAULT_STEPS, 400)


def test_the_fan_paths_start_at_the_chosen_origins_and_have_h_points(runs, plt):
    run = read_run(runs["dated_h3"])
    start, end = 40, 160
    figure = forecast_figure(plt, runs["dated_h3"], variables=["v2", "v0"], start=start, end=end)
    expected = fan_origins(start, end, 3)
    assert len(expected) == MAX_FAN_PATHS and expected[0] == start and expected[-1] == end - 3
    assert (np.diff(expected) >= 3).all()  # never overlapping
    for panel, column in ((0, 2), (1, 0)):
        paths = lines(figure, "path", panel) + lines(figure, "last_path", panel)
        assert len(lines(figure, "last_path", panel)) == 1
        assert [int(np.searchsorted(run.dates, p.get_xdata()[0])) for p in paths] == expected.tolist()
        for line, origin in zip(paths, expected):
            np.testing.assert_array_equal(line.get_xdata(), run.dates[origin:origin + 3])
            np.testing.assert_allclose(line.get_ydata(), run.paths[origin, :, column])
    last = lines(figure, "last_path")[0]
    assert last.get_linewidth() > lines(figure, "path")[0].get_linewidth()
    labels = [text.get_text() for text in figure.legends[0].get_texts()]
    assert labels[:2] == ["truth", "forecast 1 step ahead"] and len(labels) == 4 and "last origin" in labels[3]

    undated = read_run(runs["undated_h4"])
    figure = forecast_figure(plt, runs["undated_h4"], origins=3)
    paths = lines(figure, "path") + lines(figure, "last_path")
    assert undated.n_steps == 117 and [p.get_xdata()[0] for p in paths] == [0, 56, 113]  # spread over the range
    assert all(len(p.get_xdata()) == 4 for p in paths)
    assert not lines(forecast_figure(plt, runs["undated_h4"], origins=0), "path")
    only = forecast_figure(plt, runs["undated_h4"], origins=1)
    assert not lines(only, "path") and lines(only, "last_path")[0].get_xdata()[0] == 113
    short = forecast_figure(plt, runs["undated_h4"], start=10, end=13)
    assert not lines(short, "last_path") and "too short" in short.axes[0].get_title()
    assert not lines(forecast_figure(plt, runs["undated_h1"]), "path")  # one step ahead: no fan


def test_fan_origins():
    assert fan_origins(0, 100, 10, 3).tolist() == [0, 45, 90]
    assert fan_origins(0, 100, 10, 100).tolist() == list(range(0, 91, 10))  # every h steps at the most
    assert fan_origins(5, 30, 10, 1).tolist() == [20] and fan_origins(5, 30, 10, 2).tolist() == [10, 20]
    for start, end, horizon, most in ((0, 1000, 7, 12), (3, 50, 4, 12), (0, 336, 96, 12), (0, 25, 2, 12)):
        origins = fan_origins(start, end, horizon, most)
        assert 1 <= len(origins) <= most and origins[0] >= start and origins[-1] == end - horizon
        assert (np.diff(origins) >= horizon).all()
    assert fan_origins(5, 14, 10).tolist() == [] and fan_origins(0, 100, 1).tolist() == []


# --- ranges and options ---------------------------------------------------------------------------

@pytest.mark.parametrize("start,end,message", [
    (-1, None, "--start -1 is outside 0..397"), (398, None, "--start 398 is outside"),
    (None, 0, "--end 0 is outside 1..398"), (None, 399, "--end 399 is outside"),
    (50, 50, "--start 50 must be before --end 50"), (1.5, None, "--start must be a whole test step"),
    (None, True, "--end must be a whole test step")])
def test_bad_ranges_are_one_line_config_errors(runs, tmp_path, start, end, message):
    pytest.importorskip("matplotlib")
    with pytest.raises(ConfigError, match=message) as error:
        plot_forecasts(runs["dated_h3"], tmp_path / "f.png", start=start, end=end)
    assert "\n" not in str(error.value) and not (tmp_path / "f.png").exists()


def test_bad_options_are_config_errors(runs, tmp_path):
    pytest.importorskip("matplotlib")
    with pytest.raises(ConfigError, match="unknown variable.*v9.*v0, v1, v2"):
        plot_forecasts(runs["dated_h3"], tmp_path / "f.png", variables=["v9"])
    with pytest.raises(ConfigError, match="origins"):
        plot_forecasts(runs["dated_h3"], tmp_path / "f.png", origins=-1)
    with pytest.raises(ConfigError, match=".png"):
        plot_forecasts(runs["dated_h3"], tmp_path / "f.jpgz")


def test_cli_plot(runs, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert main(["plot", str(runs["dated_h3"]), "-o", str(tmp_path / "f.svg"), "--variables", "v2",
                 "--start", "100"]) == 0
    assert json.loads(capsys.readouterr().out) == {"path": str(tmp_path / "f.svg")}
    assert (tmp_path / "f.svg").read_bytes().lstrip().startswith(b"<?xml")
    assert main(["plot", str(runs["undated_h4"]), "-o", str(tmp_path / "g.png"), "--end", "500"]) == 2
    err = capsys.readouterr().err
    assert "--end 500" in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["plot", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"the last {DEFAULT_STEPS} steps" in help_text and f"or {FAN_SPANS} horizons" in help_text


def test_anomaly_plots_still_start_at_zero(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from tests.test_anomaly_task import spec as anomaly_spec, synthetic_series as anomaly_series, write_folder
    from tests.test_anomaly_task import train_run as train_anomaly

    assert step_range(None, None, 10) == (0, 10) and step_range(None, 4, 10) == (0, 4)
    folder = write_folder(tmp_path / "data", *anomaly_series(n_train=200, n_test=120))
    train_anomaly(anomaly_spec(folder, model_name="dense", epochs=1), tmp_path / "run", verbose=False)
    assert main(["plot", str(tmp_path / "run"), "-o", str(tmp_path / "scores.png")]) == 0
    assert (tmp_path / "scores.png").read_bytes()[:8] == PNG
    assert main(["plot", str(tmp_path / "run"), "-o", str(tmp_path / "f.png"), "--variables", "v0"]) == 2
    assert "--variables does not apply" in capsys.readouterr().err


# --- reading the run --------------------------------------------------------------------------------

def test_read_predictions_gives_every_test_origin(runs):
    variables, truth, forecasts = read_predictions(runs["dated_h3"])
    assert variables == ["v0", "v1", "v2"] and len(truth["v1"]) == len(forecasts["v1"]) == 398
    run = read_run(runs["dated_h3"])
    np.testing.assert_allclose(run.paths[:, 0], run.forecasts, rtol=1e-5)  # the npy's first step is the csv's
    assert read_run(runs["undated_h1"]).paths is None and read_run(runs["undated_h1"]).dates is None


def test_a_variable_named_date_is_not_a_date_column(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"task": "forecasting", "predictions_file": "p.csv"}))
    (tmp_path / "p.csv").write_text("step,date,date_forecast\n0,1.5,1.25\n1,2.5,2.0\n")
    assert read_predictions(tmp_path)[0] == ["date"] and read_run(tmp_path).dates is None
    (tmp_path / "p.csv").write_text("step,date,date,date_forecast\n0,2020-01-01,1.5,1.25\n")
    run = read_run(tmp_path)
    assert run.variables == ["date"] and run.dates.tolist() == [np.datetime64("2020-01-01").item()]
    (tmp_path / "p.csv").write_text("step,date,x,x_forecast\n0,yesterday,1.5,1.25\n")
    with pytest.raises(DataError, match="p.csv: the date column"):
        read_run(tmp_path)


@pytest.fixture
def copied(runs, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(runs["dated_h3"], run_dir, ignore=shutil.ignore_patterns("checkpoints"))
    return run_dir


def _object_array(path):
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)


@pytest.mark.parametrize("damage,message", [
    (lambda p: p.unlink(), "forecasts file not found"),
    (lambda p: np.save(p, np.load(p)[:-1]), r"shape \(397, 3, 3\), expected \(398, 3, 3\)"),
    (lambda p: np.save(p, np.load(p)[:, :, :2]), r"shape \(398, 3, 2\), expected"),
    (lambda p: np.save(p, np.load(p)[:, :2]), r"shape \(398, 2, 3\), expected"),
    (lambda p: np.save(p, np.load(p).astype(np.int64)), "int64 values"),
    (_object_array, "not a plain .npy array"),
    (lambda p: p.write_bytes(b"\x80\x04garbage"), "not a plain .npy array"),
    (lambda p: p.write_bytes(p.read_bytes()[:-100]), "not a plain .npy array"),
    (lambda p: p.write_bytes(b""), "not a plain .npy array")])
def test_bad_forecasts_files_are_one_line_data_errors(copied, tmp_path, damage, message):
    damage(copied / "test_forecasts.npy")
    with pytest.raises(DataError, match="test_forecasts.npy: " + message) as error:
        read_run(copied)
    assert "\n" not in str(error.value)
    if importlib.util.find_spec("matplotlib"):
        with pytest.raises(DataError, match="test_forecasts.npy"):
            plot_forecasts(copied, tmp_path / "f.png")
        assert not (tmp_path / "f.png").exists()


def test_runs_that_are_not_finished_forecasting_runs(copied, tmp_path):
    metrics = json.loads((copied / "metrics.json").read_text())
    with pytest.raises(DataError, match="not a finished forecasting run .no metrics.json"):
        read_run(tmp_path / "nothing")
    (tmp_path / "anomaly").mkdir()
    (tmp_path / "anomaly" / "metrics.json").write_text(json.dumps({"task": "anomaly", "threshold": {}}))
    with pytest.raises(DataError, match="not a finished forecasting run .its metrics.json is of task anomaly"):
        read_run(tmp_path / "anomaly")
    (copied / "metrics.json").write_text("{not json")
    with pytest.raises(DataError, match="metrics.json: cannot read"):
        read_run(copied)
    for change, message in (({"predictions_file": None}, "names no predictions file"),
                            ({"forecasts_file": None}, "metrics.json: horizon 3 but no forecasts_file"),
                            ({"horizon": 0}, "metrics.json: horizon 0 is not"),
                            ({"predictions_file": "missing.csv"}, "missing.csv: predictions file not found")):
        edited = {k: v for k, v in {**metrics, **change}.items() if v is not None}
        (copied / "metrics.json").write_text(json.dumps(edited))
        with pytest.raises(DataError, match=message):
            read_run(copied)
    (copied / "metrics.json").write_text(json.dumps(metrics))
    csv_path = copied / "test_predictions.csv"
    lines_ = csv_path.read_text().splitlines()
    for text, message in (("\n".join(lines_[:1]), "no test rows"),
                          ("\n".join(lines_[:5] + [lines_[5] + ",1"]), "line 6 has 9 fields; the header has 8"),
                          ("\n".join(lines_[:3] + [lines_[3].replace(",", ",x", 3)]), "not a predictions table"),
                          ("x," + "\n".join(lines_), "expected columns step")):
        csv_path.write_text(text + "\n")
        with pytest.raises(DataError, match="test_predictions.csv: " + message) as error:
            read_run(copied)
        assert "\n" not in str(error.value)
