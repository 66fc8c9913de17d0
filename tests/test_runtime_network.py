"""The numpy runtime's forward pass against the torch model in eval mode, its MAC counts, and that it
never imports torch."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import randomise

import sbts
from sbts.config import LINEAR_KINDS, NORMS, POS_ENCODINGS
from sbts.models import TimeSeriesTransformer
from sbts.runtime.network import MacCounter, forward

SMALL = dict(in_channels=3, out_dim=4, max_len=7, d_model=16, n_heads=2, n_layers=2, d_ff=32)
ATTENTIONS = [("full", False), ("step_t", False), ("step_t", True), ("qkv_mask", False)]
# Every attention mode x norm x positional encoding; the linear kind and the two bias options cycle
# (periods 2, 4 and 8) so that each of their values meets every attention mode.
CASES = [
    dict(attention=attention, step_t_self=step_t_self, norm=norm, pos_encoding=pos_encoding,
         linear=LINEAR_KINDS[i % 2], linear_bias=i // 2 % 2 == 0, attention_bias=i // 4 % 2 == 0)
    for i, ((attention, step_t_self), norm, pos_encoding) in enumerate(itertools.product(ATTENTIONS, NORMS,
                                                                                         POS_ENCODINGS))
]


def case_id(case: dict) -> str:
    attention = "step_t_self" if case["step_t_self"] else case["attention"]
    biases = f"lb{int(case['linear_bias'])}ab{int(case['attention_bias'])}"
    return "-".join([case["linear"], attention, case["norm"], case["pos_encoding"], biases])


def build(**overrides) -> TimeSeriesTransformer:
    """A small eval-mode model with random scores, norm parameters and statistics and learnable positions."""
    config = {**SMALL, "linear": "sparse_binary", **overrides}
    return randomise(sbts.create_model("sbt" if config["linear"] == "sparse_binary" else "dense", **config))


def runtime_tensors(model: TimeSeriesTransformer) -> dict[str, np.ndarray]:
    """The named float32 arrays the runtime reads, taken from a torch model."""
    linears = model.linear_layers()
    tensors = {}
    for name, layer in linears.items():
        # sparse-binary layers hold W and scores; the runtime takes their ternary product alpha * sign(W) * M
        weight = layer.effective_weight() if hasattr(layer, "effective_weight") else layer.weight
        tensors[f"{name}.weight"] = weight
        if layer.bias is not None:
            tensors[f"{name}.bias"] = layer.bias
    # Norms, Q/K/V masks and the positional table; the linears' own tensors (W, scores) are covered above.
    for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
        owner, leaf = name.rsplit(".", 1)
        if owner not in linears and leaf != "num_batches_tracked":
            tensors[name] = tensor
    return {name: tensor.detach().numpy().astype(np.float32) for name, tensor in tensors.items()}


def torch_output(model: TimeSeriesTransformer, x: np.ndarray, padding_mask: np.ndarray | None = None) -> np.ndarray:
    with torch.no_grad():
        mask = None if padding_mask is None else torch.from_numpy(padding_mask)
        return model(torch.from_numpy(x), mask).numpy()


def random_input(batch: int = 3, steps: int = SMALL["max_len"], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, steps, SMALL["in_channels"])).astype(np.float32)


def assert_matches(out: np.ndarray, ref: np.ndarray) -> None:
    assert out.dtype == np.float32 and out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


# --------------------------------------------------------------------------------------------
# Same numbers as the torch model
# --------------------------------------------------------------------------------------------

def test_cases_cover_every_option_value_in_every_attention_mode():
    for option, values in [("linear", LINEAR_KINDS), ("linear_bias", (True, False)),
                           ("attention_bias", (True, False))]:
        for attention in ATTENTIONS:
            seen = {case[option] for case in CASES if (case["attention"], case["step_t_self"]) == attention}
            assert seen == set(values), (option, attention)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_matches_torch(case):
    model = build(**case)
    x = random_input()
    ref = torch_output(model, x)
    tensors = runtime_tensors(model)
    assert_matches(forward(model.config, tensors, x), ref)
    assert_matches(forward(model.config, tensors, x, last_step_only=True), ref[:, -1:])


@pytest.mark.parametrize("linear,attention,norm", list(itertools.product(LINEAR_KINDS, ["full", "qkv_mask"],
                                                                         ["batch", "none"])))
def test_padded_batch_matches_torch(linear, attention, norm):
    model = build(linear=linear, attention=attention, norm=norm, linear_bias=True)
    lengths = np.array([7, 4, 2, 5])
    x = random_input(batch=len(lengths))  # padded steps hold noise: they must not leak into valid ones
    padding_mask = np.arange(SMALL["max_len"])[None, :] >= lengths[:, None]
    ref = torch_output(model, x, padding_mask)
    tensors = runtime_tensors(model)
    assert_matches(forward(model.config, tensors, x, padding_mask), ref)
    assert_matches(forward(model.config, tensors, x, padding_mask, last_step_only=True), ref[:, -1:])


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_fully_padded_sample_matches_torch(norm):
    model = build(norm=norm)
    x = random_input(batch=2)
    padding_mask = np.zeros(x.shape[:2], dtype=bool)
    padding_mask[1] = True  # nothing to attend to: torch's SDPA gives zero attention, not NaN
    out = forward(model.config, runtime_tensors(model), x, padding_mask)
    assert np.isfinite(out).all()
    assert_matches(out, torch_output(model, x, padding_mask))


def test_shorter_input_than_max_len_matches_torch():
    model = build(attention="qkv_mask", pos_encoding="learnable")
    x = random_input(steps=4)
    assert_matches(forward(model.config, runtime_tensors(model), x), torch_output(model, x))


# --------------------------------------------------------------------------------------------
# MAC counts of what is executed
# --------------------------------------------------------------------------------------------

def count_macs(model: TimeSeriesTransformer, x: np.ndarray, **kwargs) -> int:
    counter = MacCounter()
    forward(model.config, runtime_tensors(model), x, counter=counter, **kwargs)
    return counter.total


@pytest.mark.parametrize("last_step_only", [False, True])
def test_mac_counts(last_step_only):
    b, t, c, d, f, o = 2, SMALL["max_len"], SMALL["in_channels"], SMALL["d_model"], SMALL["d_ff"], SMALL["out_dim"]
    assert SMALL["n_layers"] == 2
    x = random_input(batch=b)

    def layer_macs(query_rows: int, key_rows: int, value_rows: int, output_rows: int) -> int:
        """One encoder layer; rows are per sample. output_rows run out_proj and the FFN."""
        projections = b * d * d * (query_rows + key_rows + value_rows + output_rows)  # q, k, v, out_proj
        attention = 2 * b * query_rows * key_rows * d  # scores and weighted sums: per head Tq * Tk * dh, dh * h = d
        return projections + attention + 2 * b * output_rows * d * f

    embedding_and_head = b * t * c * d + b * (1 if last_step_only else t) * d * o
    # full: Q, K, V over all t rows; a last layer reduced to the last row has one query and one output row
    full_layer = layer_macs(t, t, t, t)
    full = embedding_and_head + full_layer + (layer_macs(1, t, t, 1) if last_step_only else full_layer)
    # step_t: Q for the last row, K for the t-1 past rows, V for all rows (past rows output their own V);
    # a reduced last layer needs V of the past rows only
    step_t_layer = layer_macs(1, t - 1, t, t)
    step_t = embedding_and_head + step_t_layer + (layer_macs(1, t - 1, t - 1, 1) if last_step_only else step_t_layer)

    full_macs = count_macs(build(attention="full"), x, last_step_only=last_step_only)
    step_t_macs = count_macs(build(attention="step_t"), x, last_step_only=last_step_only)
    assert full_macs == full
    assert step_t_macs == step_t
    assert step_t_macs < full_macs


def test_layer_time_last_step_only_still_computes_every_row():
    model = build(attention="step_t", norm="layer_time")
    x = random_input()
    every_step, last_step = count_macs(model, x), count_macs(model, x, last_step_only=True)
    head = SMALL["d_model"] * SMALL["out_dim"] * x.shape[0]
    assert every_step - last_step == head * (SMALL["max_len"] - 1)  # only the head shrinks


# --------------------------------------------------------------------------------------------
# Inputs the torch model rejects, and no torch
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides,x,padded,message", [
    ({}, random_input()[..., :2], False, "expected input of shape"),
    ({}, random_input()[0], False, "expected input of shape"),
    ({}, random_input(steps=SMALL["max_len"] + 1), False, "max_len"),
    ({"attention": "step_t"}, random_input(), True, "step_t attention takes fixed-length windows"),
    ({"attention": "step_t"}, random_input(steps=1), False, "at least 2 steps"),
    ({"norm": "layer_time"}, random_input(), True, "cannot take padded input"),
    ({"norm": "layer_time"}, random_input(steps=5), False, "exactly 7 steps"),
])
def test_rejected_inputs(overrides, x, padded, message):
    model = build(**overrides)
    padding_mask = np.zeros(x.shape[:2], dtype=bool) if padded else None
    with pytest.raises(ValueError, match=message):
        forward(model.config, runtime_tensors(model), x, padding_mask)
    with pytest.raises(ValueError):  # the torch model rejects it too
        torch_output(model, x, padding_mask)


def test_padding_mask_of_the_wrong_shape_is_rejected():
    model = build()
    with pytest.raises(ValueError, match="padding mask of shape"):
        forward(model.config, runtime_tensors(model), random_input(), np.zeros((3, 5), dtype=bool))


def test_missing_tensor_is_named():
    model = build()
    tensors = runtime_tensors(model)
    del tensors["layers.1.ff2.weight"]
    with pytest.raises(ValueError, match="layers.1.ff2.weight"):
        forward(model.config, tensors, random_input())


def test_runtime_does_not_import_torch():
    code = "import sys, sbts.runtime.network; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
