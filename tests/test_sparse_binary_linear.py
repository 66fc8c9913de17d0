"""SparseBinaryLinear (Biprop): mask size, ternary values, frozen W, straight-through gradient,
seeded regeneration (numpy, pure-Python SplitMix64 and C), density validation, eval cache, storage."""

from __future__ import annotations

import math
import shutil
import subprocess
import textwrap
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import sbts
from sbts.config import ModelConfig, check_density, resolve_density
from sbts.errors import ConfigError
from sbts.frozen_tensors import kept_count, seeded_weight_and_bias, splitmix64, uniform01, uniform_weights
from sbts.layers import linear as linear_module
from sbts.layers.linear import DenseLinear, SparseBinaryLinear, make_linear

MASK64 = (1 << 64) - 1


def exact_kept(density: float, n: int) -> int:
    """ceil(density * n) in exact decimal arithmetic (0.1 means one tenth, not the nearest double)."""
    return max(1, math.ceil(Fraction(str(density)) * n))


def ref_splitmix64(seed: int, count: int) -> list[int]:
    """Vigna's splitmix64.c, written with Python integers (independent of the package)."""
    state, out = seed & MASK64, []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        out.append(z ^ (z >> 31))
    return out


# --------------------------------------------------------------------------------------------
# Mask size and ternary values
# --------------------------------------------------------------------------------------------

SHAPES_DENSITIES = [
    (10, 3, 0.1),    # n=30: must keep 3, not 4
    (6, 5, 0.1),     # n=30 the other way round
    (7, 3, 0.1),     # n=21 -> 2.1 -> 3
    (13, 7, 0.25),   # n=91 -> 22.75 -> 23
    (8, 4, 0.25),    # n=32 -> exactly 8
    (9, 7, 0.5),     # n=63 -> 31.5 -> 32
    (16, 8, 0.5),    # n=128 -> 64
    (5, 3, 1.0),     # everything kept
    (11, 5, 1.0),
    (10, 10, 0.07),  # 7.000000000000001 in floats -> 7
    (10, 10, 0.3),   # n=100 -> 30
    (20, 10, 0.55),  # 0.55*200 = 110.00000000000001 in floats -> 110
    (3, 10, 0.3),    # n=30 -> 9
    (3, 1, 0.01),    # 0.03 -> at least one weight kept
    (17, 9, 0.333),  # 50.949 -> 51
]


@pytest.mark.parametrize("in_features,out_features,density", SHAPES_DENSITIES)
def test_exact_number_of_nonzeros(in_features, out_features, density):
    layer = SparseBinaryLinear(in_features, out_features, density=density, seed=7)
    n = in_features * out_features
    expected = exact_kept(density, n)
    assert layer.kept == expected
    assert kept_count(density, n) == expected
    w = layer.effective_weight().detach()
    assert w.shape == (out_features, in_features)
    assert int(torch.count_nonzero(w)) == expected
    assert int(layer.mask().sum()) == expected
    assert layer.storage().kept == expected


def test_float_edge_densities_keep_the_exact_ceiling():
    assert kept_count(0.1, 30) == 3
    layer = SparseBinaryLinear(10, 3, density=0.1, seed=0)
    assert int(torch.count_nonzero(layer.effective_weight())) == 3
    # products that float arithmetic rounds just above an integer: a naive ceil would keep one too many
    for density, n, expected in [(0.07, 100, 7), (0.55, 200, 110), (0.07, 300, 21), (0.55, 20, 11)]:
        assert math.ceil(density * n) in (expected, expected + 1)
        assert kept_count(density, n) == expected
    assert math.ceil(0.07 * 100) == 8  # the trap really exists
    layer = SparseBinaryLinear(10, 10, density=0.07, seed=0)
    assert int(torch.count_nonzero(layer.effective_weight())) == 7
    # and products just below are not rounded down
    assert kept_count(0.3, 30) == 9 and kept_count(0.1, 31) == 4 and kept_count(0.5, 3) == 2


@pytest.mark.parametrize("in_features,out_features,density,seed",
                         [(9, 7, 0.5, 0), (13, 7, 0.25, 3), (10, 3, 0.1, 11), (6, 4, 1.0, 5), (32, 16, 0.1, 2**64 - 1)])
