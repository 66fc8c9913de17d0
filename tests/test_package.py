"""Package-level behaviour: light imports, the registry front door, the models command, the package metadata."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import sbts
from sbts.cli.main import main

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
FIRST_SETUPTOOLS_WITH_SPDX_LICENSE = Version("77")
DEPLOY_MODULES = ("sbts.cli.main", "sbts.runtime", "sbts.export.c_build", "sbts.export.c_source", "sbts.data.tables",
                  "sbts.data.ts_format")
TRAINING_MODULES = ("torch", "sklearn", "scipy", "yaml")
EXTRAS_THAT_TRAIN = ("datasets", "onnx", "plot", "sweep")  # their commands read or write run directories


def _requirements(extra: str | None = None) -> dict[str, Requirement]:
    listed = PROJECT["project"]["dependencies"] if extra is None else PROJECT["project"]["optional-dependencies"][extra]
    return {(requirement := Requirement(text)).name: requirement for text in listed}


def test_import_sbts_does_not_import_torch():
    code = "import sys, sbts, sbts.errors; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_lazy_top_level_names():
    assert sbts.create_model is sbts.models.create_model
    assert "sbt" in sbts.list_models() and "dense" in sbts.list_models()


def test_models_command_lists_registry(capsys):
    assert main(["models"]) == 0
    assert capsys.readouterr().out.split() == sbts.list_models()


def test_dense_model_cannot_claim_a_density():
    import pytest

    from sbts.errors import ConfigError

    with pytest.raises(ConfigError, match="dense model keeps every weight"):
        sbts.create_model("dense", in_channels=2, out_dim=2, max_len=8, density=0.5)
    assert sbts.create_model("dense", in_channels=2, out_dim=2, max_len=8).config.density == 1.0


def test_deploy_modules_import_no_training_stack():
    code = f"import sys, {', '.join(DEPLOY_MODULES)}; print(sorted(set({TRAINING_MODULES!r}) & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize("command", [["train", "classification", "--out", "run"], ["evaluate", "run"]])
def test_commands_without_torch_name_the_extra(command, tmp_path):
    code = ("import sys; sys.modules['torch'] = None  # what an install without PyTorch sees\n"
            "from sbts.cli.main import main; sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, *command], capture_output=True, text=True, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"sbts: error: sbts {command[0]} needs PyTorch: pip install 'sbts[train]'\n"


def test_base_install_is_the_runtime_and_train_is_an_extra():
    assert set(_requirements()) == {"numpy", "safetensors"}
    train = _requirements("train")
    assert {"torch", "scikit-learn", "scipy", "pyyaml", "tqdm"} <= set(train)
    assert train["torch"].specifier.contains("2.13.0")  # the CPU wheel the Makefile installs
    for extra in (*EXTRAS_THAT_TRAIN, "dev"):
        assert "train" in _requirements(extra)["sbts"].extras, extra
    dev_extras = _requirements("dev")["sbts"].extras
    assert set(PROJECT["project"]["optional-dependencies"]) - {"dev"} == dev_extras


def test_license_builds_with_the_declared_setuptools():
    setuptools = next(Requirement(text) for text in PROJECT["build-system"]["requires"]
                      if Requirement(text).name == "setuptools")
    assert setuptools.specifier.contains(str(FIRST_SETUPTOOLS_WITH_SPDX_LICENSE))
    assert not setuptools.specifier.contains(f"{FIRST_SETUPTOOLS_WITH_SPDX_LICENSE.major - 1}.99")
    assert PROJECT["project"]["license"] == "MIT"  # the SPDX expression (PEP 639), not a table
    assert not any(c.startswith("License ::") for c in PROJECT["project"]["classifiers"])  # refused beside it


def test_urls_classifiers_and_typing_marker():
    assert set(PROJECT["project"]["urls"]) == {"Homepage", "Repository", "Issues"}
    assert all(re.fullmatch(r"https://\S+", url) for url in PROJECT["project"]["urls"].values())
    classifiers = PROJECT["project"]["classifiers"]
    assert "Typing :: Typed" in classifiers
    pythons = [m[1] for c in classifiers if (m := re.fullmatch(r"Programming Language :: Python :: (3\.\d+)", c))]
    assert pythons and all(SpecifierSet(PROJECT["project"]["requires-python"]).contains(v) for v in pythons)
    assert (REPO / "sbts" / "py.typed").is_file()
    assert "py.typed" in PROJECT["tool"]["setuptools"]["package-data"]["sbts"]
    assert importlib.metadata.version("sbts") == PROJECT["project"]["version"] == sbts.__version__
