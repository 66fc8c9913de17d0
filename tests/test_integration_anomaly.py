"""Real data: a short anomaly-detection run on SMD machine-2-1 from SBTS_DATA_DIR, through the CLI, the
export and the torch-free runtime (the full comparison is benchmarks/anomaly.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import real_data_dir

from sbts.cli.main import main
from sbts.data import load_anomaly
from sbts.runtime import load

pytestmark = pytest.mark.data


def test_smd_machine_run_scores_every_step_and_beats_chance(tmp_path, capsys):
    real_data_dir()
    data = load_anomaly("SMD/machine-2-1")
    run = tmp_path / "run"
    code = main(["train", "anomaly", "--data", "SMD/machine-2-1", "--model", "sbt", "--window", "50", "--stride", "25",
                 "--epochs", "2", "--device", "cpu", "--quiet", "--out", str(run)])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    config = metrics["config"]
    assert config["model"]["d_model"] == 76 and config["model"]["attention"] == "step_t"  # the SMD preset
    assert metrics["n_test"] == len(data.test) and metrics["n_train"] + metrics["n_val"] == len(data.train)
    scores = np.loadtxt(run / "test_scores.csv", delimiter=",", skiprows=1)
    assert scores.shape == (len(data.test), 5) and np.array_equal(scores[:, 4], data.labels)
    test = metrics["test"]
    # Threshold-free quality well above what a random score gets (AUC-ROC 0.5, AUC-PR = the anomaly rate).
    assert test["auc_roc"] > 0.6 and test["auc_pr"] > 1.5 * data.labels.mean()
    assert metrics["threshold"]["uses_test_data"] is False
    assert main(["export", str(run), "-o", str(tmp_path / "smd.sbts")]) == 0
    runtime = load(tmp_path / "smd.sbts")
    np.testing.assert_allclose(runtime.decision_function(data.test[:500], context=data.train),
                               scores[:500, 1], rtol=1e-4, atol=1e-6)