def test_values_alpha_signs_and_top_scores(in_features, out_features, density, seed):
    layer = SparseBinaryLinear(in_features, out_features, bias=True, density=density, seed=seed)
    w = layer.weight.numpy().astype(np.float64)
    s = layer.scores.detach().numpy().astype(np.float64)
    k = exact_kept(density, w.size)

    # Kept positions computed independently with numpy: the k largest |scores|.
    order = np.argsort(-np.abs(s).ravel(), kind="stable")
    kept = np.zeros(w.size, dtype=bool)
    kept[order[:k]] = True
    kept = kept.reshape(w.shape)
    assert np.abs(s).ravel()[order[k - 1]] > (np.abs(s).ravel()[order[k]] if k < w.size else -1)  # no tie

    alpha = np.abs(w[kept]).mean()
    eff = layer.effective_weight().detach().numpy().astype(np.float64)

    assert np.array_equal(eff != 0, kept)
    assert np.array_equal(layer.mask().numpy().astype(bool), kept)
    np.testing.assert_allclose(np.abs(eff[kept]), alpha, rtol=1e-6, atol=0)
    # every kept value is exactly +alpha or -alpha (one float value, both signs)
    assert len(np.unique(np.abs(eff[kept]))) == 1
    assert float(layer.alpha()) == pytest.approx(alpha, rel=1e-6)
    expected_sign = np.where(w[kept] >= 0, 1.0, -1.0)
    assert np.array_equal(np.sign(eff[kept]), expected_sign)
    assert set(np.unique(eff)).issubset({0.0, float(eff[kept][0]), -float(eff[kept][0])})


def test_sign_of_zero_weight_counts_as_plus_one():
    layer = SparseBinaryLinear(4, 3, density=1.0, seed=1)
    with torch.no_grad():
        layer.weight[0, 0] = 0.0
        layer.weight[1, 2] = -0.0
    eff = layer.effective_weight().detach()
    alpha = layer.weight.abs().sum() / 12
    assert eff[0, 0] == pytest.approx(float(alpha))
    assert eff[1, 2] == pytest.approx(float(alpha))
    assert torch.count_nonzero(eff) == 12


def test_forward_matches_functional_linear():
    layer = SparseBinaryLinear(9, 5, bias=True, density=0.3, seed=4)
    x = torch.randn(6, 9)
    expected = x @ layer.effective_weight().detach().T + layer.bias
    torch.testing.assert_close(layer(x).detach(), expected, rtol=1e-6, atol=1e-6)
    # 3-D input (batch, time, features) works as for nn.Linear
    x3 = torch.randn(2, 4, 9)
    torch.testing.assert_close(layer(x3).detach(), (x3 @ layer.effective_weight().detach().T + layer.bias))


# --------------------------------------------------------------------------------------------
# Frozen W and bias; only scores train
# --------------------------------------------------------------------------------------------

def test_weight_and_bias_are_buffers_and_scores_is_the_only_parameter():
    layer = SparseBinaryLinear(8, 6, bias=True, density=0.5, seed=3)
    assert [name for name, _ in layer.named_parameters()] == ["scores"]
    buffers = dict(layer.named_buffers())
    assert set(buffers) == {"weight", "bias"}
    assert not layer.weight.requires_grad and not layer.bias.requires_grad
    assert layer.scores.requires_grad
    assert set(layer.state_dict()) == {"scores"}  # W and bias are regenerated from the seed, never stored
    no_bias = SparseBinaryLinear(8, 6, bias=False)
    assert no_bias.bias is None and [n for n, _ in no_bias.named_parameters()] == ["scores"]


def test_weight_and_bias_never_change_during_training():
    torch.manual_seed(0)
    layer = SparseBinaryLinear(12, 4, bias=True, density=0.25, seed=9)
    w0, b0, s0 = layer.weight.clone(), layer.bias.clone(), layer.scores.detach().clone()
    mask0 = layer.mask().clone()
    x, y = torch.randn(64, 12), torch.randn(64, 4)
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = F.mse_loss(layer(x), y)
        loss.backward()
        assert layer.scores.grad is not None and layer.scores.grad.abs().sum() > 0
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]  # training happened
    assert torch.equal(layer.weight, w0)
    assert torch.equal(layer.bias, b0)
    assert not torch.equal(layer.scores.detach(), s0)  # the scores did train
    assert not torch.equal(layer.mask(), mask0)  # and the mask moved with them
    assert layer.weight.grad is None and layer.bias.grad is None


