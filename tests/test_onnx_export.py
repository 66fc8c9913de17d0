"""ONNX export: onnxruntime reproduces the torch model, sparse-binary linears become constant ternary weights."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from conftest import randomise

from sbts.errors import SBTSError
from sbts.export.onnx import export_onnx, run_onnx
from sbts.layers import SparseBinaryLinear
from sbts.models import create_model

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

MAX_LEN = 12
CASES = {
    "sbt-qkv_mask-batch-sinusoidal": ("sbt", {"attention": "qkv_mask", "norm": "batch"}),
    "dense-full-batch-learnable-bias": ("dense", {"attention": "full", "norm": "batch", "linear_bias": True}),
    "sbt-step_t-none": ("sbt", {"attention": "step_t", "norm": "none"}),
    "dense-full-layer_time": ("dense", {"attention": "full", "norm": "layer_time"}),
    "sbt-step_t-layer_time": ("sbt", {"attention": "step_t", "norm": "layer_time"}),
}


def randomised_model(name: str, **kwargs):
    """A small eval-mode model whose scores and norms are random, so that no layer is trivially neutral."""
    return randomise(create_model(name, in_channels=3, out_dim=4, max_len=MAX_LEN, d_model=16, n_heads=2,
                                  n_layers=2, d_ff=32, **kwargs))


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
    with pytest.raises(SBTSError, match="not a padding mask"):
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
