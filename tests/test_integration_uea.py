"""Real data: short training runs on UEA JapaneseVowels from SBTS_DATA_DIR (the full runs are benchmarks)."""

from __future__ import annotations

import pytest
from conftest import real_data_dir

from sbts.tasks.classification import ClassificationTask
from sbts.tasks.runs import build_run_spec

CLASSIFICATION = ClassificationTask()

pytestmark = pytest.mark.data


# Seconds, not minutes: batch 16 (the preset's is 8) and, for the SBT, a larger learning rate (scores train
# faster at 5e-3); the paper-length runs are the shipped sweeps (sbts reproduce paper-classification).
@pytest.mark.parametrize("model,train,floor", [("dense", {"epochs": 10, "batch_size": 16}, 0.93),
                                               ("sbt", {"epochs": 15, "batch_size": 16, "lr": 5e-3}, 0.9)])
def test_japanese_vowels_learns(tmp_path, model, train, floor):
    real_data_dir()
    spec = build_run_spec("classification", data="UEA/JapaneseVowels", model_name=model, config_file=None,
                          model_overrides={}, train_overrides={**train, "device": "cpu"})
    metrics = CLASSIFICATION.train_run(spec, tmp_path / model, verbose=False)
    assert metrics["n_test"] == 370 and metrics["n_train"] + metrics["n_val"] == 270
    assert metrics["test"]["accuracy"] >= floor, metrics["test"]