def test_weight_stays_bitwise_equal_to_seeded_values_after_training():
    layer = SparseBinaryLinear(5, 7, bias=True, density=0.5, seed=123)
    opt = torch.optim.SGD(layer.parameters(), lr=1.0)
    for _ in range(3):
        opt.zero_grad()
        layer(torch.randn(8, 5)).pow(2).mean().backward()
        opt.step()
    w, b = seeded_weight_and_bias(123, 7, 5, True)
    assert np.array_equal(layer.weight.numpy().view(np.uint32), w.view(np.uint32))
    assert np.array_equal(layer.bias.numpy().view(np.uint32), b.view(np.uint32))


# --------------------------------------------------------------------------------------------
# Straight-through gradient
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("density,bias", [(0.25, True), (0.5, False), (1.0, True), (0.1, False)])
def test_score_gradient_is_sign_s_times_grad_weff_times_w(density, bias):
    torch.manual_seed(1)
    layer = SparseBinaryLinear(10, 6, bias=bias, density=density, seed=21)
    with torch.no_grad():  # make some scores negative so sign(S) matters
        layer.scores.mul_(torch.where(torch.rand_like(layer.scores) < 0.5, -1.0, 1.0))
    x, target = torch.randn(16, 10), torch.randn(16, 6)

    def loss_fn(weight):
        out = F.linear(x, weight, layer.bias)
        return ((out - target) ** 2).sum() + (out ** 3).mean()

    loss_fn(layer.effective_weight()).backward()
    got = layer.scores.grad.clone()

    w_eff = layer.effective_weight().detach().clone().requires_grad_(True)  # a leaf
    (grad_w_eff,) = torch.autograd.grad(loss_fn(w_eff), w_eff)
    expected = torch.sign(layer.scores.detach()) * (grad_w_eff * layer.weight)

    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    unkept = layer.mask() == 0
    if density < 1.0:
        assert unkept.any()
        # the straight-through estimator sends gradient to positions that are not kept too
        assert (got[unkept] != 0).float().mean() > 0.9
        torch.testing.assert_close(got[unkept], expected[unkept], rtol=1e-5, atol=1e-6)


def test_score_gradient_differs_from_plain_weff_gradient():
    """Guard: the formula is not just dL/dW_eff (the |W| factor and the signs matter)."""
    layer = SparseBinaryLinear(6, 4, density=0.5, seed=2)
    x = torch.randn(5, 6)
    layer(x).sum().backward()
    w_eff = layer.effective_weight().detach().requires_grad_(True)
    (g,) = torch.autograd.grad(F.linear(x, w_eff).sum(), w_eff)
    assert not torch.allclose(layer.scores.grad, g)
    torch.testing.assert_close(layer.scores.grad, torch.sign(layer.scores.detach()) * g * layer.weight)


# --------------------------------------------------------------------------------------------
# Seeded regeneration
# --------------------------------------------------------------------------------------------

def test_splitmix64_seed0_matches_published_reference():
    published = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    assert ref_splitmix64(0, 3) == published
    assert [int(v) for v in splitmix64(0, 0, 3)] == published
    # further outputs and other seeds agree with the reference implementation, and `start` offsets work
    assert [int(v) for v in splitmix64(0, 0, 50)] == ref_splitmix64(0, 50)
    assert [int(v) for v in splitmix64(0, 10, 5)] == ref_splitmix64(0, 15)[10:]
    for seed in (1, 42, 2**63 + 12345, 2**64 - 1):
        assert [int(v) for v in splitmix64(seed, 0, 20)] == ref_splitmix64(seed, 20)


def test_uniform01_uses_top_53_bits():
    ref = ref_splitmix64(99, 10)
    u = uniform01(99, 0, 10)
    assert u.dtype == np.float64
    assert [float(x) for x in u] == [(z >> 11) * 2.0**-53 for z in ref]
    assert np.all((u >= 0) & (u < 1))


