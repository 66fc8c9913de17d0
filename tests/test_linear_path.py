"""The linear path: a linear map from the whole window to the last step's output, beside the Transformer, made by
the layer factory (so sparse-binary in an SBT); a forecaster's option only."""

import numpy as np
import pytest
import torch

import sbts
from sbts.cli import main
from sbts.config import ModelConfig
from sbts.errors import ConfigError
from sbts.layers import DenseLinear, SparseBinaryLinear
from sbts.export.artifact import export_model
from sbts.runtime import load
from sbts.tasks.anomaly import AnomalyTask
from sbts.tasks.base import DataSource
from sbts.tasks.classification import ClassificationTask
from tests.test_artifact import randomise
from tests.test_forecasting_task import TINY, build_model_config

SMALL = dict(in_channels=3, out_dim=6, max_len=9, d_model=16, n_heads=2, n_layers=2, d_ff=32, attention="step_t",
             norm="layer_time")


@pytest.mark.parametrize("model_name,layer", [("sbt", SparseBinaryLinear), ("dense", DenseLinear)])
def test_the_path_adds_a_linear_map_of_the_variable_major_window_to_the_last_step_only(model_name, layer):
    with_path = randomise(sbts.create_model(model_name, **SMALL, linear_path=True))
    without = randomise(sbts.create_model(model_name, **SMALL))  # the same seeds: every other layer is the same
    path = with_path.linear_path
    assert isinstance(path, layer) and (path.in_features, path.out_features) == (9 * 3, 6) and path.bias is None
    x = torch.randn(4, 9, 3)
    with torch.no_grad():
        out, reference = with_path(x), without(x)
        weight = (path.effective_weight() if model_name == "sbt" else path.weight).reshape(6, 3, 9)
        expected_path = torch.einsum("ovt,btv->bo", weight, x)  # variable v at step t is input v * max_len + t
    torch.testing.assert_close(out[:, :-1], reference[:, :-1])
    torch.testing.assert_close(out[:, -1], reference[:, -1] + expected_path, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[:, -1], reference[:, -1])
    torch.testing.assert_close(with_path(x, last_step_only=True)[:, 0], out[:, -1], rtol=1e-5, atol=1e-6)


def test_the_scores_of_the_path_train():
    model = sbts.create_model("sbt", **SMALL, linear_path=True)
    model(torch.randn(2, 9, 3))[:, -1].square().sum().backward()
    assert model.linear_path.scores.grad is not None and model.linear_path.scores.grad.abs().sum() > 0


@pytest.mark.parametrize("model_name", ["sbt", "dense"])
def test_the_exported_runtime_adds_the_same_path_at_the_last_step(model_name, tmp_path):
    model = randomise(sbts.create_model(model_name, **SMALL, linear_path=True)).eval()
    formulation = {"target": "change", "input_norm": "window", "horizon": 2}
    runtime = load(export_model(model, tmp_path / "m.sbts", task="forecasting",
                                inference_state={"formulation": formulation, "columns": ["a", "b", "c"]}).path)
    x = np.random.default_rng(0).standard_normal((3, 9, 3)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(runtime.forward(x), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(runtime.forward(x, last_step_only=True)[:, 0], expected[:, -1], rtol=1e-5, atol=1e-5)


def test_config_counts_the_path_needs_whole_windows_and_does_not_stream():
    config = ModelConfig(**SMALL, linear_path=True)
    plain = ModelConfig(**SMALL)
    assert config.weight_positions - plain.weight_positions == 9 * 3 * 6
    assert ModelConfig(**{**SMALL, "attention": "full", "norm": "batch"}, linear_path=True).needs_fixed_length
    rope = ModelConfig(**{**SMALL, "norm": "layer", "pos_encoding": "rope"}, linear_path=True)
    assert not rope.streamable and "linear_path" in rope.streaming_problem
    with pytest.raises(ConfigError, match="linear_path must be true or false"):
        ModelConfig(**SMALL, linear_path="yes")


def test_a_config_without_the_path_is_written_as_before_and_reads_back():
    plain, with_path = ModelConfig(**SMALL), ModelConfig(**SMALL, linear_path=True)
    assert "linear_path" not in plain.to_dict()  # files of models without it keep their bytes
    assert with_path.to_dict()["linear_path"] is True
    assert ModelConfig.from_dict(plain.to_dict()) == plain
    assert ModelConfig.from_dict(with_path.to_dict()) == with_path


def test_the_forecaster_takes_the_path():
    config = build_model_config("sbt", {**TINY, "linear_path": True}, n_channels=3, horizon=2)
    assert config.linear_path and config.out_dim == 6


@pytest.mark.parametrize("task", [ClassificationTask(), AnomalyTask()], ids=lambda t: t.name)
def test_other_tasks_refuse_the_path(task, synthetic_ts):
    source = task.load_for({"data": str(synthetic_ts)}) if task.name == "classification" else None
    spec = {"model": {"linear_path": True}}
    with pytest.raises(ConfigError, match=rf"^model.linear_path=True: linear_path is not an option of {task.name}$"):
        task.run_config(spec, source or DataSource("x", None))


def test_the_cli_offers_the_path_to_forecasting_only(synthetic_ts, tmp_path, capsys):
    code = main(["train", "classification", "--data", str(synthetic_ts), "--out", str(tmp_path / "r"), "--linear-path"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--linear-path is not an option of sbts train classification (an option of sbts train forecasting)" in err
    assert not (tmp_path / "r").exists()
