"""The README's examples must stay true: its Python API block runs, its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from conftest import synthetic_cases

from sbts.cli.main import build_parser

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_python_api_block_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the block writes model.sbts
    block = next(b for b in code_blocks("python") if "SBTClassifier" in b)
    train, train_labels = synthetic_cases(30, min_len=16, max_len=16, seed=5)
    test, test_labels = synthetic_cases(12, min_len=16, max_len=16, seed=6)
    namespace = {"X_train": np.stack(train), "y_train": np.array(train_labels),
                 "X_test": np.stack(test), "y_test": np.array(test_labels)}
    exec(compile(block.replace("epochs=100", "epochs=2"), "README.md", "exec"), namespace)
    assert namespace["clf"].density == 0.25  # the block ends by set_params(density=0.25)
    assert namespace["config"].d_model == 32 and namespace["config"].attention == "qkv_mask"
    assert (tmp_path / "model.sbts").is_file()


def test_readme_commands_parse():
    parser = build_parser()
    commands = [part.split() for block in code_blocks("bash") for line in block.splitlines()
                for part in line.split("#")[0].split("|") if part.strip().startswith("sbts ")]  # piped ones too
    assert len(commands) >= 4 and any("--stream" in argv for argv in commands)
    for argv in commands:
        parser.parse_args(argv[1:])  # argparse exits (SystemExit) on an unknown flag


def test_readme_starts_with_the_two_commands():
    first_block = code_blocks("bash")[0].splitlines()
    assert first_block[0].startswith("make ") or first_block[0].strip().startswith("make")
    assert first_block[1].startswith("make test")


def test_runtime_block_runs(tmp_path, monkeypatch):
    from sbts.tasks.classification import SBTClassifier

    block = next(b for b in code_blocks("python") if "sbts.runtime" in b)
    train, labels = synthetic_cases(24, seed=3)
    clf = SBTClassifier(d_model=16, epochs=1, random_state=0).fit(train, labels)
    monkeypatch.chdir(tmp_path)
    clf.export("jv.sbts")
    namespace = {"series": train[:5]}
    exec(compile(block, "README.md", "exec"), namespace)
    assert list(namespace["model"].predict(train[:5])) == list(clf.predict(train[:5]))


def test_anomaly_api_block_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the block writes detector.sbts
    block = next(b for b in code_blocks("python") if "SBTAnomalyDetector" in b)
    rng = np.random.default_rng(0)
    t = np.arange(6600)
    series = np.sin(2 * np.pi * t[:, None] / 30 + np.arange(3)) + 0.05 * rng.standard_normal((len(t), 3))
    namespace = {"X_train": series[:6000], "X_test": series[6000:]}
    exec(compile(block.replace("epochs=5", "epochs=1").replace("window=50", "window=16"), "README.md", "exec"),
         namespace)
    assert namespace["scores"].shape == (600,) and namespace["flags"].shape == (600,)
    np.testing.assert_allclose(namespace["errors"].mean(axis=1), namespace["scores"], rtol=1e-12)
    assert np.isclose(namespace["first"], namespace["scores"][0], rtol=1e-5)
    assert (tmp_path / "detector.sbts").is_file()


def test_forecasting_api_block_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the block writes forecaster.sbts
    block = next(b for b in code_blocks("python") if "SBTForecaster" in b)
    rng = np.random.default_rng(1)
    t = np.arange(900)
    series = 5 + np.sin(2 * np.pi * t[:, None] / 24 + np.arange(2)) + 0.05 * rng.standard_normal((len(t), 2))
    namespace = {"y_train": series[:700], "y_history": series[:750], "y_test": series[700:]}
    exec(compile(block.replace("epochs=5", "epochs=1").replace("window=96", "window=16"), "README.md", "exec"),
         namespace)
    assert namespace["ahead"].shape == (24, 2) and namespace["picked"].shape == (3, 2)
    np.testing.assert_array_equal(namespace["picked"], namespace["forecaster"].predict(24, y=series[:750])[[0, 11, 23]])
    assert namespace["every"].shape == (200, 24, 2)
    assert (tmp_path / "forecaster.sbts").is_file()


def test_readme_c_examples_compile_and_run_against_exports(tmp_path):
    """The microcontroller section's C: the classifier program against a classifier export (run), the
    streaming function against a streamable detector's export (compiled), the forecaster's stream against a
    forecaster's export 3 steps ahead (run, and equal to the runtime's stream)."""
    from conftest import randomise

    from sbts.export.artifact import build_artifact
    from sbts.export.c_build import STRICT_FLAGS, find_compiler, write_c_export
    from sbts.models import create_model
    from sbts.runtime.artifact import artifact_bytes, load_artifact_bytes

    compiler = find_compiler()
    if compiler is None:
        import pytest
        pytest.skip("no C compiler found")
    import subprocess

    program, stream, forecast = code_blocks("c")[:3]
    small = dict(in_channels=3, max_len=8, d_model=8, n_heads=2, n_layers=1, d_ff=16)
    exports = {
        "classifier": (create_model("sbt", **small, out_dim=2), "classification", {"classes": ["calm", "busy"]}),
        "detector": (create_model("sbt", **small, out_dim=3, attention="step_t", pos_encoding="rope", norm="layer"),
                     "anomaly", {"threshold": {"value": 1.0, "method": "given"}}),
    }
    for name, (model, task, state) in exports.items():
        artifact = load_artifact_bytes(artifact_bytes(*build_artifact(randomise(model), task=task,
                                                                      inference_state=state)), name)
        write_c_export(artifact, tmp_path / name)
    (tmp_path / "main.c").write_text(program)
    (tmp_path / "stream.c").write_text(stream)
    built = subprocess.run([compiler, *STRICT_FLAGS, "-O2", "-I", str(tmp_path / "classifier"), "-o",
                            str(tmp_path / "classify"), str(tmp_path / "main.c"), str(tmp_path / "classifier" / "sbts.c"),
                            "-lm"], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    ran = subprocess.run([str(tmp_path / "classify")], capture_output=True, text=True)
    assert ran.returncode == 0 and ran.stdout.strip() in ("class calm", "class busy")
    built = subprocess.run([compiler, *STRICT_FLAGS, "-O2", "-c", "-I", str(tmp_path / "detector"), "-o",
                            str(tmp_path / "stream.o"), str(tmp_path / "stream.c")], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr

    import numpy as np

    from sbts.runtime.model import ForecastRuntime

    horizon, rows = 3, np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    forecaster = create_model("sbt", **small, out_dim=3 * horizon, attention="step_t", pos_encoding="rope",
                              norm="layer", head_activation="none")
    artifact = load_artifact_bytes(artifact_bytes(*build_artifact(randomise(forecaster), task="forecasting",
        inference_state={"formulation": {"target": "change", "input_norm": "none", "horizon": horizon},
                         "columns": ["a", "b", "c"]})), "forecaster")
    write_c_export(artifact, tmp_path / "forecaster")
    readings = ", ".join("{" + ", ".join(f"{v:.9g}f" for v in row) + "}" for row in rows)
    (tmp_path / "forecast.c").write_text(forecast + f"""