@pytest.mark.parametrize("in_features,out_features,bias,seed",
                         [(7, 5, True, 0), (16, 3, False, 2**64 - 1), (1, 9, True, 1234567890123)])
def test_layer_weight_regenerates_from_seed_with_numpy_alone(in_features, out_features, bias, seed):
    layer = SparseBinaryLinear(in_features, out_features, bias=bias, density=0.5, seed=seed)
    w, b = seeded_weight_and_bias(seed, out_features, in_features, bias)
    assert w.dtype == np.float32
    assert np.array_equal(layer.weight.numpy().view(np.uint32), w.view(np.uint32))
    bound = 1.0 / math.sqrt(in_features)
    w2 = uniform_weights(seed, (out_features, in_features), bound)
    assert np.array_equal(w2.view(np.uint32), w.view(np.uint32))
    # written out by hand from the documented formula
    n = in_features * out_features
    ref = ref_splitmix64(seed, n + out_features)
    by_hand = np.array([(2.0 * ((z >> 11) * 2.0**-53) - 1.0) * bound for z in ref], dtype=np.float64).astype(np.float32)
    assert np.array_equal(w.ravel().view(np.uint32), by_hand[:n].view(np.uint32))
    assert np.all(np.abs(w) <= bound)
    if bias:
        assert np.array_equal(layer.bias.numpy().view(np.uint32), b.view(np.uint32))
        assert np.array_equal(b.view(np.uint32), by_hand[n:].view(np.uint32))
    else:
        assert b is None and layer.bias is None
    # the same seed gives the same W; the dense layer shares the stream; another seed differs
    assert torch.equal(SparseBinaryLinear(in_features, out_features, bias=bias, seed=seed).weight, layer.weight)
    assert torch.equal(DenseLinear(in_features, out_features, bias=bias, seed=seed).weight.detach(), layer.weight)
    other = SparseBinaryLinear(in_features, out_features, bias=bias, seed=(seed + 1) & MASK64)
    assert not torch.equal(other.weight, layer.weight)


C_SOURCE = textwrap.dedent(r"""
    #include <stdint.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include <math.h>

    static uint64_t splitmix(uint64_t seed, uint64_t i) {
        uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ULL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }

    int main(int argc, char **argv) {
        uint64_t seed = strtoull(argv[1], NULL, 10);
        long in_f = atol(argv[2]), out_f = atol(argv[3]), total = atol(argv[4]);
        double b = 1.0 / sqrt((double)in_f);
        (void)out_f;
        for (long i = 0; i < total; i++) {
            double u = (double)(splitmix(seed, (uint64_t)i) >> 11) * 0x1p-53;
            float w = (float)((2.0 * u - 1.0) * b);
            uint32_t bits;
            memcpy(&bits, &w, 4);
            printf("%08x\n", bits);
        }
        return 0;
    }
""")


def test_c_implementation_reproduces_weight_bits(tmp_path):
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler")
    src, exe = tmp_path / "gen.c", tmp_path / "gen"
    src.write_text(C_SOURCE)
    build = subprocess.run([compiler, "-O2", "-ffp-contract=off", "-o", str(exe), str(src), "-lm"],
                           capture_output=True, text=True)
    if build.returncode != 0:
        pytest.skip(f"C compiler failed: {build.stderr.strip()[:200]}")
    for seed, in_f, out_f in [(0, 7, 5), (2**64 - 3, 3, 4), (987654321, 10, 2)]:
        total = in_f * out_f + out_f  # weights, then the bias from the same stream
        run = subprocess.run([str(exe), str(seed), str(in_f), str(out_f), str(total)],
                             capture_output=True, text=True, check=True)
        c_bits = np.array([int(line, 16) for line in run.stdout.split()], dtype=np.uint32)
        layer = SparseBinaryLinear(in_f, out_f, bias=True, density=0.5, seed=seed)
        py_bits = np.concatenate([layer.weight.numpy().ravel().view(np.uint32), layer.bias.numpy().view(np.uint32)])
        assert c_bits.shape == py_bits.shape
        assert np.array_equal(c_bits, py_bits)


