"""The linear path: a linear map of the window to the last step's output, beside the Transformer, made by the layer
factory (so sparse-binary in an SBT); joint (the whole window to every output) or shared (each variable's steps to
its own outputs, one map for every variable); a forecaster's option only."""

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


def expected_path(kind: str, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The path's output (B, out_dim) written out by index, from its weight and windows x (B, T, D)."""
    if kind == "joint":  # variable v at step t is input v * max_len + t
        return torch.einsum("ovt,btv->bo", weight.reshape(6, 3, 9), x)
    return torch.einsum("kt,btv->bkv", weight, x).flatten(1)  # output k * D + v: variable v, k + 1 steps ahead


@pytest.mark.parametrize("kind,shape", [("joint", (9 * 3, 6)), ("shared", (9, 2))])
@pytest.mark.parametrize("model_name,layer", [("sbt", SparseBinaryLinear), ("dense", DenseLinear)])
def test_the_path_adds_a_linear_map_of_the_window_to_the_last_step_only(model_name, layer, kind, shape):
    with_path = randomise(sbts.create_model(model_name, **SMALL, linear_path=kind))
    without = randomise(sbts.create_model(model_name, **SMALL))  # the same seeds: every other layer is the same
    path = with_path.linear_path
    assert isinstance(path, layer) and (path.in_features, path.out_features) == shape and path.bias is None
    x = torch.randn(4, 9, 3)
    with torch.no_grad():
        out, reference = with_path(x), without(x)
        weight = path.effective_weight() if model_name == "sbt" else path.weight
        expected = expected_path(kind, weight, x)
    torch.testing.assert_close(out[:, :-1], reference[:, :-1])
    torch.testing.assert_close(out[:, -1], reference[:, -1] + expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[:, -1], reference[:, -1])
    torch.testing.assert_close(with_path(x, last_step_only=True)[:, 0], out[:, -1], rtol=1e-5, atol=1e-6)


def test_the_shared_path_treats_every_variable_alike():
    model = randomise(sbts.create_model("sbt", **SMALL, linear_path="shared")).eval()
    x = torch.randn(1, 9, 3)
    swapped = x[..., [1, 0, 2]]  # variables 0 and 1 exchanged: their path outputs exchange, nothing else changes
    with torch.no_grad():
        path, path_swapped = model._path(x).reshape(2, 3), model._path(swapped).reshape(2, 3)
    torch.testing.assert_close(path_swapped, path[:, [1, 0, 2]])


@pytest.mark.parametrize("kind", ["joint", "shared"])
def test_the_scores_of_the_path_train(kind):
    model = sbts.create_model("sbt", **SMALL, linear_path=kind)
    model(torch.randn(2, 9, 3))[:, -1].square().sum().backward()
    assert model.linear_path.scores.grad is not None and model.linear_path.scores.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["joint", "shared"])
@pytest.mark.parametrize("model_name", ["sbt", "dense"])
def test_the_exported_runtime_adds_the_same_path_at_the_last_step(model_name, kind, tmp_path):
    model = randomise(sbts.create_model(model_name, **SMALL, linear_path=kind)).eval()
    formulation = {"target": "change", "input_norm": "window", "horizon": 2}
    runtime = load(export_model(model, tmp_path / "m.sbts", task="forecasting",
                                inference_state={"formulation": formulation, "columns": ["a", "b", "c"]}).path)
    x = np.random.default_rng(0).standard_normal((3, 9, 3)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(runtime.forward(x), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(runtime.forward(x, last_step_only=True)[:, 0], expected[:, -1], rtol=1e-5, atol=1e-5)


def test_config_counts_the_path_needs_whole_windows_and_does_not_stream():
    plain = ModelConfig(**SMALL)
    assert ModelConfig(**SMALL, linear_path="joint").weight_positions - plain.weight_positions == 9 * 3 * 6
    assert ModelConfig(**SMALL, linear_path="shared").weight_positions - plain.weight_positions == 9 * 2
    for kind in ("joint", "shared"):
        assert ModelConfig(**{**SMALL, "attention": "full", "norm": "batch"}, linear_path=kind).needs_fixed_length
        rope = ModelConfig(**{**SMALL, "norm": "layer", "pos_encoding": "rope"}, linear_path=kind)
        assert not rope.streamable and f"linear_path {kind}" in rope.streaming_problem
    assert not ModelConfig(**{**SMALL, "attention": "full", "norm": "batch"}).needs_fixed_length


@pytest.mark.parametrize("value,message", [
    ("yes", "linear_path must be one of none, joint, shared; got 'yes'"),
    (True, "linear_path must be one of none, joint, shared; got True"),
])
def test_a_bad_path_is_refused(value, message):
    with pytest.raises(ConfigError, match=f"^{message}$"):
        ModelConfig(**SMALL, linear_path=value)


def test_the_shared_path_needs_as_many_outputs_for_every_variable():
    with pytest.raises(ConfigError, match="^linear_path shared gives each of the 3 variables the same number of "
                                          "outputs; out_dim 7 is not a multiple of in_channels$"):
        ModelConfig(**{**SMALL, "out_dim": 7}, linear_path="shared")


@pytest.mark.parametrize("kind", ["joint", "shared"])
def test_a_config_without_the_path_is_written_as_before_and_reads_back(kind):
    plain, with_path = ModelConfig(**SMALL), ModelConfig(**SMALL, linear_path=kind)
    assert "linear_path" not in plain.to_dict()  # files of models without it keep their bytes
    assert with_path.to_dict()["linear_path"] == kind
    assert ModelConfig.from_dict(plain.to_dict()) == plain
    assert ModelConfig.from_dict(with_path.to_dict()) == with_path


def test_a_file_from_before_the_path_had_kinds_reads_its_boolean():
    legacy = {**ModelConfig(**SMALL).to_dict(), "linear_path": True}
    assert ModelConfig.from_dict(legacy).linear_path == "joint"
    assert ModelConfig.from_dict({**legacy, "linear_path": False}).linear_path == "none"


@pytest.mark.parametrize("kind", ["joint", "shared"])
def test_the_forecaster_takes_the_path(kind):
    config = build_model_config("sbt", {**TINY, "linear_path": kind}, n_channels=3, horizon=2)
    assert config.linear_path == kind and config.out_dim == 6


@pytest.mark.parametrize("task", [ClassificationTask(), AnomalyTask()], ids=lambda t: t.name)
def test_other_tasks_refuse_the_path(task, synthetic_ts):
    source = task.load_for({"data": str(synthetic_ts)}) if task.name == "classification" else None
    spec = {"model": {"linear_path": "shared"}}
    with pytest.raises(ConfigError, match=rf"^model.linear_path='shared': linear_path is not an option of "
                                          rf"{task.name}$"):
        task.run_config(spec, source or DataSource("x", None))


def test_the_cli_offers_the_path_to_forecasting_only(synthetic_ts, tmp_path, capsys):
    code = main(["train", "classification", "--data", str(synthetic_ts), "--out", str(tmp_path / "r"),
                 "--linear-path", "shared"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--linear-path is not an option of sbts train classification (an option of sbts train forecasting)" in err
    assert not (tmp_path / "r").exists()
