"""ONNX export: onnxruntime reproduces the torch model, sparse-binary linears become constant ternary weights,
the file describes itself in its metadata props, and over-long inputs are refused by sbts."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
import torch
from conftest import randomise

from sbts import __version__
from sbts.config import ModelConfig
from sbts.data.preprocessing import ChannelScaler
from sbts.errors import DataError, SBTSError
from sbts.export.artifact import build_artifact, export_model
from sbts.export.onnx import (CLASSES_KEY, CONFIG_KEY, INPUTS_KEY, OUTPUTS_KEY, SCALER_KEY, TASK_KEY, TASK_STATE_KEY,
                              VERSION_KEY, export_onnx, run_onnx)
from sbts.heads.forecasting import WINDOW_NORM_EPS
from sbts.layers import SparseBinaryLinear
from sbts.models import create_model
from sbts.runtime import load

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

MAX_LEN = 12
CASES = {
    "sbt-qkv_mask-batch-sinusoidal": ("sbt", {"attention": "qkv_mask", "norm": "batch"}),
    "dense-full-batch-learnable-bias": ("dense", {"attention": "full", "norm": "batch", "linear_bias": True}),
    "sbt-step_t-none": ("sbt", {"attention": "step_t", "norm": "none"}),
    "dense-full-layer_time": ("dense", {"attention": "full", "norm": "layer_time"}),
    "sbt-step_t-layer_time": ("sbt", {"attention": "step_t", "norm": "layer_time"}),
    "sbt-step_t-layer_time-joint_path": ("sbt", {"attention": "step_t", "norm": "layer_time", "linear_path": "joint"}),
    "dense-full-batch-joint_path": ("dense", {"attention": "full", "norm": "batch", "linear_path": "joint"}),
    # a shared path gives each of the 3 variables as many outputs
    "sbt-full-batch-shared_path": ("sbt", {"attention": "full", "norm": "batch", "linear_path": "shared",
                                           "out_dim": 6}),
}


def randomised_model(name: str, out_dim: int = 4, **kwargs):
    """A small eval-mode model whose scores and norms are random, so that no layer is trivially neutral."""
    return randomise(create_model(name, in_channels=3, out_dim=out_dim, max_len=MAX_LEN, d_model=16, n_heads=2,
                                  n_layers=2, d_ff=32, **kwargs))


def metadata(path) -> dict[str, str]:
    return {prop.key: prop.value for prop in onnx.load(str(path)).metadata_props}


def graph_shapes(values) -> dict[str, list]:
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


@pytest.fixture(scope="module", params=list(CASES))
def exported(request, tmp_path_factory):
    name, kwargs = CASES[request.param]
    model = randomised_model(name, **kwargs)
    return model, export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx")


def torch_output(model, x: np.ndarray, padding_mask: np.ndarray | None = None) -> np.ndarray:
    with torch.no_grad():
        mask = None if padding_mask is None else torch.from_numpy(padding_mask)
        return model(torch.from_numpy(x), mask).numpy()


def assert_matches(out: np.ndarray, ref: np.ndarray) -> None:
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_matches_torch(exported, batch):
    model, path = exported
    x = np.random.default_rng(batch).standard_normal((batch, MAX_LEN, 3)).astype(np.float32)
    assert_matches(run_onnx(path, x), torch_output(model, x))


def test_padding_mask_and_shorter_series_match_torch(exported):
    model, path = exported
    if model.config.needs_fixed_length:
        pytest.skip("fixed-length models take no padding mask")
    rng = np.random.default_rng(0)
    for length in (MAX_LEN, 7):  # the time axis is dynamic for models that take padding
        x = rng.standard_normal((3, length, 3)).astype(np.float32)
        padding_mask = np.arange(length)[None, :] >= np.array([length, length - 2, 3])[:, None]
        # Padded rows are computed the same way in both (zeroed by the norm or attended normally): compare all.
        assert_matches(run_onnx(path, x, padding_mask), torch_output(model, x, padding_mask))


def test_graph_has_constant_ternary_weights_and_no_top_k(exported):
    model, path = exported
    graph = onnx.load(str(path)).graph
    assert "TopK" not in {node.op_type for node in graph.node}
    sparse_layers = [m for m in model.modules() if isinstance(m, SparseBinaryLinear)]
    ternary_nonzero_counts = []
    for initializer in graph.initializer:
        values = onnx.numpy_helper.to_array(initializer)
        magnitudes = np.unique(np.abs(values))
        if values.ndim == 2 and len(magnitudes) == 2 and magnitudes[0] == 0 and (values < 0).any():
            ternary_nonzero_counts.append(int(np.count_nonzero(values)))  # values are exactly {-alpha, 0, +alpha}
    assert sorted(ternary_nonzero_counts) == sorted(layer.kept for layer in sparse_layers)


def test_inputs_and_axes(exported):
    model, path = exported
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
              for i in onnx.load(str(path)).graph.input}
    if model.config.needs_fixed_length:
        assert inputs == {"x": ["batch", MAX_LEN, 3]}
    else:
        assert inputs == {"x": ["batch", "time", 3], "padding_mask": ["batch", "time"]}


def test_fixed_length_on_request(tmp_path):
    model = randomised_model("sbt", attention="full", norm="batch")
    path = export_onnx(model, tmp_path / "model.onnx", length=8, opset=20)
    shapes = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in onnx.load(path).graph.input]
    assert shapes == [["batch", 8, 3], ["batch", 8]]
    x = np.random.default_rng(0).standard_normal((2, 8, 3)).astype(np.float32)
    assert_matches(run_onnx(path, x), torch_output(model, x))


def test_caller_model_unchanged_and_file_written_atomically(tmp_path):
    model = randomised_model("sbt", attention="qkv_mask", norm="batch").train()
    scores = {name: p.detach().clone() for name, p in model.named_parameters()}
    rng_state = torch.get_rng_state()
    path = export_onnx(model, tmp_path / "model.onnx")
    assert model.training
    assert all(torch.equal(p, scores[name]) for name, p in model.named_parameters())
    assert sum(isinstance(m, SparseBinaryLinear) for m in model.modules()) == 14
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary file left behind
    x = np.random.default_rng(0).standard_normal((2, MAX_LEN, 3)).astype(np.float32)
    assert_matches(run_onnx(path, x), torch_output(model.eval(), x))  # exported in eval mode


def test_bad_arguments_are_one_line_errors(tmp_path):
    fixed = randomised_model("sbt", attention="step_t", norm="none")
    with pytest.raises(SBTSError, match="exactly max_len=12"):
        export_onnx(fixed, tmp_path / "a.onnx", length=8)
    with pytest.raises(SBTSError, match="length must be"):
        export_onnx(randomised_model("sbt"), tmp_path / "b.onnx", length=MAX_LEN + 1)
    with pytest.raises(SBTSError, match="opset must be"):
        export_onnx(fixed, tmp_path / "c.onnx", opset=13)
    assert not list(tmp_path.iterdir())
    path = export_onnx(fixed, tmp_path / "d.onnx")
    with pytest.raises(SBTSError, match="takes no padding mask"):
        run_onnx(path, np.zeros((1, MAX_LEN, 3)), np.zeros((1, MAX_LEN), dtype=bool))
    with pytest.raises(SBTSError, match="not found"):
        run_onnx(tmp_path / "missing.onnx", np.zeros((1, MAX_LEN, 3)))


def test_missing_packages_say_what_to_install(tmp_path, monkeypatch):
    model = randomised_model("sbt")
    path = export_onnx(model, tmp_path / "model.onnx")
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ImportError
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(SBTSError, match=r"needs the onnx package: pip install 'sbts\[onnx\]'$"):
        export_onnx(model, tmp_path / "other.onnx")
    with pytest.raises(SBTSError, match=r"needs the onnxruntime package: pip install 'sbts\[onnx\]'$"):
        run_onnx(path, np.zeros((1, MAX_LEN, 3)))
    assert not (tmp_path / "other.onnx").exists()


SCALER = ChannelScaler(np.array([0.5, -2.0, 1e-3]), np.array([2.0, 0.25, 3.0]))
TASKS = {  # task -> (model kwargs, inference state)
    "classification": ({"attention": "qkv_mask", "norm": "batch"}, {"classes": ["w", "x", "y", "z"]}),
    "anomaly": ({"out_dim": 3, "attention": "step_t", "norm": "none"},
                {"threshold": {"value": 0.7, "method": "fixed"}}),
    "forecasting": ({"out_dim": 3, "attention": "full", "norm": "batch"},
                    {"formulation": {"target": "change", "input_norm": "window"}, "columns": ["a", "b", "c"]}),
}


@pytest.mark.parametrize("task", [*TASKS, "forecasting-h3"])
def test_metadata_round_trips_and_agrees_with_the_artifact(task, tmp_path):
    if task == "forecasting-h3":
        task, (model, state) = "forecasting", forecaster(HORIZON)
    else:
        kwargs, state = TASKS[task]
        model = randomised_model("sbt", **kwargs)
    props = metadata(export_onnx(model, tmp_path / "m.onnx", task=task, inference_state=state, scaler=SCALER))
    assert ModelConfig.from_dict(json.loads(props[CONFIG_KEY])) == model.config
    scaler = ChannelScaler.from_dict(json.loads(props[SCALER_KEY]))
    assert np.array_equal(scaler.mean, SCALER.mean) and np.array_equal(scaler.std, SCALER.std)  # exact: JSON floats
    assert props[TASK_KEY] == task and props[VERSION_KEY] == __version__
    assert json.loads(props[TASK_STATE_KEY]) == state
    assert (CLASSES_KEY in props) == (task == "classification")
    if task == "classification":
        assert json.loads(props[CLASSES_KEY]) == state["classes"]
    document, tensors = build_artifact(model, task=task, inference_state=state, scaler=SCALER)
    assert {"sbts_version": props[VERSION_KEY], "model": json.loads(props[CONFIG_KEY]), "task": props[TASK_KEY],
            "task_state": json.loads(props[TASK_STATE_KEY])} == {key: document[key] for key in
                                                                 ("sbts_version", "model", "task", "task_state")}
    assert np.array_equal(tensors["input_scaler.mean"], scaler.mean)
    assert np.array_equal(tensors["input_scaler.std"], scaler.std)


@pytest.mark.parametrize("padding_mask_input", [True, False])
@pytest.mark.parametrize("case", ["sbt-qkv_mask-batch-sinusoidal", "sbt-step_t-none"])
def test_described_inputs_and_outputs_are_the_graphs(case, padding_mask_input, tmp_path):
    name, kwargs = CASES[case]
    model = randomised_model(name, **kwargs)
    path = export_onnx(model, tmp_path / "m.onnx", scaler=SCALER, padding_mask_input=padding_mask_input)
    props, graph = metadata(path), onnx.load(str(path)).graph
    inputs, outputs = json.loads(props[INPUTS_KEY]), json.loads(props[OUTPUTS_KEY])
    assert {i["name"]: i["shape"] for i in inputs} == graph_shapes(graph.input)
    assert {o["name"]: o["shape"] for o in outputs} == graph_shapes(graph.output)
    assert [i["dtype"] for i in inputs] == ["float32", "bool"][:len(graph.input)]
    assert inputs[0]["must_be_scaled"] is True and inputs[0]["max_time_steps"] == MAX_LEN
    assert TASK_KEY not in props and outputs[0]["meaning"] == "per-step network output"  # a bare network
    unscaled = json.loads(metadata(export_onnx(model, tmp_path / "n.onnx"))[INPUTS_KEY])
    assert unscaled[0]["must_be_scaled"] is False and SCALER_KEY not in metadata(tmp_path / "n.onnx")


HORIZON = 3  # the steps ahead of the multi-step forecasters


def forecaster(horizon: int = 1, target: str = "change", input_norm: str = "none"):
    """A random forecaster of 3 channels ``horizon`` steps ahead (out_dim 3 x horizon) and its inference state."""
    kwargs, state = TASKS["forecasting"]
    formulation = {"target": target, "input_norm": input_norm, "horizon": horizon}
    return randomised_model("sbt", **{**kwargs, "out_dim": 3 * horizon}), {**state, "formulation": formulation}


@pytest.mark.parametrize("horizon", [1, HORIZON])
def test_output_meaning_follows_the_forecast_formulation(tmp_path, horizon):
    meanings = {}
    for target in ("value", "change"):
        for input_norm in ("none", "window"):
            model, state = forecaster(horizon, target, input_norm)
            path = export_onnx(model, tmp_path / f"{target}-{input_norm}.onnx", task="forecasting",
                               inference_state=state)
            outputs = json.loads(metadata(path)[OUTPUTS_KEY])
            assert outputs[0]["shape"] == ["batch", "time", 3 * horizon]
            meanings[target, input_norm] = outputs[0]["meaning"]
    for (target, input_norm), meaning in meanings.items():
        formula = ("forecast = x[:, -2] + output[:, -1]" if horizon == 1
                   else f"forecast = x[:, -2, None] + output[:, -1].reshape(batch, {HORIZON}, 3)")
        assert (formula in meaning) == (target == "change")
        assert ("the forecast value itself" in meaning) == (target == "value")
        assert ("normalised by their own per-channel mean and std" in meaning) == (input_norm == "window")
        # several steps: the layout of output[:, -1], step ahead first
        assert (f"output[:, -1].reshape(batch, {HORIZON}, 3) is step ahead first, then channel" in meaning
                ) == (horizon > 1)
        assert ("reshape" in meaning) == (horizon > 1)


@pytest.mark.parametrize("horizon", [1, HORIZON])
@pytest.mark.parametrize("target,input_norm", [("change", "none"), ("value", "none"), ("change", "window")])
def test_forecast_read_as_the_metadata_says_equals_the_runtime(tmp_path, target, input_norm, horizon):
    """The described reading of a forecaster's output (scale, zero the target row, for window norm scale the
    observed rows by their own mean and std, reshape output[:, -1] to (batch, h, channels), add x[:, -2] to a
    change, map back, unscale) gives the sbts runtime's forecasts, step ahead first."""
    model, state = forecaster(horizon, target, input_norm)
    path = export_onnx(model, tmp_path / "f.onnx", task="forecasting", inference_state=state, scaler=SCALER)
    runtime = load(export_model(model, tmp_path / "f.sbts", task="forecasting", inference_state=state,
                                scaler=SCALER).path)
    assert runtime.horizon == horizon
    history = np.random.default_rng(2).standard_normal((30, 3)) * SCALER.std + SCALER.mean
    scaler = ChannelScaler.from_dict(json.loads(metadata(path)[SCALER_KEY]))
    observed = scaler.transform_rows(history[-(MAX_LEN - 1):])[None]
    mean, spread = np.zeros((1, 3), np.float32), np.ones((1, 3), np.float32)
    if input_norm == "window":
        mean, spread = observed.mean(axis=1), np.sqrt(observed.var(axis=1) + WINDOW_NORM_EPS)
        observed = (observed - mean[:, None]) / spread[:, None]
    window = np.concatenate([observed, np.zeros((1, 1, 3), np.float32)], axis=1).astype(np.float32)
    ahead = run_onnx(path, window)[:, -1].reshape(1, horizon, 3)
    forecast = (window[:, -2, None] if target == "change" else 0.0) + ahead
    forecast = forecast * spread[:, None] + mean[:, None]
    expected = runtime.predict(history)
    assert expected.shape == (horizon, 3)
    np.testing.assert_allclose(scaler.inverse_transform_rows(forecast)[0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("horizon,out_dim", [(HORIZON, 3), (1, 3 * HORIZON), (HORIZON, 3 * HORIZON + 1)])
def test_a_forecaster_whose_outputs_disagree_with_its_horizon_is_refused(tmp_path, horizon, out_dim):
    model = randomised_model("sbt", out_dim=out_dim, attention="full", norm="batch")
    formulation = {"target": "change", "input_norm": "none", "horizon": horizon}
    if horizon == 1:
        del formulation["horizon"]  # as files written before horizons record it: one step
    with pytest.raises(SBTSError) as refused:
        export_onnx(model, tmp_path / "m.onnx", task="forecasting",
                    inference_state={"formulation": formulation, "columns": ["a", "b", "c"]})
    message = str(refused.value)
    assert "\n" not in message and message.endswith(f"{horizon} step(s) ahead needs {3 * horizon} outputs; the "
                                                     f"model has {out_dim}")
    with pytest.raises(SBTSError, match="needs a valid 'formulation'"):
        export_onnx(model, tmp_path / "m.onnx", task="forecasting",
                    inference_state={"formulation": {**formulation, "horizon": 0}, "columns": ["a", "b", "c"]})
    assert not list(tmp_path.iterdir())


def test_task_facts_that_would_misdescribe_the_graph_are_refused(tmp_path):
    model = randomised_model("sbt", out_dim=3)
    with pytest.raises(SBTSError, match="needs its 3 class names"):
        export_onnx(model, tmp_path / "a.onnx", task="classification", inference_state={"classes": ["a", "b"]})
    with pytest.raises(SBTSError, match="needs a valid 'formulation'"):
        export_onnx(model, tmp_path / "b.onnx", task="forecasting", inference_state={"columns": ["a", "b", "c"]})
    with pytest.raises(SBTSError, match="the scaler has 2 channels, the model takes 3"):
        export_onnx(model, tmp_path / "c.onnx", scaler=ChannelScaler(np.zeros(2), np.ones(2)))
    assert not list(tmp_path.iterdir())


def test_graph_without_padding_mask_matches_the_masked_graph(exported, tmp_path):
    model, masked = exported
    unmasked = export_onnx(model, tmp_path / "unmasked.onnx", padding_mask_input=False)
    assert graph_shapes(onnx.load(str(unmasked)).graph.input) == {
        "x": ["batch", MAX_LEN if model.config.needs_fixed_length else "time", 3]}
    rng = np.random.default_rng(1)
    for length in (MAX_LEN,) if model.config.needs_fixed_length else (MAX_LEN, 7):
        x = rng.standard_normal((3, length, 3)).astype(np.float32)
        session = ort.InferenceSession(str(unmasked), providers=["CPUExecutionProvider"])
        out = session.run(None, {"x": x})[0]  # onnxruntime alone, x the only feed
        assert_matches(out, run_onnx(masked, x))  # the masked graph with an all-False mask
    with pytest.raises(SBTSError, match="takes no padding mask"):
        run_onnx(unmasked, x, np.zeros(x.shape[:2], dtype=bool))


def test_over_long_input_is_refused_before_onnxruntime_runs(exported, monkeypatch):
    model, path = exported

    def not_reached(*args, **kwargs):
        raise AssertionError("onnxruntime was given the over-long input")

    monkeypatch.setattr(ort.InferenceSession, "run", not_reached)
    expected = f"{path}: the input has {MAX_LEN + 1} time steps; the model takes at most max_len={MAX_LEN}"
    with pytest.raises(DataError, match=f"^{re.escape(expected)}$"):
        run_onnx(path, np.zeros((2, MAX_LEN + 1, 3)))


def test_length_other_than_a_fixed_time_axis_is_refused(tmp_path):
    path = export_onnx(randomised_model("sbt", attention="full", norm="batch"), tmp_path / "m.onnx", length=8)
    with pytest.raises(DataError, match=r"the input has 10 time steps; this graph takes exactly 8$"):
        run_onnx(path, np.zeros((1, 10, 3)))
    with pytest.raises(DataError, match=r"x must be \(batch, time, channels\), got shape \(8, 3\)"):
        run_onnx(path, np.zeros((8, 3)))


def test_file_without_metadata_still_runs(exported, tmp_path):
    """Files written before sbts recorded its metadata have no limit to check against, and run as before."""
    model, path = exported
    bare = onnx.load(str(path))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    x = np.random.default_rng(3).standard_normal((2, MAX_LEN, 3)).astype(np.float32)
    assert_matches(run_onnx(tmp_path / "bare.onnx", x), torch_output(model, x))