# --------------------------------------------------------------------------------------------
# Density validation and the sparsity alias
# --------------------------------------------------------------------------------------------

BAD_DENSITIES = [0, 0.0, -0.1, -1, 1.0000001, 2, float("nan"), float("inf"), float("-inf"), "half", "", None, [0.5]]


@pytest.mark.parametrize("bad", BAD_DENSITIES, ids=repr)
def test_bad_density_raises_config_error_with_one_line_message(bad):
    builds = [lambda: SparseBinaryLinear(4, 4, density=bad),
              lambda: check_density(bad),
              lambda: make_linear("sparse_binary", 4, 4, bias=False, density=bad, seed=0)]
    if bad is not None:  # in a ModelConfig, density=None means "the default for the linear kind"
        builds += [lambda: ModelConfig(in_channels=2, out_dim=2, max_len=4, d_model=8, n_heads=2, density=bad),
                   lambda: sbts.create_model("sbt", in_channels=2, out_dim=2, max_len=4, d_model=8, n_heads=2,
                                             density=bad)]
    for build in builds:
        with pytest.raises(ConfigError) as info:
            build()
        message = str(info.value)
        assert message and "\n" not in message
        assert "density" in message
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("good", [1e-6, 0.1, 0.5, 1, 1.0])
def test_good_density_accepted(good):
    assert SparseBinaryLinear(4, 4, density=good).density == float(good)


def test_sparsity_alias():
    base = dict(in_channels=3, out_dim=2, max_len=5, d_model=8, n_heads=2, n_layers=1, d_ff=8)
    cfg = ModelConfig.from_dict({**base, "sparsity": 0.75})
    assert cfg.density == pytest.approx(0.25) and cfg.sparsity == pytest.approx(0.75)
    model = sbts.create_model("sbt", **base, sparsity=0.75)
    assert model.config.density == pytest.approx(0.25)
    for layer in model.linear_layers().values():
        assert layer.density == pytest.approx(0.25)
        assert layer.kept == exact_kept(0.25, layer.in_features * layer.out_features)
    # agreeing density and sparsity are fine
    assert ModelConfig.from_dict({**base, "sparsity": 0.75, "density": 0.25}).density == pytest.approx(0.25)
    assert resolve_density(None, 0.9) == pytest.approx(0.1)
    assert resolve_density(None, 0) == 1.0
    # a dense model keeps every weight: asking it for a sparsity is an error, not a silent no-op
    with pytest.raises(ConfigError, match="dense model keeps every weight"):
        sbts.create_model("dense", **base, sparsity=0.75)
    assert sbts.create_model("dense", **base).config.density == 1.0
    assert ModelConfig(**base).density == 0.5 and ModelConfig(**base, linear="dense").density == 1.0


@pytest.mark.parametrize("build", [
    lambda base: ModelConfig.from_dict({**base, "sparsity": 0.75, "density": 0.5}),
    lambda base: sbts.create_model("sbt", **base, sparsity=0.75, density=0.5),
    lambda base: sbts.create_model("dense", **base, sparsity=0.1, density=0.5),
    lambda base: resolve_density(0.5, 0.75),
    lambda base: ModelConfig.from_dict({**base, "sparsity": 1.0}),
    lambda base: ModelConfig.from_dict({**base, "sparsity": -0.5}),
    lambda base: ModelConfig.from_dict({**base, "sparsity": "lots"}),
    lambda base: ModelConfig.from_dict({**base, "sparsity": float("nan")}),
])
def test_conflicting_or_bad_sparsity_raises(build):
    base = dict(in_channels=3, out_dim=2, max_len=5, d_model=8, n_heads=2, n_layers=1, d_ff=8)
    with pytest.raises(ConfigError) as info:
        build(base)
    assert "\n" not in str(info.value) and "sparsity" in str(info.value)


# --------------------------------------------------------------------------------------------
# Eval-mode caching
# --------------------------------------------------------------------------------------------

