"""The task protocol: a task is one file plus its registration. A toy fourth task (per-series regression of a
scalar, ``tests/scalar_regression_task.py``) runs end to end through the CLI (train, evaluate, summary, export,
predict) and the torch-free runtime, and the registry is what every part reads."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import scalar_regression_task as toy

from sbts import registry
from sbts.cli.main import main
from sbts.runtime import load
from sbts.tasks import get_task, load_trained_run


@pytest.fixture
def registered():
    toy.register()
    yield
    registry.unregister_task(toy.NAME)


def write_regression_data(folder, n_train=80, n_test=20, channels=2, steps=12, seed=0):
    """Sines whose amplitude is the target: learnable from the series alone."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        amplitude = rng.uniform(0.5, 2.0, n)
        t = np.arange(steps)
        x = amplitude[:, None, None] * np.sin(2 * np.pi * t / 6 + np.arange(channels)[:, None])
        np.save(folder / f"{split}.npy", x + 0.05 * rng.standard_normal(x.shape))
        np.save(folder / f"{split}_y.npy", amplitude)
    return folder


def test_a_registered_task_runs_end_to_end_through_the_cli_and_the_runtime(registered, tmp_path, capsys):
    data = write_regression_data(tmp_path / "data")
    run = tmp_path / "run"
    assert main(["train", toy.NAME, "--data", str(data), "--out", str(run), "--epochs", "20", "--lr", "0.005",
                 "--d-model", "16", "--d-ff", "32", "--batch-size", "16", "--device", "cpu", "--quiet"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == toy.NAME and metrics["epochs"] == 20
    assert metrics["test"]["loss"] < metrics["baselines"]["training_mean"]["test"]["loss"]  # it learned something
    assert json.loads((run / "config.json").read_text())["model"]["d_ff"] == 32

    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["test"]["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-5)
    assert main(["summary", str(run), "--accounting", "honest", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["task"] == toy.NAME

    artifact = tmp_path / "toy.sbts"
    assert main(["export", str(run), "-o", str(artifact)]) == 0
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(artifact), "--input", str(data / "test.npy"), "-o", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    runtime = load(artifact)
    assert isinstance(runtime, toy.ScalarRegressionRuntime)
    test = list(np.load(data / "test.npy"))
    np.testing.assert_allclose([float(r["prediction"]) for r in rows], runtime.predict(test), rtol=1e-6)

    # The runtime reproduces the torch model.
    trained = load_trained_run(run)
    task = get_task(toy.NAME)
    prepared = task.prepare(task.load(str(data)), trained.run, trained.task_state)
    import torch

    with torch.no_grad():
        torch_out = trained.model(prepared.test.tensors[0]).mean(dim=(1, 2)).numpy()
    expected = torch_out * trained.task_state["target_std"] + trained.task_state["target_mean"]
    np.testing.assert_allclose(runtime.predict(test), expected, rtol=1e-4, atol=1e-5)


def test_the_registry_is_what_the_cli_reads(registered, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert toy.NAME in capsys.readouterr().out
    registry.unregister_task(toy.NAME)
    try:
        with pytest.raises(SystemExit) as info:
            main(["train", toy.NAME, "--out", "x"])
        assert info.value.code == 2 and "invalid choice: 'regression'" in capsys.readouterr().err
    finally:
        toy.register()


def test_unknown_tasks_are_one_line_errors(tmp_path, capsys):
    from sbts.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        registry.task_class("nope")
    with pytest.raises(ConfigError, match="identifier"):
        registry.register_task("not a name", task=object, runtime=object)
