"""The one layer-kind table: every kind a model declares is in it, complete, selected by its config option, and
an unknown kind is refused naming it."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from sbts.config import ATTENTION_MODES, LINEAR_KINDS, NORMS, POS_ENCODINGS, ModelConfig
from sbts.errors import ArtifactError, ConfigError
from sbts.export.artifact import build_artifact
from sbts.layers.kinds import KINDS, NO_LAYER, kind_for_option, layer_kind
from sbts.layers.layout import ExpectedLayer, model_layout
from sbts.models import TimeSeriesTransformer, create_model
from sbts.runtime.artifact import artifact_bytes, load_artifact_bytes

SMALL = {"in_channels": 3, "out_dim": 2, "max_len": 8, "d_model": 8, "n_heads": 2, "d_ff": 16}
COMBINATIONS = list(itertools.product(ATTENTION_MODES, NORMS, POS_ENCODINGS, LINEAR_KINDS))
OPTIONS = {"norm": NORMS, "pos_encoding": POS_ENCODINGS, "linear": LINEAR_KINDS}


def small_model(attention: str = "full", norm: str = "batch", pos_encoding: str = "sinusoidal",
                linear: str = "sparse_binary"):
    return create_model("sbt" if linear == "sparse_binary" else "dense", **SMALL, attention=attention, norm=norm,
                        pos_encoding=pos_encoding)


@pytest.mark.parametrize("attention,norm,pos_encoding,linear", COMBINATIONS,
                         ids=["-".join(combination) for combination in COMBINATIONS])
def test_every_declared_kind_is_in_the_table_and_complete(attention, norm, pos_encoding, linear):
    model = small_model(attention, norm, pos_encoding, linear)
    for name, st in model.storage().items():
        kind = layer_kind(st.kind)
        assert kind is KINDS[st.kind] and kind.name == st.kind, name
        assert callable(kind.export) and callable(kind.read) and callable(kind.paper) and kind.stores, name


@pytest.mark.parametrize("attention,norm,pos_encoding,linear", COMBINATIONS,
                         ids=["-".join(combination) for combination in COMBINATIONS])
def test_the_config_option_selects_the_kind_the_layers_declare(attention, norm, pos_encoding, linear):
    model = small_model(attention, norm, pos_encoding, linear)
    declared = {st.kind for st in model.storage().values()}
    for option, value in (("norm", norm), ("pos_encoding", pos_encoding), ("linear", linear)):
        kind = kind_for_option(option, value)
        of_option = {name for name in declared if KINDS[name].option and KINDS[name].option[0] == option}
        assert of_option == (set() if kind is None else {kind.name}), (option, value)
        if option != "linear" and kind is not None:  # the numpy forward runs norms and positions through the table
            assert callable(kind.forward) or kind.rotary  # rotary positions turn queries and keys in the attention


@pytest.mark.parametrize("option", OPTIONS)
def test_option_mapping_covers_every_config_value(option):
    for value in OPTIONS[option]:
        kind = kind_for_option(option, value)
        if value == NO_LAYER:
            assert kind is None  # explicitly no layer, so no tensor
        else:
            assert kind is not None and kind.option == (option, value)


def test_kinds_without_a_forward_are_run_by_the_generic_code():
    assert {name for name, kind in KINDS.items() if kind.forward is None} == {
        "sparse_binary_linear", "dense_linear", "attention", "positional_rope"}


def test_unknown_kind_is_refused_naming_it():
    with pytest.raises(ValueError, match="'nope'"):
        layer_kind("nope")
    with pytest.raises(ConfigError, match="norm='group'"):
        kind_for_option("norm", "group")


def test_artifact_naming_an_unknown_kind_is_refused():
    model = small_model().eval()
    document, tensors = build_artifact(model, task="classification", inference_state={"classes": ["a", "b"]})
    document["layers"]["layers.0.norm1"]["kind"] = "nope"
    with pytest.raises(ArtifactError) as refused:
        load_artifact_bytes(artifact_bytes(document, tensors), "edited.sbts")
    message = str(refused.value)
    assert message.startswith("edited.sbts: ") and "layers.0.norm1" in message and "'nope'" in message
    assert "\n" not in message


def test_the_table_imports_without_torch():
    code = "import sys, sbts.layers.kinds, sbts.layers.storage; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize("linear", LINEAR_KINDS)
@pytest.mark.parametrize("attention", ATTENTION_MODES)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
def test_the_torch_model_builds_exactly_the_layout_of_its_config(linear, attention, norm, pos_encoding):
    """The artifact reader checks files against model_layout: it must be what the torch model declares."""
    for attention_bias, linear_bias, linear_path in ((True, False, "none"), (False, True, "joint"),
                                                     (True, True, "shared")):
        config = ModelConfig(in_channels=3, out_dim=6, max_len=7, d_model=8, n_heads=2, n_layers=2, d_ff=12,
                             linear=linear, attention=attention, norm=norm, pos_encoding=pos_encoding,
                             attention_bias=attention_bias, linear_bias=linear_bias, linear_path=linear_path)
        model = TimeSeriesTransformer(config)
        modules = dict(model.named_modules())
        declared = {name: ExpectedLayer(st.kind, tuple(st.shape),
                                        modules[name].bias is not None if st.kind.endswith("_linear") else None)
                    for name, st in model.storage().items()}
        assert declared == model_layout(config)