def _count_topk_calls(monkeypatch):
    calls = []
    original = linear_module._TopKMask.apply

    def counting(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(linear_module._TopKMask, "apply", counting)
    return calls


def test_eval_cache_reused_until_scores_change(monkeypatch):
    layer = SparseBinaryLinear(8, 6, density=0.25, seed=5)
    calls = _count_topk_calls(monkeypatch)
    x = torch.randn(3, 8)
    with torch.no_grad():
        w1 = layer.effective_weight()
        w2 = layer.effective_weight()
        w3 = layer.effective_weight()
        y1 = layer(x)
    assert len(calls) == 1  # computed once, then reused
    assert w2 is w3 and w1.data_ptr() == w2.data_ptr()
    assert torch.equal(w1, w2)

    # an in-place change to the scores invalidates the cache
    with torch.no_grad():
        layer.scores.copy_(torch.flip(layer.scores, dims=[1]) * torch.linspace(0.5, 2.0, 8))
        w4 = layer.effective_weight()
        y2 = layer(x)
    assert len(calls) == 2
    assert not torch.equal(w4, w1)
    assert not torch.allclose(y1, y2)
    torch.testing.assert_close(w4, layer.effective_weight().detach())  # matches a fresh computation
    fresh = SparseBinaryLinear(8, 6, density=0.25, seed=5)
    with torch.no_grad():
        fresh.scores.copy_(layer.scores)
    assert torch.equal(w4, fresh.effective_weight().detach())


def test_eval_cache_sees_writes_that_bypass_version_counter():
    """`.data` writes and fused optimiser steps do not bump the version counter."""
    layer = SparseBinaryLinear(8, 6, density=0.25, seed=5)
    with torch.no_grad():
        w1 = layer.effective_weight().clone()
    layer.scores.data.copy_(torch.randn(6, 8, generator=torch.Generator().manual_seed(3)))
    with torch.no_grad():
        w2 = layer.effective_weight()
    assert not torch.equal(w1, w2)
    reference = SparseBinaryLinear(8, 6, density=0.25, seed=5)
    reference.scores.data.copy_(layer.scores.data)
    assert torch.equal(w2, reference.effective_weight().detach())


def test_eval_cache_not_used_when_grad_enabled():
    layer = SparseBinaryLinear(8, 6, density=0.5, seed=5)
    with torch.no_grad():
        layer.effective_weight()
    w = layer.effective_weight()
    assert w.requires_grad and w.grad_fn is not None  # training still builds the graph
    layer(torch.randn(2, 8)).sum().backward()
    assert layer.scores.grad is not None
    with torch.inference_mode():
        a = layer.effective_weight()
        b = layer.effective_weight()
    assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------
# Storage declaration
# --------------------------------------------------------------------------------------------

def test_storage_sparse_binary_and_dense():
    sb = SparseBinaryLinear(10, 6, bias=True, density=0.25, seed=0)
    st = sb.storage()
    assert (st.kind, st.shape) == ("sparse_binary_linear", (6, 10))
    assert st.weight_bits == 1 and SparseBinaryLinear.weight_bits == 1
    assert st.positions == 60 and st.kept == 15
    # the bias is regenerated from the seed (0 bits), alpha is one float, the seed 64 bits
    assert st.tensor("bias").count == 6 and st.tensor("bias").bits == 0 and not st.tensor("bias").trainable
    assert st.bits == 60 * 1 + 32 + 64
    assert SparseBinaryLinear(10, 6, bias=False).storage().tensor("bias") is None

    dense = DenseLinear(10, 6, bias=True, seed=0)
    sd = dense.storage()
    assert (sd.kind, sd.shape) == ("dense_linear", (6, 10))
    assert sd.weight_bits == 32 and sd.positions == 60 and sd.kept == 60
    assert sd.tensor("bias").count == 6 and sd.tensor("bias").trainable
    assert sd.bits == 32 * 66
    with torch.no_grad():
        dense.weight[0, :4] = 0.0
    assert dense.storage().kept == 56

    via_factory = make_linear("sparse_binary", 10, 6, bias=False, density=0.1, seed=1)
    assert isinstance(via_factory, SparseBinaryLinear) and via_factory.storage().kept == 6
    assert isinstance(make_linear("dense", 10, 6, bias=False, density=0.1, seed=1), DenseLinear)
    with pytest.raises(ValueError):
        make_linear("ternary", 10, 6, bias=False, density=0.1, seed=1)
