"""The deploy-only install: ``pip install sbts`` without extras is the numpy runtime, ``sbts predict`` and the C
export of a ``.sbts`` file, with neither PyTorch, scikit-learn, SciPy nor PyYAML.

A wheel of this checkout goes into a fresh virtual environment (no system site packages) with the numpy and
safetensors versions of this one, through this environment's pip (``pip --python``, so the new environment
needs no pip of its own) from pip's configured index (a local one here, so offline). Measured on the 2-core
development machine with a benchmark busy on the other core: building the wheel, the environment and
installing take about 13 s, training and exporting the two tiny models about 9 s, the whole file about 30 s.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_synthetic_ts

from sbts.cli.main import main

REPO = Path(__file__).resolve().parents[1]
PACKAGE_SOURCES = ("pyproject.toml", "README.md", "sbts")  # what building the wheel reads
RUNTIME_DEPENDENCIES = ("numpy", "safetensors")
TRAINING_MODULES = ("torch", "sklearn", "scipy", "yaml")  # the import names of the training stack
NEEDS_PYTORCH = "sbts: error: sbts train needs PyTorch: pip install 'sbts[train]'\n"
FORECAST_WINDOW = 12
TINY_MODEL = ["--d-model", "8", "--n-heads", "2", "--n-layers", "1", "--d-ff", "16", "--epochs", "1",
              "--device", "cpu", "--quiet"]


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run away from the checkout, whose sbts/ and sbts.egg-info would shadow the installed package."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd, env=env)


def _full_install_sbts(*args) -> int:
    """``sbts ARGS`` in this process: the full install."""
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def deploy_venv(tmp_path_factory) -> Path:
    """A fresh virtual environment holding the sbts wheel and its base dependencies only; its bin folder."""
    root = tmp_path_factory.mktemp("deploy")
    source = root / "source"  # a copy: building in the checkout would leave build/ and egg-info behind
    source.mkdir()
    for name in PACKAGE_SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, source / name)
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                  "-w", root / "dist", source], cwd=root)
    if built.returncode != 0 and "No module named pip" in built.stderr:
        pytest.skip("pip is not available in this environment")
    assert built.returncode == 0, built.stderr
    venv = root / "venv"
    created = _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=root)
    if created.returncode != 0:
        pytest.skip(f"cannot create a virtual environment: {created.stderr.strip().splitlines()[-1:]}")
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in RUNTIME_DEPENDENCIES]
    wheel = next((root / "dist").glob("sbts-*.whl"))
    installed = _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", wheel,
                      *pins], cwd=root)
    assert installed.returncode == 0, installed.stderr
    return venv / "bin"


@pytest.fixture(scope="module")
def full_install_outputs(tmp_path_factory) -> Path:
    """Models trained and exported by this (full) install, and what its ``sbts predict`` and C export write."""
    root = tmp_path_factory.mktemp("full")
    synth = write_synthetic_ts(root / "Synth")
    assert _full_install_sbts("train", "classification", "--data", synth, "--model", "sbt", "--density", "0.5",
                              *TINY_MODEL, "--no-baselines", "--out", root / "classifier-run") == 0
    rng = np.random.default_rng(0)
    steps = np.arange(300)
    series = np.stack([np.sin(2 * np.pi * steps / 24 + phase) for phase in (0.0, 1.0, 2.0)], axis=1)
    series += 0.1 * rng.standard_normal(series.shape)
    np.savetxt(root / "series.csv", series, delimiter=",", header="a,b,c", comments="", fmt="%.6f")
    np.savetxt(root / "history.csv", series[:40], delimiter=",", header="a,b,c", comments="", fmt="%.6f")
    assert _full_install_sbts("train", "forecasting", "--data", root / "series.csv", "--model", "sbt", "--window",
                              FORECAST_WINDOW, "--stride", "4", *TINY_MODEL, "--out", root / "forecaster-run") == 0
    for kind in ("classifier", "forecaster"):
        assert _full_install_sbts("export", root / f"{kind}-run", "-o", root / f"{kind}.sbts") == 0
    assert _full_install_sbts("predict", root / "classifier.sbts", "--input", synth / "Synth_TEST.ts", "--proba",
                              "-o", root / "classes.csv") == 0
    assert _full_install_sbts("predict", root / "forecaster.sbts", "--input", root / "history.csv",
                              "-o", root / "forecasts.csv") == 0
    assert _full_install_sbts("export", root / "classifier.sbts", "--format", "c", "-o", root / "c") == 0
    return root


def test_base_install_has_no_training_stack(deploy_venv, tmp_path):
    code = ("import importlib.metadata, importlib.util, json, pathlib, sbts.cli.main, sbts.runtime, "
            "sbts.export.c_build\n"
            f"print(json.dumps({{'training': [m for m in {TRAINING_MODULES!r} if importlib.util.find_spec(m)],"
            "'requires': [r for r in importlib.metadata.requires('sbts') if 'extra ==' not in r],"
            "'typed': (pathlib.Path(sbts.runtime.__file__).parents[1] / 'py.typed').is_file()}))")
    checked = _run([deploy_venv / "python", "-c", code], cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout) == {"training": [], "requires": ["numpy>=1.24", "safetensors>=0.4"],
                                          "typed": True}


@pytest.mark.parametrize("model,given,written", [
    ("classifier.sbts", ["--input", "Synth/Synth_TEST.ts", "--proba"], "classes.csv"),
    ("forecaster.sbts", ["--input", "history.csv"], "forecasts.csv"),
])
def test_predict_matches_the_full_install_byte_for_byte(deploy_venv, full_install_outputs, tmp_path, model, given,
                                                        written):
    root = full_install_outputs
    given = [str(root / arg) if not arg.startswith("--") else arg for arg in given]
    predicted = _run([deploy_venv / "sbts", "predict", root / model, *given, "-o", tmp_path / written], cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    expected = (root / written).read_bytes()
    assert expected.count(b"\n") > 1  # a header and rows, not an empty file that anything would equal
    assert (tmp_path / written).read_bytes() == expected


def test_c_export_of_a_sbts_file(deploy_venv, full_install_outputs, tmp_path):
    root = full_install_outputs
    exported = _run([deploy_venv / "sbts", "export", root / "classifier.sbts", "--format", "c", "-o", tmp_path / "c"],
                    cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["files"] == ["sbts.h", "sbts.c"]
    for name in ("sbts.h", "sbts.c"):
        assert (tmp_path / "c" / name).read_bytes() == (root / "c" / name).read_bytes()


def test_training_says_which_extra_to_install(deploy_venv, full_install_outputs, tmp_path):
    trained = _run([deploy_venv / "sbts", "train", "classification", "--data", full_install_outputs / "Synth",
                    "--out", tmp_path / "run"], cwd=tmp_path)
    assert (trained.returncode, trained.stdout, trained.stderr) == (2, "", NEEDS_PYTORCH)
    assert not (tmp_path / "run").exists()
    evaluated = _run([deploy_venv / "sbts", "evaluate", full_install_outputs / "classifier-run"], cwd=tmp_path)
    assert (evaluated.returncode, evaluated.stderr) == (2, NEEDS_PYTORCH.replace("sbts train", "sbts evaluate"))


def test_yaml_config_says_which_extra_to_install(deploy_venv, tmp_path):
    config = tmp_path / "model.yaml"
    config.write_text("in_channels: 3\nout_dim: 2\nmax_len: 16\n")
    code = ("import sys\nfrom sbts.config import read_config_file\nfrom sbts.errors import ConfigError\n"
            "try:\n    read_config_file(sys.argv[1])\nexcept ConfigError as exc:\n    print(exc)")
    read = _run([deploy_venv / "python", "-c", code, config], cwd=tmp_path)
    assert (read.returncode, read.stderr) == (0, "")
    assert read.stdout == f"{config}: reading YAML configs needs PyYAML: pip install 'sbts[train]'\n"
