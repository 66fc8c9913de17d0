"""The generated C99 network equals the numpy runtime, for every attention, norm and positional scheme, dense
and sparse-binary; it compiles cleanly under -std=c99 -Wall -Wextra -Werror -pedantic."""

from __future__ import annotations

import ctypes
import itertools
import shutil
import subprocess

import numpy as np
import pytest
from conftest import randomise

from sbts.config import ATTENTION_MODES, NORMS, POS_ENCODINGS
from sbts.export.artifact import build_artifact
from sbts.export.c_source import c_network_source
from sbts.models import create_model
from sbts.runtime.artifact import artifact_bytes, load_artifact_bytes, network_tensors
from sbts.runtime.network import forward

COMPILER = shutil.which("gcc") or shutil.which("cc") or shutil.which("clang")
pytestmark = pytest.mark.skipif(COMPILER is None, reason="no C compiler found (gcc, cc or clang)")
FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-shared", "-fPIC"]
SMALL = dict(in_channels=3, out_dim=2, max_len=7, d_model=8, n_heads=2, n_layers=2, d_ff=12)
COMBOS = [(model, attention, norm, pos) for model, attention, norm, pos in
          itertools.product(("sbt", "dense"), ATTENTION_MODES, NORMS, POS_ENCODINGS)]


def compiled(tmp_path, model):
    artifact = load_artifact_bytes(artifact_bytes(*build_artifact(model, task="classification",
                                                                  inference_state={"classes": ["a", "b"]})), "m")
    header, source, sizes = c_network_source(artifact)
    (tmp_path / "sbts.h").write_text(header)
    (tmp_path / "sbts.c").write_text(source)
    library = tmp_path / "libsbts.so"
    done = subprocess.run([COMPILER, *FLAGS, "-o", str(library), str(tmp_path / "sbts.c"), "-lm"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[:2000]
    lib = ctypes.CDLL(str(library))
    lib.sbts_forward.argtypes = [ctypes.POINTER(ctypes.c_float), ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
    return artifact, lib, sizes


def run_c(lib, x: np.ndarray, out_dim: int) -> tuple[int, np.ndarray]:
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.zeros((len(x), out_dim), np.float32)
    code = lib.sbts_forward(x.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), len(x),
                            out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
    return code, out


@pytest.mark.parametrize("model_name,attention,norm,pos", COMBOS, ids=lambda v: str(v))
def test_c_network_equals_the_numpy_runtime(tmp_path, model_name, attention, norm, pos):
    model = randomise(create_model(model_name, **SMALL, attention=attention, norm=norm, pos_encoding=pos,
                                   linear_bias=model_name == "dense"))
    artifact, lib, sizes = compiled(tmp_path, model)
    config, tensors = artifact.config, network_tensors(artifact)
    rng = np.random.default_rng(0)
    lengths = [config.max_len] + ([] if config.needs_fixed_length else [1, 4])
    for length in lengths:
        x = rng.standard_normal((length, config.in_channels)).astype(np.float32)
        code, out = run_c(lib, x, config.out_dim)
        assert code == 0
        np.testing.assert_allclose(out, forward(config, tensors, x[None])[0], rtol=1e-5, atol=1e-5)
    assert sizes["weight_bytes"] > 0


def test_bad_lengths_and_non_finite_inputs_are_error_codes(tmp_path):
    model = randomise(create_model("sbt", **SMALL, attention="step_t", norm="layer_time"))
    artifact, lib, _ = compiled(tmp_path, model)
    x = np.zeros((7, 3), np.float32)
    assert run_c(lib, x[:5], 2)[0] == 1  # this model takes exactly max_len steps
    assert run_c(lib, np.zeros((0, 3), np.float32), 2)[0] == 1
    x[3, 1] = np.nan
    code, out = run_c(lib, x, 2)
    assert code == 2 and not out.any()  # nothing written
    x[3, 1] = np.inf
    assert run_c(lib, x, 2)[0] == 2


def test_ternary_weights_take_two_bits(tmp_path):
    """2 bits per weight and one float alpha per linear, against 32 bits per dense weight."""
    sbt = compiled(tmp_path, randomise(create_model("sbt", **SMALL)))[2]["linear_weight_bytes"]
    dense = compiled(tmp_path, randomise(create_model("dense", **SMALL)))[2]["linear_weight_bytes"]
    positions = sum(w.size for name, w in network_tensors(load_artifact_bytes(artifact_bytes(*build_artifact(
        create_model("dense", **SMALL).eval(), task="anomaly")), "d")).items() if name.endswith(".weight")
        and "norm" not in name)
    assert dense == 4 * positions and sbt < positions / 4 + 4 * 16  # 16 linears' alphas, rounding up
    assert dense / sbt > 12


HARNESS = r"""
#include <stdio.h>
#include "sbts.h"

int main(void)
{
    static float x[SBTS_MAX_LEN * SBTS_IN_CHANNELS], out[SBTS_MAX_LEN * SBTS_OUT_DIM];
    int n, i, code;
    if (scanf("%d", &n) != 1 || n < 0 || n > SBTS_MAX_LEN) return 3;
    for (i = 0; i < n * SBTS_IN_CHANNELS; ++i) if (scanf("%f", &x[i]) != 1) return 3;
    code = sbts_forward(x, n, out);
    for (i = 0; code == 0 && i < n * SBTS_OUT_DIM; ++i) printf("%.9g\n", out[i]);
    return code;
}
"""


@pytest.mark.parametrize("fields", [dict(model_name="sbt", attention="step_t", norm="layer", pos_encoding="rope"),
                                    dict(model_name="dense", attention="qkv_mask", norm="batch",
                                         pos_encoding="learnable")], ids=["sbt-stream", "dense-qkv"])
def test_the_c_network_is_clean_under_address_and_undefined_behaviour_sanitizers(tmp_path, fields):
    fields = dict(fields)
    model = randomise(create_model(fields.pop("model_name"), **SMALL, **fields))
    artifact = load_artifact_bytes(artifact_bytes(*build_artifact(model, task="anomaly")), "m")
    header, source, _ = c_network_source(artifact)
    (tmp_path / "sbts.h").write_text(header)
    (tmp_path / "sbts.c").write_text(source)
    (tmp_path / "main.c").write_text(HARNESS)
    program = tmp_path / "harness"
    built = subprocess.run([COMPILER, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g",
                            "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-o", str(program),
                            str(tmp_path / "sbts.c"), str(tmp_path / "main.c"), "-lm"], capture_output=True, text=True)
    if built.returncode != 0 and "sanitize" in built.stderr:
        pytest.skip(f"the compiler has no sanitizer runtime here: {built.stderr.splitlines()[0]}")
    assert built.returncode == 0, built.stderr[:2000]
    x = np.random.default_rng(3).standard_normal((7, 3)).astype(np.float32)
    text = "7\n" + "\n".join(f"{v:.9g}" for v in x.reshape(-1)) + "\n"
    ran = subprocess.run([str(program)], input=text, capture_output=True, text=True)
    assert ran.returncode == 0 and ran.stderr == "", ran.stderr[:2000]
    expected = forward(artifact.config, network_tensors(artifact), x[None])[0]
    np.testing.assert_allclose(np.array(ran.stdout.split(), dtype=np.float32).reshape(expected.shape), expected,
                               rtol=1e-5, atol=1e-5)
