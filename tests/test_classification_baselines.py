"""MiniRocket, MultiRocket and 1-NN DTW next to the classifier: fitted on the run's own split, sized, reported."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("aeon")

from sbts.baselines import classification as baselines  # noqa: E402
from sbts.baselines.classification import (BYTES_PER_VALUE, MINIROCKET_MIN_LENGTH, MULTIROCKET_MIN_LENGTH,  # noqa: E402
                                           classification_baselines, dtw_cost, stored_bytes, to_aeon)
from sbts.cli.main import main  # noqa: E402
from sbts.errors import ConfigError  # noqa: E402
from sbts.report.sweep_report import build_report  # noqa: E402
from sbts.sweep import parse_spec  # noqa: E402
from sbts.sweep import trials  # noqa: E402
from sbts.sweep.study import StudyResults  # noqa: E402
from sbts.tasks import get_task  # noqa: E402
from sbts.tasks.classification import ClassificationOptions, ClassificationTask, SBTClassifier  # noqa: E402

NAMES = ("minirocket", "multirocket", "1nn_dtw")
N_CLASSES, N_CHANNELS, LENGTH, SHORT_LENGTH = 3, 3, 20, 8
N_TRAIN, N_VAL, N_TEST = 30, 9, 15
EASY_ACCURACY = 0.8  # well above chance (1/3) on separable sines
TIMINGS = ("fit_seconds", "predict_seconds")
TINY_MODEL = ["--d-model", "8", "--n-heads", "1", "--d-ff", "16", "--n-layers", "1", "--batch-size", "16",
              "--epochs", "1", "--device", "cpu"]


def sine_cases(n: int, length: int = LENGTH, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, T, C) cases as the Transformer sees them: the class sets the sine's frequency, the phase is random."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % N_CLASSES
    t = np.arange(length)[:, None]
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, N_CHANNELS))
    X = np.sin(2 * np.pi * (y[:, None, None] + 1) * t / length + phase)
    return (X + 0.1 * rng.standard_normal(X.shape)).astype(np.float32), y


def splits(length: int = LENGTH) -> tuple[tuple, dict[str, tuple]]:
    return sine_cases(N_TRAIN, length, 1), {"val": sine_cases(N_VAL, length, 2), "test": sine_cases(N_TEST, length, 3)}


def without_timings(report: dict) -> dict:
    return {name: {k: v for k, v in entry.items() if k not in TIMINGS} for name, entry in report.items()}


@pytest.fixture(scope="module")
def report() -> dict:
    train, evaluated = splits()
    return classification_baselines(train, evaluated, seed=0)


def test_every_baseline_is_scored_sized_and_timed_on_the_split(report):
    assert list(report) == list(NAMES)
    for name, entry in report.items():
        for split, n in (("val", N_VAL), ("test", N_TEST)):
            assert 0 <= entry[split]["accuracy"] <= 1 and entry[split]["n"] == n
            assert entry[split]["accuracy"] >= EASY_ACCURACY, (name, split, entry[split])
        assert entry["size_bytes"] > 0 and entry["fit_seconds"] >= 0 and entry["predict_seconds"] >= 0
        assert isinstance(entry["size_rule"], str) and entry["size_rule"]
    assert report["1nn_dtw"]["size_bytes"] == N_TRAIN * N_CHANNELS * LENGTH * BYTES_PER_VALUE
    # ridge weights alone: one per class and ROCKET feature, many more than the stored training set
    assert report["minirocket"]["size_bytes"] > report["1nn_dtw"]["size_bytes"]
    assert report["multirocket"]["size_bytes"] > report["minirocket"]["size_bytes"]


def test_the_same_seed_gives_the_same_baselines(report):
    train, evaluated = splits()
    assert without_timings(classification_baselines(train, evaluated, seed=0)) == without_timings(report)


def test_series_shorter_than_the_rocket_kernels_are_zero_padded_on_the_right():
    X, _ = sine_cases(2, SHORT_LENGTH)
    padded = to_aeon(X, MINIROCKET_MIN_LENGTH)
    assert padded.shape == (2, N_CHANNELS, MINIROCKET_MIN_LENGTH)
    assert np.array_equal(padded[:, :, :SHORT_LENGTH], np.transpose(X, (0, 2, 1)))
    assert not padded[:, :, SHORT_LENGTH:].any()
    train, evaluated = splits(SHORT_LENGTH)
    short = classification_baselines(train, evaluated, seed=0)
    assert all(short[name]["test"]["accuracy"] >= EASY_ACCURACY for name in NAMES)
    assert short["1nn_dtw"]["size_bytes"] == N_TRAIN * N_CHANNELS * SHORT_LENGTH * BYTES_PER_VALUE
    assert to_aeon(X, MULTIROCKET_MIN_LENGTH).shape[2] == MULTIROCKET_MIN_LENGTH


def test_dtw_above_its_cost_budget_is_skipped_with_the_cost_and_the_budget(monkeypatch):
    train, evaluated = splits()
    cost = dtw_cost(N_TRAIN, N_VAL + N_TEST, LENGTH, N_CHANNELS)
    assert cost == N_TRAIN * (N_VAL + N_TEST) * LENGTH * (2 * 0.1 * LENGTH + 1) * N_CHANNELS
    monkeypatch.setattr(baselines, "DTW_COST_BUDGET", cost - 1)
    skipped = classification_baselines(train, evaluated, seed=0)
    assert set(skipped["1nn_dtw"]) == {"skipped"}
    assert f"{cost:.3g}" in skipped["1nn_dtw"]["skipped"] and f"{cost - 1:.3g}" in skipped["1nn_dtw"]["skipped"]
    assert "accuracy" in skipped["minirocket"]["test"]


def test_stored_bytes_counts_each_numeric_array_once_through_any_container():
    class Fitted:
        pass

    shared = np.zeros((3, 4), dtype=np.float64)
    fitted, inner = Fitted(), Fitted()
    inner.weights = [shared, (np.ones(5, dtype=np.int32), {"bias": np.ones(2)})]
    inner.owner = fitted  # a cycle
    fitted.inner, fitted.again = inner, {"same": shared}
    fitted.names = np.array(["a", "b"])  # not numbers
    fitted.nested = np.array([np.ones(7), None], dtype=object)
    assert stored_bytes(fitted) == (12 + 5 + 2 + 7) * BYTES_PER_VALUE


def test_without_aeon_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "aeon.classification.convolution_based", None)
    train, evaluated = splits()
    with pytest.raises(ConfigError, match=r"pip install 'sbts\[datasets\]'"):
        classification_baselines(train, evaluated, seed=0)


def test_the_option_is_off_by_default_and_a_bool():
    assert ClassificationTask.options_class is ClassificationOptions
    assert ClassificationOptions().baselines is False
    with pytest.raises(ConfigError, match="baselines must be true or false"):
        ClassificationOptions.from_dict({"baselines": "yes"})


def test_a_run_reports_the_baselines_only_when_asked(synthetic_ts, tmp_path):
    def train(*extra: str) -> dict:
        out = tmp_path / ("with" if extra else "without")
        assert main(["train", "classification", "--data", str(synthetic_ts), *TINY_MODEL, "--out", str(out),
                     "--quiet", *extra]) == 0
        return json.loads((out / "metrics.json").read_text())

    assert "baselines" not in train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a sweep worker runs
    try:
        metrics = train("--baselines")
        assert torch.get_num_threads() == 1  # aeon's thread limits once left it at the machine's cores
    finally:
        torch.set_num_threads(threads)
    assert list(metrics["baselines"]) == list(NAMES)
    assert metrics["baselines"]["minirocket"]["test"]["n"] == metrics["n_test"]
    assert metrics["baselines"]["minirocket"]["val"]["n"] == metrics["n_val"]


# --- what a sweep keeps of them, and its report -----------------------------------------------------

def fabricated_metrics() -> dict:
    return {"dataset": "Synth", "model": "sbt", "density": 0.5, "seed": 0, "val": {"accuracy": 0.7},
            "test": {"accuracy": 0.6},
            "baselines": {
                "minirocket": {"val": {"accuracy": 0.9, "n": 9}, "test": {"accuracy": 0.8, "n": 15},
                               "fit_seconds": 0.5, "predict_seconds": 0.1, "size_bytes": 300, "size_rule": "arrays"},
                "1nn_dtw": {"skipped": "estimated 2e9 DTW cell updates exceed the budget of 1e9"}}}


def test_a_run_record_keeps_size_fit_time_and_validation_and_leaves_out_skipped(monkeypatch, tmp_path):
    monkeypatch.setattr(trials, "model_sizes", lambda task, run_dir: {"size_bytes": 1000, "paper_bytes": 100})
    record = trials.run_record(get_task("classification"), {"seed": 0}, tmp_path / "run", fabricated_metrics())
    assert record["baselines"] == {"minirocket": {"accuracy": 0.8, "val": {"accuracy": 0.9}, "size_bytes": 300,
                                                  "fit_seconds": 0.5}}
    forecast = {"persistence": {"rule": "last", "val": {"mse": 2.0}, "test": {"mse": 1.0, "mae": 0.5}, "seconds": 0}}
    assert trials.baseline_record(get_task("forecasting"), forecast["persistence"]) == {
        "mse": 1.0, "mae": 0.5, "val": {"mse": 2.0}}


def test_the_report_shows_baseline_size_and_validation_and_puts_them_on_the_pareto_front(synthetic_ts, tmp_path):
    spec = parse_spec({"task": "classification", "data": str(synthetic_ts), "grid": {"seed": [0, 1]}}, "s.yaml")
    records = []
    for seed, accuracy in ((0, 0.6), (1, 0.7)):
        baseline = {"minirocket": {"accuracy": 0.8 + seed / 10, "val": {"accuracy": 0.9}, "size_bytes": 300,
                                   "fit_seconds": 0.5}}
        records.append({"run": f"seed={seed}", "params": {"seed": seed}, "dataset": "Synth", "model": "sbt",
                        "density": 0.5, "seed": seed, "val": {"accuracy": 0.5}, "test": {"accuracy": accuracy},
                        "baselines": baseline, "size_bytes": 1000, "paper_bytes": 100, "epochs": 1,
                        "seconds_per_epoch": 0.1, "selection": "best validation accuracy"})
    results = StudyResults("s", "sqlite:///x", spec, records, {"complete": 2})
    text, document, figures = build_report(results, tmp_path / "report.md")
    assert "| baseline: minirocket | 2 | 0.900 ± 0.000 | 0.850 ± 0.071 | 300 | – | – | – | 0.5 |" in text
    assert "| SBT d=0.5 | 2 | 0.500 ± 0.000 | 0.650 ± 0.071 | 1,000 | 100 | 1.0 | 0.100 | 0.1 |" in text
    table = document["datasets"]["Synth"]
    assert table["baselines"]["minirocket"]["size_bytes"] == 300
    assert table["baselines"]["minirocket"]["fit_seconds"] == 0.5
    # the baselines are smaller and more accurate than both runs: they alone make the front
    assert table["pareto_front"] == ["seed=1/minirocket"]
    assert "Pareto front (test accuracy against size, smallest first): baseline: minirocket (seed 1)." in text
    assert Path(figures["pareto"]).is_file()


def test_the_estimator_keeps_the_baselines_of_its_validation_cases():
    (X, y), _ = splits()
    X = np.transpose(X, (0, 2, 1))  # the estimator takes aeon's layout
    tiny = {"d_model": 8, "n_heads": 1, "d_ff": 16, "n_layers": 1, "epochs": 1, "device": "cpu", "val_fraction": 0.3}
    fitted = SBTClassifier(baselines=True, **tiny).fit(X, y)
    assert list(fitted.baselines_) == list(NAMES)
    for entry in fitted.baselines_.values():  # fit has no test cases
        assert "test" not in entry and entry["val"]["n"] == round(tiny["val_fraction"] * N_TRAIN)
