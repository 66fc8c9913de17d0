"""The generated C equals the numpy runtime for every task and model kind, in both weight forms, and forecasters
one and several steps ahead; streams equal batch; bad lengths and non-finite inputs are error codes; the code is
clean under strict warnings and the address and undefined-behaviour sanitizers."""

from __future__ import annotations

import ctypes
import itertools
import subprocess

import numpy as np
import pytest
from conftest import randomise

from sbts.config import ATTENTION_MODES, NORMS, POS_ENCODINGS
from sbts.data.preprocessing import ChannelScaler
from sbts.errors import ConfigError, SBTSError
from sbts.export.artifact import build_artifact
from sbts.export.c_build import CModel, STRICT_FLAGS, compile_library, find_compiler, write_c_export
from sbts.export.c_source import ROW_BLOCK, WEIGHT_FORMS, c_sources, seed_signs
from sbts.frozen_tensors import splitmix64
from sbts.models import create_model
from sbts.runtime import load
from sbts.runtime.artifact import artifact_bytes, load_artifact_bytes, network_tensors
from sbts.runtime.model import AnomalyRuntime, ClassifierRuntime, ForecastRuntime

COMPILER = find_compiler()
pytestmark = pytest.mark.skipif(COMPILER is None, reason="no C compiler found (gcc, cc or clang)")
SMALL = dict(in_channels=3, max_len=7, d_model=8, n_heads=2, n_layers=2, d_ff=12)
FORMS = sorted(WEIGHT_FORMS)
# Every attention x norm x positions for the SBT, the weight forms in turn; the dense model's float linears
# once per attention x norm, the positional schemes in turn.
NETWORKS = ([("sbt", *combo, FORMS[i % len(FORMS)])
             for i, combo in enumerate(itertools.product(ATTENTION_MODES, NORMS, POS_ENCODINGS))]
            + [("dense", attention, norm, POS_ENCODINGS[i % len(POS_ENCODINGS)], "lists")
               for i, (attention, norm) in enumerate(itertools.product(ATTENTION_MODES, NORMS))])
SCALER = ChannelScaler(np.array([0.5, -1.0, 2.0]), np.array([2.0, 0.5, 3.0]))
STATES = {"classification": {"classes": ["yes", "no \"quoted\""]},
          "anomaly": {"threshold": {"value": 0.8, "method": "given"}},
          "forecasting": {"formulation": {"target": "change", "input_norm": "none"}, "columns": ["a", "b", "c"]}}


HORIZON = 3  # the steps ahead of the multi-step forecasters


def forecast_state(target="change", input_norm="none", horizon=1):
    """A forecaster's inference state, its horizon recorded (STATES' has none, as files written before horizons:
    one step)."""
    return dict(STATES["forecasting"], formulation={"target": target, "input_norm": input_norm, "horizon": horizon})


def artifact_for(task, model_name="sbt", state=None, **fields):
    """A small random model of the task; a forecaster's out_dim is its horizon x 3 variables (unless given)."""
    horizon = (state or STATES[task]).get("formulation", {}).get("horizon", 1)
    out_dim = 2 if task == "classification" else 3 * horizon if task == "forecasting" else 3
    model = randomise(create_model(model_name, **{**SMALL, "out_dim": out_dim, "linear_bias": model_name == "dense",
                                                  **fields}))
    document = build_artifact(model, task=task, inference_state=state or STATES[task], scaler=SCALER)
    return load_artifact_bytes(artifact_bytes(*document), "model")


def header_define(header, name):
    return int(header.split(f"#define {name} ")[1].split()[0])


def c_model(tmp_path, artifact, form="lists"):
    generated = c_sources(artifact, form)
    out_dim = header_define(generated.header, "SBTS_OUT_DIM")
    return CModel(compile_library(generated, tmp_path), artifact.config.in_channels, out_dim)


def raw_rows(n, seed=0):
    return SCALER.inverse_transform_rows(np.random.default_rng(seed).standard_normal((n, 3)))