int main(void)
{{
    static const float rows[{len(rows)}][SBTS_IN_CHANNELS] = {{{readings}}};
    int t;
    sbts_init();
    for (t = 0; t < {len(rows)}; ++t) if (on_reading_forecast(rows[t]) != 0) return 1;
    return 0;
}}
""")
    built = subprocess.run([compiler, *STRICT_FLAGS, "-O2", "-I", str(tmp_path / "forecaster"), "-o",
                            str(tmp_path / "forecast"), str(tmp_path / "forecast.c"),
                            str(tmp_path / "forecaster" / "sbts.c"), "-lm"], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    ran = subprocess.run([str(tmp_path / "forecast")], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    printed = [line.split() for line in ran.stdout.splitlines()]
    assert [name for name, _ in printed] == ["a", "b", "c"] * len(rows)
    expected = ForecastRuntime(artifact).stream().update_many(rows)[:, -1]  # the last step ahead of each reading
    np.testing.assert_allclose(np.array([float(v) for _, v in printed]).reshape(len(rows), 3), expected,
                               rtol=1e-5, atol=1e-5)


def test_onnx_block_runs_with_onnxruntime_alone(tmp_path, monkeypatch):
    """The ONNX block, on a classifier exported with its task facts, gives the sbts runtime's logits and classes."""
    import pytest

    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from conftest import randomise

    from sbts.data.preprocessing import ChannelScaler
    from sbts.export.artifact import export_model
    from sbts.export.onnx import export_onnx
    from sbts.models import create_model
    from sbts.runtime import load

    block = next(b for b in code_blocks("python") if "import onnxruntime" in b)
    model = randomise(create_model("sbt", in_channels=3, out_dim=3, max_len=16, d_model=16, n_heads=2, n_layers=1,
                                   d_ff=32))
    cases = [3 * case + 7 for case in synthetic_cases(6, min_len=16, max_len=16, seed=7)[0]]  # far from scaled
    facts = {"task": "classification", "inference_state": {"classes": ["calm", "busy", "wild"]},
             "scaler": ChannelScaler().fit(cases)}
    monkeypatch.chdir(tmp_path)
    export_onnx(model, "jv.onnx", **facts)
    runtime = load(export_model(model, "jv.sbts", **facts).path)
    namespace = {"cases": np.stack(cases).transpose(0, 2, 1)}  # (n, channels, time) -> (n, time, channels)
    exec(compile(block, "README.md", "exec"), namespace)
    np.testing.assert_allclose(namespace["logits"], runtime.decision_function(cases), rtol=1e-5, atol=1e-5)
    assert namespace["predicted"] == list(runtime.predict(cases))
