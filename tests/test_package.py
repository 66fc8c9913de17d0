"""Package-level behaviour: light imports, the registry front door, the models command."""

from __future__ import annotations

import subprocess
import sys

import sbts
from sbts.cli.main import main


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