@pytest.mark.parametrize("model_name,attention,norm,pos,form", NETWORKS, ids=str)
def test_c_classifier_equals_the_numpy_runtime(tmp_path, model_name, attention, norm, pos, form):
    artifact = artifact_for("classification", model_name, attention=attention, norm=norm, pos_encoding=pos)
    runtime, c = ClassifierRuntime(artifact), c_model(tmp_path, artifact, form)
    lengths = [7] if artifact.config.needs_fixed_length else [7, 4, 2] + ([1] if attention != "step_t" else [])
    assert all(length < ROW_BLOCK for length in lengths)  # the padded strides: every length leaves padding
    for n in lengths:
        case = raw_rows(n, n)
        status, logits = c.forward(case)
        assert status == 0
        np.testing.assert_allclose(logits, runtime.decision_function([case.T])[0], rtol=1e-5, atol=1e-5)


SERIES_NETWORKS = [("sbt", "step_t", "none", "rope"), ("sbt", "step_t", "layer", "rope"),
                   ("sbt", "step_t", "layer_time", "sinusoidal"), ("dense", "full", "batch", "learnable"),
                   ("sbt", "qkv_mask", "layer", "none"), ("dense", "step_t", "none", "none")]


@pytest.mark.parametrize("model_name,attention,norm,pos,form",
                         [(*network, form) for network in SERIES_NETWORKS for form in sorted(WEIGHT_FORMS)
                          if network[0] == "sbt" or form == "ternary"], ids=str)  # dense: no ternary weights
