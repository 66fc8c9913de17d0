"""Whole models, generated from the registry: shapes, determinism, dense/SBT parity, what trains,
padding with the masked batch norm, and ModelConfig validation."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import randomise

import sbts
from sbts.config import ATTENTION_MODES, LINEAR_KINDS, NORMS, POS_ENCODINGS, ModelConfig
from sbts.errors import ConfigError
from sbts.layers import DenseLinear, MaskedBatchNorm, SparseBinaryLinear, StepLayerNorm, TimeLayerNorm
from sbts.models import TimeSeriesTransformer, model_config

MODELS = sbts.list_models()
LINEAR_CLASS = {"sparse_binary": SparseBinaryLinear, "dense": DenseLinear}
SMALL = dict(in_channels=3, out_dim=2, max_len=6, d_model=8, n_heads=2, n_layers=2, d_ff=12)
COMBOS = list(itertools.product(MODELS, ATTENTION_MODES, NORMS))


def build(name: str, **overrides) -> TimeSeriesTransformer:
    return sbts.create_model(name, **{**SMALL, **overrides})


def batch(b=3, t=SMALL["max_len"], c=SMALL["in_channels"], seed=0) -> torch.Tensor:
    return torch.randn(b, t, c, generator=torch.Generator().manual_seed(seed))


def test_registry_has_the_expected_models():
    assert {"sbt", "dense"} <= set(MODELS)
    assert MODELS == sorted(MODELS)
    assert model_config("sbt", **SMALL).linear == "sparse_binary"
    assert model_config("dense", **SMALL).linear == "dense"
    with pytest.raises(ConfigError, match="unknown model"):
        sbts.create_model("no_such_model", **SMALL)


# --------------------------------------------------------------------------------------------
# Forward shapes and determinism over the whole registry
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,attention,norm", COMBOS)
def test_forward_shape_finite_train_and_eval(name, attention, norm):
    model = build(name, attention=attention, norm=norm)
    assert isinstance(model, TimeSeriesTransformer)
    assert (model.config.attention, model.config.norm) == (attention, norm)
    x = batch()
    model.train()
    out_train = model(x)
    model.eval()
    with torch.no_grad():
        out_eval = model(x)
    for out in (out_train, out_eval):
        assert out.shape == (3, SMALL["max_len"], SMALL["out_dim"])
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all()
    assert out_eval.abs().sum() > 0
    # the loss is differentiable end to end
    out_train.pow(2).mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name,attention,norm", COMBOS)
def test_same_seed_identical_different_seed_differs(name, attention, norm):
    a = build(name, attention=attention, norm=norm, seed=3)
    b = build(name, attention=attention, norm=norm, seed=3)
    c = build(name, attention=attention, norm=norm, seed=4)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    x = batch(seed=1)
    a.eval(), b.eval(), c.eval()
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        assert not torch.allclose(a(x), c(x))
    for (name_a, la), (name_c, lc) in zip(a.linear_layers().items(), c.linear_layers().items()):
        assert name_a == name_c
        assert not torch.equal(la.weight.detach(), lc.weight.detach()), name_a
    # every linear of one model has its own W (seeds derived from the layer names)
    weights = [layer.weight.detach().flatten()[:4] for layer in a.linear_layers().values()]
    assert len({tuple(w.tolist()) for w in weights}) == len(weights)


@pytest.mark.parametrize("name", MODELS)
def test_create_model_from_config_equals_from_name(name):
    by_name = build(name, seed=9)
    by_config = sbts.create_model(by_name.config)
    by_dict = sbts.create_model(ModelConfig.from_dict(by_name.config.to_dict()))
    for other in (by_config, by_dict):
        assert other.config == by_name.config
        for (k1, v1), (k2, v2) in zip(by_name.state_dict().items(), other.state_dict().items()):
            assert k1 == k2 and torch.equal(v1, v2)
    with pytest.raises(TypeError):
        sbts.create_model(by_name.config, seed=1)
    with pytest.raises(TypeError):
        sbts.create_model(42)


# --------------------------------------------------------------------------------------------
# Dense / SBT structural parity
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("attention,norm", list(itertools.product(ATTENTION_MODES, NORMS)))
def test_dense_and_sbt_have_the_same_linear_structure(attention, norm):
    sbt = build("sbt", attention=attention, norm=norm, seed=2)
    dense = build("dense", attention=attention, norm=norm, seed=2)
    ls, ld = sbt.linear_layers(), dense.linear_layers()
    assert list(ls) == list(ld)
    n_layers = SMALL["n_layers"]
    expected_names = {"embedding", "head"} | {
        f"layers.{i}.{sub}" for i in range(n_layers)
        for sub in ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.out_proj", "ff1", "ff2")}
    assert set(ls) == expected_names
    for key in ls:
        assert (ls[key].in_features, ls[key].out_features) == (ld[key].in_features, ld[key].out_features), key
        assert ls[key].weight.shape == ld[key].weight.shape
        assert (ls[key].bias is None) == (ld[key].bias is None)
        assert isinstance(ls[key], SparseBinaryLinear) and not isinstance(ls[key], DenseLinear)
        assert isinstance(ld[key], DenseLinear)
        # same seed, same name: the SBT's frozen W is the dense model's initial weight
        assert torch.equal(ls[key].weight, ld[key].weight.detach())
        assert ls[key].storage().weight_bits == 1 and ld[key].storage().weight_bits == 32
    assert (ls["embedding"].in_features, ls["embedding"].out_features) == (SMALL["in_channels"], SMALL["d_model"])
    assert (ls["head"].in_features, ls["head"].out_features) == (SMALL["d_model"], SMALL["out_dim"])
    assert (ls["layers.0.ff1"].in_features, ls["layers.0.ff1"].out_features) == (SMALL["d_model"], SMALL["d_ff"])
    # no linear escapes the factory
    for model in (sbt, dense):
        stray = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n not in model.linear_layers()]
        assert stray == []


@pytest.mark.parametrize("name", MODELS)
def test_every_linear_is_of_the_configured_kind(name):
    model = build(name)
    cls = LINEAR_CLASS[model.config.linear]
    layers = model.linear_layers()
    assert len(layers) == 2 + 6 * SMALL["n_layers"]
    for key, layer in layers.items():
        assert type(layer) is cls, key
        if cls is SparseBinaryLinear:
            assert layer.density == model.config.density


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("attention_bias", [True, False])
@pytest.mark.parametrize("linear_bias", [True, False])
def test_bias_options(name, attention_bias, linear_bias):
    model = build(name, attention_bias=attention_bias, linear_bias=linear_bias)
    for key, layer in model.linear_layers().items():
        expected = attention_bias if ".attention." in key else linear_bias  # embedding, feed-forward, head
        assert (layer.bias is not None) == expected, key


@pytest.mark.parametrize("field", ["step_t_self", "attention_bias", "linear_bias"])
def test_bool_options_reject_non_bools(field):
    with pytest.raises(ConfigError, match=field):
        build("sbt", **{field: "yes"})


# --------------------------------------------------------------------------------------------
# What trains in the SBT
# --------------------------------------------------------------------------------------------

def _norm_parameter_ids(model):
    return {id(p) for m in model.modules() if isinstance(m, (MaskedBatchNorm, TimeLayerNorm, StepLayerNorm))
            for p in m.parameters(recurse=False)}


@pytest.mark.parametrize("attention,norm", list(itertools.product(ATTENTION_MODES, NORMS)))
def test_sbt_gradients_reach_only_scores_and_norms(attention, norm):
    model = build("sbt", attention=attention, norm=norm)
    model.train()
    model(batch()).pow(2).mean().backward()
    norm_ids = _norm_parameter_ids(model)
    if norm != "none":
        assert norm_ids
    with_grad = [(n, p) for n, p in model.named_parameters() if p.grad is not None]
    assert with_grad
    for pname, p in with_grad:
        assert pname.endswith(".scores") or id(p) in norm_ids, pname
        if id(p) in norm_ids:
            assert pname.rsplit(".", 1)[-1] in ("weight", "bias")
    # every parameter is a score or a norm parameter, and every score received a gradient
    for pname, p in model.named_parameters():
        assert pname.endswith(".scores") or id(p) in norm_ids, pname
    scores = [p for n, p in model.named_parameters() if n.endswith(".scores")]
    assert len(scores) == len(model.linear_layers())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in scores)
    # linears hold no trainable weight or bias; W and biases are buffers without gradients
    for lname, layer in model.linear_layers().items():
        assert [n for n, _ in layer.named_parameters()] == ["scores"], lname
        assert not isinstance(layer.weight, torch.nn.Parameter)
        assert not layer.weight.requires_grad and layer.weight.grad is None
    for bname, buf in model.named_buffers():
        assert buf.grad is None and not buf.requires_grad, bname


def test_dense_weights_do_train():
    """Contrast with the SBT: in the dense baseline the linear weights get gradients."""
    model = build("dense")
    model(batch()).pow(2).mean().backward()
    for lname, layer in model.linear_layers().items():
        assert isinstance(layer.weight, torch.nn.Parameter)
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0, lname


def test_sbt_training_step_changes_only_scores_and_norms():
    model = build("sbt", norm="batch")
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith("scores") and "norm" not in k}
    before_scores = {k: v.clone() for k, v in model.state_dict().items() if k.endswith("scores")}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(3):
        opt.zero_grad()
        model(batch(seed=step)).pow(2).mean().backward()
        opt.step()
    after = model.state_dict()
    for k, v in frozen.items():
        assert torch.equal(after[k], v), k
    assert any(not torch.equal(after[k], v) for k, v in before_scores.items())


# --------------------------------------------------------------------------------------------
# Padding with the masked batch norm
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_padded_batch_matches_unpadded_sequences_in_eval(name):
    torch.manual_seed(0)
    model = build(name, norm="batch", attention="full", seed=1)
    model.train()
    with torch.no_grad():  # give the batch norms non-trivial running statistics first
        for i in range(3):
            model(3.0 * batch(b=4, seed=10 + i) + 1.0)
    model.eval()
    lengths = [6, 4, 2]
    x = batch(b=3, seed=5)
    pad = torch.zeros(3, 6, dtype=torch.bool)
    for i, n in enumerate(lengths):
        pad[i, n:] = True
    x_pad = x.clone()
    x_pad[pad] = 1e4  # garbage in padded steps
    with torch.no_grad():
        out = model(x_pad, pad)
        for i, n in enumerate(lengths):
            alone = model(x[i:i + 1, :n])
            torch.testing.assert_close(out[i, :n], alone[0], atol=1e-5, rtol=1e-5)
        # sanity: without the padding mask the garbage leaks into the valid steps
        leaked = model(x_pad)
    assert (leaked[1, :4] - out[1, :4]).abs().max() > 1e-3
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_batchnorm_running_statistics_ignore_padded_steps(name):
    valid = 4
    x = batch(b=3, t=valid, seed=2)
    x_pad = torch.cat([x, torch.full((3, 2, SMALL["in_channels"]), 50.0)], dim=1)
    pad = torch.zeros(3, 6, dtype=torch.bool)
    pad[:, valid:] = True

    padded_model = build(name, norm="batch", attention="full", seed=3).train()
    plain_model = build(name, norm="batch", attention="full", seed=3).train()
    leaky_model = build(name, norm="batch", attention="full", seed=3).train()
    with torch.no_grad():
        padded_model(x_pad, pad)
        plain_model(x)
        leaky_model(x_pad)

    norms = [n for n, m in padded_model.named_modules() if isinstance(m, MaskedBatchNorm)]
    assert len(norms) == 2 * SMALL["n_layers"]
    padded_modules, plain_modules = dict(padded_model.named_modules()), dict(plain_model.named_modules())
    leaky_modules = dict(leaky_model.named_modules())
    differs = False
    for n in norms:
        a, b, c = padded_modules[n], plain_modules[n], leaky_modules[n]
        assert int(a.num_batches_tracked) == 1
        assert not torch.allclose(a.running_mean, torch.zeros_like(a.running_mean))
        torch.testing.assert_close(a.running_mean, b.running_mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a.running_var, b.running_var, atol=1e-5, rtol=1e-5)
        differs |= not torch.allclose(c.running_mean, b.running_mean, atol=1e-3)
    assert differs  # the test would notice padded steps leaking into the statistics


def test_padding_rejected_where_it_cannot_work():
    x, pad = batch(), torch.zeros(3, 6, dtype=torch.bool)
    pad[0, 4:] = True
    with pytest.raises(ValueError):
        build("sbt", norm="layer_time")(x, pad)
    with pytest.raises(ValueError):
        build("sbt", attention="step_t", norm="batch")(x, pad)
    with pytest.raises(ValueError):
        build("sbt", norm="layer_time")(batch(t=4))  # layer_time needs windows of exactly max_len
    with pytest.raises(ValueError):
        build("sbt")(torch.randn(3, 6, SMALL["in_channels"] + 1))  # wrong channel count
    with pytest.raises(ValueError):
        build("sbt")(torch.randn(6, SMALL["in_channels"]))  # missing batch dimension
    with pytest.raises(ValueError):
        build("sbt")(batch(t=SMALL["max_len"] + 1))  # longer than max_len


# --------------------------------------------------------------------------------------------
# ModelConfig validation and round trip
# --------------------------------------------------------------------------------------------

BAD_CONFIGS = [
    dict(d_model=10, n_heads=3),
    dict(d_model=8, n_heads=3),
    dict(attention="sparse"),
    dict(attention="Full"),
    dict(norm="group"),
    dict(linear="binary"),
    dict(pos_encoding="rotary"),
    dict(d_model=0),
    dict(n_heads=0),
    dict(n_layers=-1),
    dict(in_channels=2.5),
    dict(max_len=True),
    dict(seed=-1),
    dict(qkv_density=0.0),
    dict(qkv_density=1.5),
    dict(dropout=1.0),
    dict(dropout=-0.1),
    dict(dropout=True),
    dict(dropout="0.1"),
]


@pytest.mark.parametrize("overrides", BAD_CONFIGS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_model_config_validation(overrides):
    fields = {**SMALL, **overrides}
    for make in (lambda: ModelConfig(**fields), lambda: ModelConfig.from_dict(fields),
                 lambda: sbts.create_model("sbt", **fields), lambda: sbts.create_model("dense", **fields)):
        with pytest.raises(ConfigError) as info:
            make()
        assert str(info.value) and "\n" not in str(info.value)


def test_from_dict_unknown_or_missing_key():
    with pytest.raises(ConfigError, match="d_modle"):
        ModelConfig.from_dict({**SMALL, "d_modle": 16})
    with pytest.raises(ConfigError, match="d_modle"):
        sbts.create_model("sbt", **SMALL, d_modle=16)
    with pytest.raises(ConfigError):
        ModelConfig.from_dict({"in_channels": 3, "out_dim": 2})  # max_len missing
    with pytest.raises(ConfigError):
        ModelConfig.from_dict([("in_channels", 3)])


def test_valid_choices_accepted():
    for linear, attention, norm, pos in itertools.product(LINEAR_KINDS, ATTENTION_MODES, NORMS, POS_ENCODINGS):
        cfg = ModelConfig(**SMALL, linear=linear, attention=attention, norm=norm, pos_encoding=pos)
        assert (cfg.linear, cfg.attention, cfg.norm, cfg.pos_encoding) == (linear, attention, norm, pos)


@pytest.mark.parametrize("name", MODELS)
def test_to_dict_from_dict_round_trip(name):
    density = 0.2 if name == "sbt" else 1.0
    cfg = model_config(name, **SMALL, attention="qkv_mask", qkv_density=0.3, norm="layer_time", seed=17,
                       step_t_self=True, density=density)
    data = cfg.to_dict()
    assert isinstance(data, dict) and data["seed"] == 17 and data["density"] == pytest.approx(density)
    assert "sparsity" not in data
    again = ModelConfig.from_dict(data)
    assert again == cfg and again.to_dict() == data
    assert again.sparsity == pytest.approx(1 - density)
    # JSON-serialisable, and the round trip through JSON rebuilds the same network
    import json
    from_json = ModelConfig.from_dict(json.loads(json.dumps(data)))
    assert from_json == cfg
    m1, m2 = sbts.create_model(cfg), sbts.create_model(from_json)
    for (k1, v1), (k2, v2) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)


@pytest.mark.parametrize("name,attention,norm", COMBOS)
def test_last_step_only_equals_the_last_row_of_the_full_output(name, attention, norm):
    """The shortcut for last-step tasks computes the same numbers, in eval and (outputs and gradients) in training."""
    model = randomise(build(name, attention=attention, norm=norm))
    x = batch()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x, last_step_only=True), model(x)[:, -1:], rtol=1e-5, atol=1e-6)
    model.train()
    outputs, grads = [], []
    for shortcut in (True, False):
        model.zero_grad()
        out = model(x, last_step_only=True) if shortcut else model(x)[:, -1:]
        out.square().sum().backward()
        outputs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for key in grads[0]:
        torch.testing.assert_close(grads[0][key], grads[1][key], rtol=1e-4, atol=1e-6)


def test_a_linear_read_out_cannot_die_where_the_relu_does():
    """Last-step features all below zero: the ReLU read-out outputs exactly zero (persistence, for a forecaster of
    changes) with no gradient to any score; the linear read-out still outputs and learns."""
    import torch

    from sbts.models import create_model

    for activation, alive in (("relu", False), ("none", True)):
        model = create_model("sbt", in_channels=3, out_dim=3, max_len=6, d_model=8, n_heads=2, d_ff=8,
                             attention="step_t", norm="layer", head_activation=activation)
        model.layers[-1].register_forward_hook(lambda module, args, out: -out.abs() - 1)
        out = model(torch.randn(4, 6, 3), last_step_only=True)
        out.square().sum().backward()
        gradient = sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None)
        assert bool(out.abs().sum() > 0) is alive and (gradient > 0) is alive
