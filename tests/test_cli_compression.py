"""``sbts summary``, ``sbts export`` and ``sbts predict``: happy paths, bad inputs, and no torch in predict."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_cases, write_ts
from test_cli import SMALL, assert_one_line_error, run_cli

from sbts.tasks.runs import preset_path

JV_SBT = preset_path("classification", "JapaneseVowels", "sbt")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A small trained classification run on synthetic data (unequal lengths, so padding is exercised)."""
    folder = tmp_path_factory.mktemp("data") / "Synth"
    folder.mkdir()
    classes = ["c0", "c1", "c2"]
    for split, n, seed in (("TRAIN", 40, 1), ("TEST", 20, 2)):
        write_ts(folder / f"Synth_{split}.ts", *synthetic_cases(n, seed=seed), classes)
    out = tmp_path_factory.mktemp("cli") / "run"
    assert run_cli("train", "classification", "--data", folder, "--model", "sbt", "--out", out, *SMALL) == 0
    return out, str(folder / "Synth")


def test_summary_config_json_has_the_documented_fields(capsys):
    assert run_cli("summary", "--config", JV_SBT, "--accounting", "paper", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert {"params", "bits", "flops"} <= set(report["dense"])
    assert {"params", "nonzero", "bits", "flops"} <= set(report["sbt"])
    assert {"storage", "flops"} <= set(report["ratio"])
    assert report["dense"]["bits"] == 2_416_928 and report["sbt"]["bits"] == 45_728
    assert report["accounting"] == "paper" and "official" in report["rules"]


def test_summary_table_is_labelled(capsys):
    assert run_cli("summary", "--config", JV_SBT, "--accounting", "honest", "--density", "0.25") == 0
    out = capsys.readouterr().out
    assert out.startswith("accounting: honest")
    assert "density 0.25, sparsity 0.75" in out and "artifact files:" in out and "theoretical" in out
    assert "layers.1.attention.q_proj" in out and "input_scaler" in out


def test_summary_of_a_run(trained_run, tmp_path, capsys):
    run_dir, _ = trained_run
    assert run_cli("summary", run_dir, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sbt"]["config"].startswith(f"run {run_dir}")
    assert report["dense"]["config"].startswith("derived")  # synthetic data: no paper partner
    # the honest summary's artifact size is the size of the file sbts export writes
    assert run_cli("summary", run_dir, "--accounting", "honest", "--json") == 0
    honest = json.loads(capsys.readouterr().out)
    assert run_cli("export", run_dir, "-o", tmp_path / "m.sbts") == 0
    assert honest["sbt"]["artifact_bytes"] == (tmp_path / "m.sbts").stat().st_size


def test_export_then_predict_matches_evaluate(trained_run, tmp_path, capsys):
    run_dir, data = trained_run
    artifact = tmp_path / "model.sbts"
    assert run_cli("export", run_dir, "-o", artifact) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["size_bytes"] == artifact.stat().st_size and exported["probe_max_relative_difference"] < 1e-5
    out_csv = tmp_path / "pred.csv"
    assert run_cli("predict", artifact, "--input", f"{data}_TEST.ts", "-o", out_csv, "--proba") == 0
    err = capsys.readouterr().err
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    accuracy = np.mean([row["prediction"] == row["label"] for row in rows])
    assert len(rows) == 20 and f"accuracy {accuracy:.4f}" in err
    probabilities = np.array([[float(v) for k, v in row.items() if k.startswith("p_")] for row in rows])
    assert np.allclose(probabilities.sum(1), 1.0, atol=1e-5)
    assert run_cli("evaluate", run_dir, "--device", "cpu") == 0
    assert json.loads(capsys.readouterr().out)["test"]["accuracy"] == pytest.approx(accuracy)
    quiet_csv = tmp_path / "quiet.csv"
    assert run_cli("predict", artifact, "--input", f"{data}_TEST.ts", "-o", quiet_csv, "--proba", "--quiet") == 0
    assert capsys.readouterr().err == "" and quiet_csv.read_bytes() == out_csv.read_bytes()


def test_export_onnx_and_float16(trained_run, tmp_path, capsys):
    pytest.importorskip("onnx")
    run_dir, _ = trained_run
    assert run_cli("export", run_dir, "-o", tmp_path / "m.onnx", "--format", "onnx") == 0
    assert json.loads(capsys.readouterr().out)["format"] == "onnx"
    assert run_cli("export", run_dir, "-o", tmp_path / "m16.sbts", "--float16") == 0
    assert json.loads(capsys.readouterr().out)["float_dtype"] == "float16"
    assert run_cli("export", run_dir, "-o", tmp_path / "x.onnx", "--format", "onnx", "--float16") == 2
    assert_one_line_error(capsys, "--float16")
    import onnx

    metadata = {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    assert metadata["sbts.task"] == "classification" and json.loads(metadata["sbts.classes"])
    assert run_cli("export", run_dir, "-o", tmp_path / "x.onnx", "--format", "onnx", "--no-padding-mask") == 0
    capsys.readouterr()
    assert [i.name for i in onnx.load(tmp_path / "x.onnx").graph.input] == ["x"]
    assert run_cli("export", run_dir, "-o", tmp_path / "y.sbts", "--no-padding-mask") == 2
    assert_one_line_error(capsys, "--no-padding-mask applies to --format onnx only")


def test_predict_does_not_import_torch(trained_run, tmp_path):
    run_dir, data = trained_run
    artifact = tmp_path / "model.sbts"
    assert run_cli("export", run_dir, "-o", artifact) == 0
    code = ("import sys; from sbts.cli.main import main; "
            f"rc = main(['predict', {str(artifact)!r}, '--input', {data + '_TEST.ts'!r}]); "
            "assert 'torch' not in sys.modules and 'sklearn' not in sys.modules, 'heavy import'; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("case,prediction,label")


@pytest.mark.parametrize("args,fragment", [
    (["summary"], "run directory or --config"),
    (["summary", "somewhere", "--config", "x.yaml"], "one of them"),
    (["summary", "--config", "missing.yaml"], "missing.yaml"),
    (["summary", "--config", str(JV_SBT), "--density", "1.5"], "density"),
    (["summary", "--config", str(JV_SBT), "--qkv-density", "0"], "qkv_density"),
    (["export", "no-such-run", "-o", "x.sbts"], "no-such-run"),
    (["predict", "no-such.sbts", "--input", "x.ts"], "no-such.sbts"),
])
def test_bad_arguments_are_one_line_errors(args, fragment, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_cli(*args) == 2
    assert_one_line_error(capsys, fragment)


@pytest.mark.parametrize("text,fragment", [
    ("task: regression\nmodel: {in_channels: 2, out_dim: 2, max_len: 8}\n", "task must be one of"),
    ("model: 5\n", "mapping"),
    ("model_name: [1]\nmodel: {in_channels: 2, out_dim: 2, max_len: 8}\n", "model_name"),
    ("data: 5\nmodel: {in_channels: 2, out_dim: 2, max_len: 8}\n", "data must be"),
    ("model: {in_channels: 2, out_dim: 2, max_len: 8, d_model: 15}\n", "d_model"),
])
def test_summary_bad_config(text, fragment, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    assert run_cli("summary", "--config", config) == 2
    assert_one_line_error(capsys, fragment)


def test_summary_density_with_a_run_is_refused(trained_run, capsys):
    assert run_cli("summary", trained_run[0], "--density", "0.25") == 2
    assert_one_line_error(capsys, "--density")


def test_predict_bad_inputs(trained_run, tmp_path, capsys):
    run_dir, data = trained_run
    artifact = tmp_path / "model.sbts"
    assert run_cli("export", run_dir, "-o", artifact) == 0
    capsys.readouterr()
    wrong_channels = tmp_path / "wrong.npy"
    np.save(wrong_channels, np.zeros((2, 5, 10)))
    cases = {
        "wrong channels": (wrong_channels, "channels"),
        "text file": (tmp_path / "x.csv", "unknown input type"),
        "object array": (tmp_path / "obj.npy", "obj.npy"),
        "too long": (tmp_path / "long.npy", "at most"),
        "no time steps": (tmp_path / "empty.npy", "no time steps"),
        "complex values": (tmp_path / "complex.npy", "real-valued"),
        "nan only": (tmp_path / "nan.npy", "nan.npy"),
    }
    np.save(tmp_path / "empty.npy", np.zeros((2, 3, 0)))
    np.save(tmp_path / "complex.npy", np.zeros((2, 3, 10), dtype=complex))
    np.save(tmp_path / "nan.npy", np.full((1, 3, 10), np.nan))
    (tmp_path / "x.csv").write_text("1,2\n")
    np.save(tmp_path / "obj.npy", np.array([[["a"]]], dtype=object), allow_pickle=True)
    np.save(tmp_path / "long.npy", np.zeros((1, 3, 10_000)))
    for name, (path, fragment) in cases.items():
        assert run_cli("predict", artifact, "--input", path) == 2, name
        assert_one_line_error(capsys, fragment)
    assert run_cli("predict", artifact, "--input", f"{data}_TEST.ts", "-o", tmp_path) == 2  # a directory
    assert_one_line_error(capsys, "is a directory")
    damaged = tmp_path / "damaged.sbts"
    damaged.write_bytes(artifact.read_bytes()[:-10])
    assert run_cli("predict", damaged, "--input", f"{data}_TEST.ts") == 2
    assert_one_line_error(capsys, "damaged.sbts")


def test_export_does_not_overwrite_on_failure(trained_run, tmp_path, capsys):
    run_dir, _ = trained_run
    target = tmp_path / "model.sbts"
    target.write_bytes(b"keep me")
    assert run_cli("export", run_dir, "-o", target) == 2  # an existing file needs --force
    assert_one_line_error(capsys, "exists; pass --force to replace it")
    assert target.read_bytes() == b"keep me"
    assert run_cli("export", run_dir, "-o", target, "--checkpoint", "best", "--force") == 0  # success replaces it
    assert target.read_bytes() != b"keep me"
    broken = Path(tmp_path / "broken")
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    target.write_bytes(b"keep me")
    assert run_cli("export", broken, "-o", target, "--force") == 2
    assert_one_line_error(capsys, "config.json")
    assert target.read_bytes() == b"keep me"