def test_c_detector_scores_decisions_and_stream_equal_the_runtime(tmp_path, model_name, attention, norm, pos, form):
    # The dense detectors read the last layer's features without the ReLU (every step's rows, in the C engine).
    artifact = artifact_for("anomaly", model_name, attention=attention, norm=norm, pos_encoding=pos,
                            head_activation="none" if model_name == "dense" else "relu")
    runtime, c = AnomalyRuntime(artifact), c_model(tmp_path, artifact, form)
    series = raw_rows(12)
    expected = runtime.decision_function(series)
    scores = np.array([c.forward(series[:t + 1])[1] for t in range(len(series))])
    np.testing.assert_allclose(scores[:, 0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(scores[:, 1], (expected > runtime.threshold).astype(np.float32))
    assert c.streamable == runtime.streamable
    if c.streamable:
        streamed = np.array([c.stream_update(row)[1] for row in series])
        np.testing.assert_allclose(streamed[:, 0], expected, rtol=1e-5, atol=1e-6)
        c.stream_reset()
        np.testing.assert_allclose(c.stream_update(series[3])[1][0], runtime.decision_function(series[3:4])[0],
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("horizon", [1, HORIZON])
@pytest.mark.parametrize("target,input_norm", [("change", "none"), ("value", "none"), ("change", "window")])
@pytest.mark.parametrize("model_name,attention,norm,pos", SERIES_NETWORKS[:4], ids=str)
def test_c_forecaster_and_its_stream_equal_the_runtime(tmp_path, model_name, attention, norm, pos, target,
                                                        input_norm, horizon):
    state = forecast_state(target, input_norm, horizon)
    # The forecasting default reads the last step's features without the ReLU; the paper's formulation keeps it.
    artifact = artifact_for("forecasting", model_name, state, attention=attention, norm=norm, pos_encoding=pos,
                            head_activation="relu" if target == "value" else "none")
    runtime, c = ForecastRuntime(artifact), c_model(tmp_path, artifact)
    assert runtime.horizon == horizon and c.out_dim == horizon * 3
    series = raw_rows(11)
    every = runtime.predict_every_step(series)  # row t: the forecasts made from the rows before t
    assert every.shape == (11, horizon, 3)
    for t in (1, 3, 6, 11):
        status, forecast = c.forward(series[:t])
        assert status == 0
        expected = runtime.predict(series[:t])
        assert expected.shape == (horizon, 3)
        np.testing.assert_allclose(forecast, expected.ravel(), rtol=1e-5, atol=1e-5)  # out[k * 3 + c]
        if t < len(series):
            np.testing.assert_allclose(forecast, every[t].ravel(), rtol=1e-5, atol=1e-5)
    assert c.streamable == runtime.streamable
    if c.streamable:
        stream = runtime.stream()
        for row in series:
            forecasts = stream.update(row)
            assert forecasts.shape == (horizon, 3)
            np.testing.assert_allclose(c.stream_update(row)[1], forecasts.ravel(), rtol=1e-5, atol=1e-5)
        c.stream_reset()
        many = runtime.stream().update_many(series[:5])
        assert many.shape == (5, horizon, 3)
        np.testing.assert_allclose(np.array([c.stream_update(row)[1] for row in series[:5]]),
                                   many.reshape(5, -1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kind", ["joint", "shared"])
@pytest.mark.parametrize("model_name,norm,input_norm,horizon", [("sbt", "layer_time", "window", 1),
                                                               ("sbt", "layer", "none", HORIZON),
                                                               ("dense", "batch", "window", HORIZON)], ids=str)
def test_c_forecaster_with_a_linear_path_equals_the_runtime(tmp_path, model_name, norm, input_norm, horizon, kind,
                                                            form):
    """The linear path (joint: the whole window, variable-major, to the forecasts; shared: each variable's steps to
    its own forecasts) adds the same numbers in C as in the runtime, for every weight form; a model with it does
    not stream (it reads every step at once)."""
    artifact = artifact_for("forecasting", model_name, forecast_state("change", input_norm, horizon),
                            attention="step_t", norm=norm, pos_encoding="rope", head_activation="none",
                            linear_path=kind)
    runtime, c = ForecastRuntime(artifact), c_model(tmp_path, artifact, form)
    assert not c.streamable and not runtime.streamable
    without = dict(runtime.tensors, **{"linear_path.weight": np.zeros_like(runtime.tensors["linear_path.weight"])})
    series = raw_rows(11)
    for t in (1, 6, 11):
        status, forecast = c.forward(series[:t])
        assert status == 0
        np.testing.assert_allclose(forecast, runtime.predict(series[:t]).ravel(), rtol=1e-5, atol=1e-5)
    runtime.tensors = without  # the path contributes: without it the forecasts differ
    assert not np.allclose(forecast, runtime.predict(series).ravel(), rtol=1e-3, atol=1e-3)


def test_c_export_refuses_a_linear_path_outside_forecasting():
    artifact = artifact_for("anomaly", attention="step_t", norm="none", linear_path="joint")
    with pytest.raises(ConfigError, match="an anomaly model with a linear path has no C head"):
        c_sources(artifact)


def test_a_multi_step_forecaster_header_gives_its_horizon_and_names_each_variable_once(tmp_path):
    artifact = artifact_for("forecasting", state=forecast_state(horizon=HORIZON), attention="step_t", norm="layer",
                            pos_encoding="rope")
    header = c_sources(artifact).header
    assert header_define(header, "SBTS_HORIZON") == HORIZON
    assert header_define(header, "SBTS_OUT_DIM") == HORIZON * 3 and header_define(header, "SBTS_IN_CHANNELS") == 3
    assert "extern const char *const sbts_column_names[SBTS_IN_CHANNELS];" in header
    assert "out[k * SBTS_IN_CHANNELS + c] is variable c" in " ".join(header.split())
    c = c_model(tmp_path / "h3", artifact)
    names = (ctypes.c_char_p * 3).in_dll(c.lib, "sbts_column_names")
    assert [name.decode() for name in names] == STATES["forecasting"]["columns"]
    one_step = c_sources(artifact_for("forecasting")).header  # STATES' formulation has no "horizon": one step
    assert header_define(one_step, "SBTS_HORIZON") == 1 and header_define(one_step, "SBTS_OUT_DIM") == 3
    assert "sbts_column_names[SBTS_IN_CHANNELS]" in one_step
    for task in ("classification", "anomaly"):
        assert "SBTS_HORIZON" not in c_sources(artifact_for(task)).header
    assert "sbts_class_names[SBTS_OUT_DIM]" in c_sources(artifact_for("classification")).header


@pytest.mark.parametrize("horizon,out_dim", [(HORIZON, 3), (1, 3 * HORIZON), (HORIZON, 3 * HORIZON + 1)])
def test_the_c_export_refuses_a_forecaster_whose_outputs_disagree_with_its_horizon(tmp_path, horizon, out_dim):
    artifact = artifact_for("forecasting", state=forecast_state(horizon=horizon), out_dim=out_dim)
    with pytest.raises(SBTSError) as refused:
        c_sources(artifact)
    message = str(refused.value)
    assert "\n" not in message and f"{horizon} step(s) ahead needs {3 * horizon} outputs" in message
    assert message.endswith(f"the model has {out_dim}")
    with pytest.raises(SBTSError, match=f"needs {3 * horizon} outputs"):
        write_c_export(artifact, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("form", FORMS)
def test_windows_longer_than_one_block_of_steps(tmp_path, form):
    """Lengths below, at and past whole blocks of ROW_BLOCK steps (the padded strides of the engine)."""
    artifact = artifact_for("classification", max_len=2 * ROW_BLOCK + 3, attention="full", norm="layer",
                            pos_encoding="rope")
    runtime, c = ClassifierRuntime(artifact), c_model(tmp_path, artifact, form)
    for n in (ROW_BLOCK - 1, ROW_BLOCK, ROW_BLOCK + 1, 2 * ROW_BLOCK + 3):
        case = raw_rows(n, n)
        np.testing.assert_allclose(c.forward(case)[1], runtime.decision_function([case.T])[0], rtol=1e-5, atol=1e-5)


def test_the_c_splitmix64_is_bit_identical_to_frozen_tensors(tmp_path):
    c = c_model(tmp_path, artifact_for("anomaly"), "mask")
    seeds = [0, 1, 2**63 + 12345, 2**64 - 1, 0x9E3779B97F4A7C15]
    for seed in seeds:
        expected = splitmix64(seed, 0, 64)
        indices = list(range(64)) + [10**12]
        got = [c.lib.sbts_splitmix64(seed, i) for i in indices]
        assert got[:64] == [int(v) for v in expected]
        assert got[64] == int(splitmix64(seed, 10**12, 1)[0])


def test_both_weight_forms_give_the_same_numbers_and_the_mask_form_is_smaller(tmp_path):
    artifact = artifact_for("anomaly", attention="step_t", norm="layer", pos_encoding="rope", d_model=32, d_ff=64)
    outputs, sizes = {}, {}
    for form in WEIGHT_FORMS:
        c = c_model(tmp_path / form, artifact, form)
        outputs[form] = c.forward(raw_rows(7))[1]
        sizes[form] = c_sources(artifact, form).sizes["linear_weight_bytes"]
    np.testing.assert_array_equal(outputs["ternary"], outputs["mask"])  # the same sums in the same order
    np.testing.assert_allclose(outputs["lists"], outputs["ternary"], rtol=1e-6)  # + terms first, then -
    assert sizes["mask"] < sizes["ternary"] < sizes["lists"]  # at density 0.5: 1 bit < 2 bits < 8 bits x 0.5
    layers = artifact.document["layers"]
    for name in ("embedding", "layers.0.ff1"):  # the signs the engine regenerates are the weights' signs
        weight = network_tensors(artifact)[f"{name}.weight"]
        kept = weight != 0
        assert np.array_equal(seed_signs(int(layers[name]["seed"]), weight.size).reshape(weight.shape)[kept],
                              weight[kept] > 0)


def test_ternary_weights_take_two_bits_and_mask_weights_one():
    artifact = artifact_for("anomaly")
    positions = sum(w.size for name, w in network_tensors(artifact).items() if name.endswith(".weight")
                    and "norm" not in name)
    linears = 2 + 6 * SMALL["n_layers"]
    ternary = c_sources(artifact, "ternary").sizes["linear_weight_bytes"]
    mask = c_sources(artifact, "mask").sizes["linear_weight_bytes"]
    rows = SMALL["d_model"] * 4 * SMALL["n_layers"] + SMALL["d_ff"] * SMALL["n_layers"] + 2 * 8  # upper bound
    assert positions / 4 <= ternary - 4 * linears <= positions / 4 + rows
    assert positions / 8 <= mask - 12 * linears <= positions / 8 + rows


def test_bad_lengths_and_non_finite_inputs_are_error_codes(tmp_path):
    c = c_model(tmp_path / "cls", artifact_for("classification", norm="layer_time"))
    assert c.forward(raw_rows(5))[0] == 1  # this model takes exactly max_len steps
    assert c.forward(raw_rows(8))[0] == 1
    detector = c_model(tmp_path / "det", artifact_for("anomaly", attention="step_t", norm="none",
                                                      pos_encoding="rope"))
    assert detector.forward(np.zeros((0, 3)))[0] == 1
    for bad in (np.nan, np.inf, -np.inf, 3e38):  # 3e38 scales past float32's range
        rows = raw_rows(7)
        rows[3, 1] = bad
        status, out = detector.forward(rows)
        assert status == 2 and not out.any()
    series = raw_rows(5)
    first = [detector.stream_update(row)[1] for row in series[:2]]
    bad = series[2].copy()
    bad[0] = np.nan
    assert detector.stream_update(bad)[0] == 2  # refused; the stream goes on as if it never came
    rest = [detector.stream_update(row)[1] for row in series[2:]]
    detector.stream_reset()
    np.testing.assert_array_equal(np.array(first + rest), np.array([detector.stream_update(r)[1] for r in series]))


HARNESS = r"""
#include <stdio.h>
#include "sbts.h"

int main(void)
{
    static float x[SBTS_MAX_LEN * SBTS_IN_CHANNELS], out[SBTS_OUT_DIM];
    int n, i, code;
    sbts_init();
    if (scanf("%d", &n) != 1 || n < 0 || n > SBTS_MAX_LEN) return 3;
    for (i = 0; i < n * SBTS_IN_CHANNELS; ++i) if (scanf("%f", &x[i]) != 1) return 3;
    code = sbts_forward(x, n, out);
    for (i = 0; code == 0 && i < SBTS_OUT_DIM; ++i) printf("%.9g\n", out[i]);
#if SBTS_STREAMABLE
    for (i = 0; code == 0 && i < n; ++i) code = sbts_stream_update(x + i * SBTS_IN_CHANNELS, out);
    for (i = 0; code == 0 && i < SBTS_OUT_DIM; ++i) printf("%.9g\n", out[i]);
#endif
    return code;
}
"""


@pytest.mark.parametrize("task,fields,form", [
    ("anomaly", dict(model_name="sbt", attention="step_t", norm="layer", pos_encoding="rope"), "mask"),
    ("forecasting", dict(model_name="sbt", attention="step_t", norm="none", pos_encoding="rope"), "ternary"),
    ("forecasting", dict(model_name="sbt", attention="step_t", norm="layer", pos_encoding="rope",
                         state=forecast_state("value", horizon=HORIZON)), "mask"),
    ("forecasting", dict(model_name="sbt", attention="step_t", norm="layer_time", linear_path="joint",
                         state=forecast_state("change", "window", horizon=HORIZON)), "lists"),
    ("forecasting", dict(model_name="dense", attention="full", norm="batch", linear_path="shared",
                         state=forecast_state("change", "window", horizon=HORIZON)), "mask"),
    ("classification", dict(model_name="dense", attention="qkv_mask", norm="batch", pos_encoding="learnable"),
     "ternary")], ids=["detector-stream", "forecaster-stream", "forecaster-h3-stream", "forecaster-joint-path",
                       "forecaster-shared-path", "dense-qkv"])
@pytest.mark.parametrize("compiler", ["gcc", "clang"])
def test_the_c_engine_is_clean_under_strict_warnings_and_sanitizers(tmp_path, task, fields, form, compiler):
    import shutil
    path = shutil.which(compiler)
    if path is None:
        pytest.skip(f"{compiler} is not installed")
    fields = dict(fields)
    artifact = artifact_for(task, fields.pop("model_name"), fields.pop("state", None), **fields)
    generated = c_sources(artifact, form)
    (tmp_path / "sbts.h").write_text(generated.header)
    (tmp_path / "sbts.c").write_text(generated.source)
    (tmp_path / "main.c").write_text(HARNESS)
    program = tmp_path / "harness"
    built = subprocess.run([path, *STRICT_FLAGS, "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                            "-o", str(program), str(tmp_path / "sbts.c"), str(tmp_path / "main.c"), "-lm"],
                           capture_output=True, text=True)
    if built.returncode != 0 and "sanitize" in built.stderr:
        pytest.skip(f"{compiler} has no sanitizer runtime here: {built.stderr.splitlines()[0]}")
    assert built.returncode == 0, built.stderr[:2000]
    rows = raw_rows(7)
    text = "7\n" + "\n".join(f"{v:.9g}" for v in rows.astype(np.float32).reshape(-1)) + "\n"
    ran = subprocess.run([str(program)], input=text, capture_output=True, text=True)
    assert ran.returncode == 0 and ran.stderr == "", ran.stderr[:2000]
    c = c_model(tmp_path / "lib", artifact, form)
    printed = np.array(ran.stdout.split(), dtype=np.float32)
    assert len(printed) == c.out_dim * (1 + c.streamable)  # every out value, of the forward and of the stream
    np.testing.assert_allclose(printed[:c.out_dim], c.forward(rows)[1], rtol=1e-6, atol=1e-7)


def test_the_export_refuses_a_non_empty_directory_without_force_and_a_task_without_a_c_head(tmp_path):
    artifact = artifact_for("anomaly")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty; pass --force"):
        write_c_export(artifact, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["notes.txt"]
    result = write_c_export(artifact, tmp_path / "out", force=True)
    assert (tmp_path / "out" / "sbts.c").exists() and result.footprint["flash_bytes"] > result.sizes["constant_bytes"]
    other = load_artifact_bytes(artifact_bytes(*build_artifact(create_model("sbt", **SMALL, out_dim=1),
                                                               task="scalar_regression")), "m")
    with pytest.raises(ConfigError, match="task 'scalar_regression' has no C head"):
        write_c_export(other, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    with pytest.raises(ConfigError, match="C weights must be one of"):
        c_sources(artifact, "float16")
    (tmp_path / "a-file").write_text("mine")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        write_c_export(artifact, tmp_path / "a-file")
    assert (tmp_path / "a-file").read_text() == "mine"


@pytest.mark.parametrize("horizon", [1, HORIZON])
def test_an_exported_artifact_file_and_its_c_agree_on_real_scale_inputs(tmp_path, horizon):
    """The path a user takes: a .sbts file loaded by the runtime, and its C export."""
    artifact = artifact_for("forecasting", state=forecast_state(horizon=horizon), attention="step_t", norm="layer",
                            pos_encoding="rope")
    path = tmp_path / "m.sbts"
    path.write_bytes(artifact_bytes(artifact.document, artifact.tensors))
    runtime = load(path)
    c = c_model(tmp_path / "c", artifact)
    rows = raw_rows(30) * 1000.0 + 5e4  # far from the training scale: the C scaling must still match
    np.testing.assert_allclose(c.forward(rows)[1], runtime.predict(rows).ravel(), rtol=1e-5)
