"""Real data: short training runs on UEA JapaneseVowels from SBTS_DATA_DIR (the full runs are benchmarks)."""

from __future__ import annotations

import pytest
from conftest import real_data_dir

from sbts.tasks import classification
from sbts.tasks.runs import build_run_spec

pytestmark = pytest.mark.data


@pytest.mark.parametrize("model,epochs,floor", [("dense", 25, 0.93), ("sbt", 80, 0.9)])
def test_japanese_vowels_learns(tmp_path, model, epochs, floor):
    real_data_dir()
    spec = build_run_spec("classification", data="UEA/JapaneseVowels", model_name=model, config_file=None,
                          model_overrides={}, train_overrides={"epochs": epochs, "device": "cpu"})
    metrics = classification.train_run(spec, tmp_path / model, verbose=False)
    assert metrics["n_test"] == 370 and metrics["n_train"] + metrics["n_val"] == 270
    assert metrics["test"]["accuracy"] >= floor, metrics["test"]
