"""Real data: short forecasting runs on ETTh1 and exchange_rate from SBTS_DATA_DIR, through the CLI, the
export and the torch-free runtime (the full comparison is benchmarks/forecasting.py)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import real_data_dir

from sbts.cli.main import main
from sbts.data import load_forecasting
from sbts.runtime import load

pytestmark = pytest.mark.data


def test_etth1_run_forecasts_every_test_hour_next_to_independent_baselines(tmp_path, capsys):
    real_data_dir()
    data = load_forecasting("ETT/ETTh1")
    run = tmp_path / "run"
    code = main(["train", "forecasting", "--data", "ETT/ETTh1", "--model", "sbt", "--density", "0.5", "--window", "48",
                 "--stride", "8", "--epochs", "2", "--device", "cpu", "--quiet", "--out", str(run)])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"]["method"] == "informer" and metrics["split"]["rows"] == {"train": 8640, "val": 2880,
                                                                                     "test": 2880}
    assert metrics["split"]["dates"]["test"] == ["2017-10-24T00:00:00", "2018-02-20T23:00:00"]
    assert metrics["test"]["n_forecasts"] == 2880 and metrics["val"]["n_forecasts"] == 2880
    # The baselines, recomputed here from the raw file: z-scored with the first 12 months only.
    mean, std = data.values[:8640].mean(0), data.values[:8640].std(0)
    z = (data.values[:14400] - mean) / std
    truth = z[11520:14400]
    persistence = metrics["baselines"]["persistence"]["test"]
    assert persistence["mse"] == pytest.approx(np.mean((z[11519:14399] - truth) ** 2), rel=1e-5)
    window_mean = np.stack([z[t - 47:t].mean(0) for t in range(11520, 14400)])
    assert metrics["baselines"]["window_mean"]["test"]["mae"] == pytest.approx(np.mean(np.abs(window_mean - truth)),
                                                                               rel=1e-5)
    # Two short epochs of the paper's formulation need not beat anything; the report must say how it compares.
    ratio = metrics["compared_with_baselines"]["mse_ratio_to"]["persistence"]
    assert ratio == pytest.approx(metrics["test"]["mse"] / persistence["mse"])
    assert metrics["compared_with_baselines"]["beats_every_baseline"] == (
        metrics["test"]["mse"] < min(b["test"]["mse"] for b in metrics["baselines"].values()))
    with open(run / "test_predictions.csv") as handle:
        rows = list(csv.reader(handle))
    assert len(rows) == 2881 and rows[1][1] == "2017-10-24T00:00:00"
    assert main(["export", str(run), "-o", str(tmp_path / "etth1.sbts")]) == 0
    runtime = load(tmp_path / "etth1.sbts")
    forecasts = np.array([[float(v) for v in row[3::2]] for row in rows[1:201]])
    np.testing.assert_allclose(runtime.predict_every_step(data.values[11520:11720], context=data.values[:11520])[:, 0],
                               forecasts, rtol=1e-4, atol=1e-4)


def test_exchange_rate_fraction_split_and_the_residual_formulation(tmp_path, capsys):
    real_data_dir()
    run = tmp_path / "run"
    code = main(["train", "forecasting", "--data", "exchange_rate", "--model", "dense", "--window", "32",
                 "--stride", "4", "--epochs", "1", "--target", "change", "--input-norm", "window", "--device", "cpu",
                 "--quiet", "--out", str(run)])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"]["method"] == "fraction" and metrics["split"]["rows"] == {"train": 5311, "val": 760,
                                                                                     "test": 1517}
    assert "dates" not in metrics["split"] and metrics["paper_formulation"] is False
    # Starting from persistence, one epoch stays within a factor of persistence's error.
    assert metrics["test"]["mse"] < 3 * metrics["baselines"]["persistence"]["test"]["mse"]
