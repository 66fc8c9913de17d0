"""Which input steps can influence which output steps, for the three attention modes.

MultiHeadAttention is built with a dense linear factory; whole models use norm='none' so that only
attention mixes steps. Dependence is read from autograd Jacobians; the attention core is also
compared with references written by hand with explicit -inf masks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import sbts
from sbts.frozen_tensors import derive_seed, kept_count
from sbts.layers import DenseLinear, MultiHeadAttention, fixed_activation_mask

D_MODEL, N_HEADS, T = 8, 2, 6


def dense_factory(seed: int = 0):
    def make(name: str, in_features: int, out_features: int, bias: bool):
        return DenseLinear(in_features, out_features, bias, seed=derive_seed(seed, name))
    return make


def make_mha(mode: str, *, step_t_self: bool = False, qkv_density: float = 0.5, max_len: int = T, seed: int = 0,
             d_model: int = D_MODEL, n_heads: int = N_HEADS) -> MultiHeadAttention:
    torch.manual_seed(0)
    return MultiHeadAttention(d_model, n_heads, dense_factory(seed), mode=mode, step_t_self=step_t_self,
                              qkv_density=qkv_density, max_len=max_len, seed=seed).double()


def dependence(fn, x: torch.Tensor) -> torch.Tensor:
    """(T_out, T_in) matrix of sum |d out[0, i, :] / d x[0, j, :]| for a batch of one."""
    jac = torch.autograd.functional.jacobian(fn, x)  # (1, T, d_out, 1, T, d_in)
    return jac[0, :, :, 0, :, :].abs().sum(dim=(1, 3))


def explicit_attention(mha: MultiHeadAttention, q, k, v, additive_mask: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(dh) + mask) v per head, then out_proj; additive_mask broadcasts to (B, h, T, T)."""
    b, t, d = q.shape
    h, dh = mha.n_heads, d // mha.n_heads
    split = lambda z: z.reshape(b, t, h, dh).permute(0, 2, 1, 3)  # noqa: E731
    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(dh) + additive_mask
    out = torch.softmax(scores, dim=-1) @ split(v)
    return mha.out_proj(out.permute(0, 2, 1, 3).reshape(b, t, d))


def step_t_additive_mask(t: int, self_last: bool, dtype=torch.float64) -> torch.Tensor:
    mask = torch.full((t, t), float("-inf"), dtype=dtype)
    for i in range(t - 1):
        mask[i, i] = 0.0  # past steps attend only to themselves
    mask[t - 1, : t - 1] = 0.0  # the last step attends to every past step
    if self_last:
        mask[t - 1, t - 1] = 0.0
    return mask


def random_input(b=1, t=T, d=D_MODEL, seed=0):
    return torch.randn(b, t, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --------------------------------------------------------------------------------------------
# full
# --------------------------------------------------------------------------------------------

def test_full_every_output_depends_on_every_input():
    mha = make_mha("full")
    dep = dependence(lambda x: mha(x), random_input())
    assert dep.shape == (T, T)
    assert (dep > 1e-8).all()


def test_full_padded_steps_influence_no_valid_output():
    mha = make_mha("full")
    valid = 4
    pad = torch.zeros(1, T, dtype=torch.bool)
    pad[0, valid:] = True
    dep = dependence(lambda x: mha(x, pad), random_input())
    assert torch.all(dep[:valid, valid:] == 0)
    assert (dep[:valid, :valid] > 1e-8).all()
    # padded query rows still read the valid steps (they are simply ignored downstream)
    assert (dep[valid:, :valid] > 1e-8).all()


def test_full_padding_equals_running_the_short_sequence():
    mha = make_mha("full")
    x = random_input(b=2, seed=3)
    pad = torch.zeros(2, T, dtype=torch.bool)
    pad[0, 4:] = True
    pad[1, 5:] = True
    out = mha(x, pad)
    torch.testing.assert_close(out[0, :4], mha(x[:1, :4])[0], atol=1e-10, rtol=0)
    torch.testing.assert_close(out[1, :5], mha(x[1:, :5])[0], atol=1e-10, rtol=0)
    # garbage in padded steps does not matter
    x2 = x.clone()
    x2[0, 4:] = 1e3
    torch.testing.assert_close(mha(x2, pad)[0, :4], out[0, :4], atol=1e-10, rtol=0)


def test_full_matches_explicit_reference_with_and_without_padding():
    mha = make_mha("full")
    x = random_input(b=3, seed=5)
    q, k, v = mha.q_proj(x), mha.k_proj(x), mha.v_proj(x)
    torch.testing.assert_close(mha(x), explicit_attention(mha, q, k, v, torch.zeros(T, T, dtype=x.dtype)),
                               atol=1e-10, rtol=0)
    pad = torch.zeros(3, T, dtype=torch.bool)
    pad[1, 3:] = True
    pad[2, 5:] = True
    additive = torch.zeros(3, 1, T, T, dtype=x.dtype).masked_fill(pad[:, None, None, :], float("-inf"))
    torch.testing.assert_close(mha(x, pad), explicit_attention(mha, q, k, v, additive), atol=1e-10, rtol=0)


def test_full_model_every_output_depends_on_every_input():
    model = sbts.create_model("sbt", in_channels=3, out_dim=2, max_len=T, d_model=16, n_heads=2, n_layers=2,
                              d_ff=16, norm="none", attention="full").double()
    x = torch.randn(1, T, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    dep = dependence(lambda z: model(z), x)
    assert (dep > 1e-8).all()
    pad = torch.zeros(1, T, dtype=torch.bool)
    pad[0, 4:] = True
    dep_pad = dependence(lambda z: model(z, pad), x)
    assert torch.all(dep_pad[:4, 4:] == 0)
    assert (dep_pad[:4, :4] > 1e-8).all()


# --------------------------------------------------------------------------------------------
# step_t
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("step_t_self", [False, True])
def test_step_t_dependence_pattern(step_t_self):
    mha = make_mha("step_t", step_t_self=step_t_self)
    dep = dependence(lambda x: mha(x), random_input())
    expected = torch.zeros(T, T, dtype=torch.bool)
    for i in range(T - 1):
        expected[i, i] = True
    expected[T - 1, :] = True  # the last step reads every past step, and its own query
    assert torch.equal(dep > 1e-10, expected)
    assert torch.all(dep[~expected] == 0)


@pytest.mark.parametrize("step_t_self", [False, True])
def test_step_t_last_row_reads_last_key_value_only_if_self(step_t_self):
    mha = make_mha("step_t", step_t_self=step_t_self)
    x = random_input(b=2, seed=1)
    base = mha(x)

    def perturb_last(module, inputs, output):
        output = output.clone()
        output[:, -1] += 5.0 * torch.randn_like(output[:, -1])
        return output

    for proj in (mha.k_proj, mha.v_proj):
        handle = proj.register_forward_hook(perturb_last)
        try:
            out = mha(x)
        finally:
            handle.remove()
        # past rows never see the last key/value
        torch.testing.assert_close(out[:, :-1], base[:, :-1], atol=0, rtol=0)
        if step_t_self:
            assert (out[:, -1] - base[:, -1]).abs().max() > 1e-3
        else:
            torch.testing.assert_close(out[:, -1], base[:, -1], atol=0, rtol=0)

    # a perturbed last *query* always changes the last row (it is the row that attends)
    handle = mha.q_proj.register_forward_hook(perturb_last)
    try:
        out = mha(x)
    finally:
        handle.remove()
    assert (out[:, -1] - base[:, -1]).abs().max() > 1e-3
    torch.testing.assert_close(out[:, :-1], base[:, :-1], atol=0, rtol=0)


@pytest.mark.parametrize("step_t_self", [False, True])
@pytest.mark.parametrize("t,n_heads", [(T, 2), (2, 2), (9, 4), (5, 1)])
def test_step_t_fast_path_equals_explicit_masked_reference(step_t_self, t, n_heads):
    mha = make_mha("step_t", step_t_self=step_t_self, n_heads=n_heads, max_len=t).float()
    x = torch.randn(3, t, D_MODEL, generator=torch.Generator().manual_seed(t))
    q, k, v = mha.q_proj(x), mha.k_proj(x), mha.v_proj(x)
    reference = explicit_attention(mha, q, k, v, step_t_additive_mask(t, step_t_self, torch.float32))
    torch.testing.assert_close(mha(x), reference, atol=1e-6, rtol=0)
    # and a different mask (the other step_t_self value, or full attention) gives a different result
    other = explicit_attention(mha, q, k, v, step_t_additive_mask(t, not step_t_self, torch.float32))
    assert (other[:, -1] - reference[:, -1]).abs().max() > 1e-4
    full = explicit_attention(mha, q, k, v, torch.zeros(t, t))
    assert (full - reference).abs().max() > 1e-4


def test_step_t_reference_mask_is_the_documented_pattern():
    m = step_t_additive_mask(4, False)
    allowed = torch.isfinite(m)
    assert allowed.tolist() == [[True, False, False, False],
                                [False, True, False, False],
                                [False, False, True, False],
                                [True, True, True, False]]
    assert torch.isfinite(step_t_additive_mask(4, True))[3].all()


@pytest.mark.parametrize("step_t_self", [False, True])
def test_step_t_model_dependence(step_t_self):
    model = sbts.create_model("dense", in_channels=3, out_dim=2, max_len=T, d_model=16, n_heads=2, n_layers=2,
                              d_ff=16, norm="none", attention="step_t", step_t_self=step_t_self).double()
    x = torch.randn(1, T, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    dep = dependence(lambda z: model(z), x)
    off_diagonal_past = ~torch.eye(T, dtype=torch.bool)
    off_diagonal_past[T - 1] = False
    assert torch.all(dep[off_diagonal_past] == 0)  # past outputs see only their own step
    assert (torch.diagonal(dep) > 1e-8).all()
    assert (dep[T - 1] > 1e-8).all()  # the last output sees every step, itself included (residual)


def test_step_t_sbt_model_dependence():
    model = sbts.create_model("sbt", in_channels=3, out_dim=2, max_len=T, d_model=16, n_heads=2, n_layers=2,
                              d_ff=16, norm="none", attention="step_t").double()
    x = torch.randn(1, T, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    dep = dependence(lambda z: model(z), x)
    assert torch.all(dep[: T - 1] * (1 - torch.eye(T, dtype=dep.dtype)[: T - 1]) == 0)
    assert (dep[T - 1] > 1e-8).all()


def test_step_t_rejects_padding_and_short_input():
    mha = make_mha("step_t")
    x = random_input()
    with pytest.raises(ValueError):
        mha(x, torch.zeros(1, T, dtype=torch.bool))
    with pytest.raises(ValueError):
        mha(random_input(t=1))
    # with the last step attending to itself, one step is enough: the output is out_proj(v)
    mha_self = make_mha("step_t", step_t_self=True)
    x1 = random_input(t=1)
    torch.testing.assert_close(mha_self(x1), mha_self.out_proj(mha_self.v_proj(x1)))
    model = sbts.create_model("sbt", in_channels=3, out_dim=2, max_len=T, d_model=8, n_heads=2, n_layers=1,
                              d_ff=8, norm="none", attention="step_t")
    with pytest.raises(ValueError):
        model(torch.randn(2, T, 3), torch.zeros(2, T, dtype=torch.bool))
    with pytest.raises(ValueError):
        model(torch.randn(2, 1, 3))


# --------------------------------------------------------------------------------------------
# qkv_mask
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("density", [0.1, 0.25, 0.5, 0.37, 1.0])
@pytest.mark.parametrize("max_len,d_model", [(6, 8), (7, 6), (10, 4)])
def test_qkv_masks_keep_exact_count(density, max_len, d_model):
    mha = make_mha("qkv_mask", qkv_density=density, max_len=max_len, d_model=d_model)
    per_step = math.ceil(density * d_model - 1e-9)  # every step keeps the same number of activations
    assert per_step == kept_count(density, d_model)
    for name in ("q_mask", "k_mask", "v_mask"):
        mask = getattr(mha, name)
        assert mask.shape == (max_len, d_model)  # no batch dimension: one mask for every sample
        assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}
        assert mask.sum(1).tolist() == [per_step] * max_len
    assert fixed_activation_mask(123, max_len, d_model, density).sum(1).tolist() == [per_step] * max_len


def test_qkv_mask_rows_do_not_depend_on_max_len():
    short, long = fixed_activation_mask(9, 5, 8, 0.5), fixed_activation_mask(9, 40, 8, 0.5)
    assert torch.equal(short, long[:5])


def test_qkv_masks_distinct_deterministic_and_seeded():
    a = make_mha("qkv_mask", seed=11, max_len=10)
    b = make_mha("qkv_mask", seed=11, max_len=10)
    c = make_mha("qkv_mask", seed=12, max_len=10)
    assert not torch.equal(a.q_mask, a.k_mask)
    assert not torch.equal(a.q_mask, a.v_mask)
    assert not torch.equal(a.k_mask, a.v_mask)
    for name in ("q_mask", "k_mask", "v_mask"):
        assert torch.equal(getattr(a, name), getattr(b, name))
        assert not torch.equal(getattr(a, name), getattr(c, name))
        assert name in dict(a.named_buffers())
        assert name not in a.state_dict()  # regenerated from the seed, never stored
    assert not any("mask" in name for name, _ in a.named_parameters())
    # regenerated from the seed alone
    assert torch.equal(a.q_mask.float(), fixed_activation_mask(derive_seed(11, "q_mask"), 10, D_MODEL, 0.5))


def test_qkv_masks_rebuilt_identically_in_models():
    kwargs = dict(in_channels=3, out_dim=2, max_len=T, d_model=8, n_heads=2, n_layers=2, d_ff=8,
                  attention="qkv_mask", qkv_density=0.3)
    m1, m2 = sbts.create_model("sbt", **kwargs, seed=5), sbts.create_model("sbt", **kwargs, seed=5)
    m3 = sbts.create_model("sbt", **kwargs, seed=6)
    for i in range(2):
        for name in ("q_mask", "k_mask", "v_mask"):
            assert torch.equal(getattr(m1.layers[i].attention, name), getattr(m2.layers[i].attention, name))
            assert not torch.equal(getattr(m1.layers[i].attention, name), getattr(m3.layers[i].attention, name))
    # the two layers have different masks
    assert not torch.equal(m1.layers[0].attention.q_mask, m1.layers[1].attention.q_mask)
    # dense and SBT of the same config share the masks
    d = sbts.create_model("dense", **kwargs, seed=5)
    assert torch.equal(d.layers[0].attention.v_mask, m1.layers[0].attention.v_mask)


@pytest.mark.parametrize("t", [T, 4])
def test_qkv_mask_output_equals_reference_with_masked_qkv(t):
    mha = make_mha("qkv_mask", qkv_density=0.4, max_len=T, seed=3)
    x = random_input(b=3, t=t, seed=7)
    q = mha.q_proj(x) * mha.q_mask[:t]
    k = mha.k_proj(x) * mha.k_mask[:t]
    v = mha.v_proj(x) * mha.v_mask[:t]
    reference = explicit_attention(mha, q, k, v, torch.zeros(t, t, dtype=x.dtype))
    torch.testing.assert_close(mha(x), reference, atol=1e-10, rtol=0)
    # the masks matter: unmasked attention differs
    unmasked = explicit_attention(mha, mha.q_proj(x), mha.k_proj(x), mha.v_proj(x), torch.zeros(t, t, dtype=x.dtype))
    assert (unmasked - reference).abs().max() > 1e-3
    # and with a padding mask
    pad = torch.zeros(3, t, dtype=torch.bool)
    pad[0, t - 1:] = True
    additive = torch.zeros(3, 1, t, t, dtype=x.dtype).masked_fill(pad[:, None, None, :], float("-inf"))
    torch.testing.assert_close(mha(x, pad), explicit_attention(mha, q, k, v, additive), atol=1e-10, rtol=0)


def test_qkv_mask_same_for_every_sample_in_a_batch():
    mha = make_mha("qkv_mask", qkv_density=0.3, seed=2)
    x = random_input(b=4, seed=9)
    batched = mha(x)
    for i in range(4):
        torch.testing.assert_close(batched[i:i + 1], mha(x[i:i + 1]), atol=1e-12, rtol=0)
    # identical samples give identical outputs (no per-sample randomness)
    same = x[:1].repeat(3, 1, 1)
    out = mha(same)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    # and repeated calls are deterministic
    assert torch.equal(mha(x), batched)


def test_qkv_mask_zeroed_entries_have_no_influence():
    """A V entry that the mask removes cannot influence any output."""
    mha = make_mha("qkv_mask", qkv_density=0.5, seed=4)
    x = random_input(seed=1)
    removed = (mha.q_mask == 0) & (mha.k_mask == 0) & (mha.v_mask == 0)
    assert removed.any()
    hook_values = {}

    def perturb_removed(module, inputs, output):
        out = output.clone()
        out[0][removed] += 100.0
        hook_values["hit"] = True
        return out

    base = mha(x)
    handles = [p.register_forward_hook(perturb_removed) for p in (mha.q_proj, mha.k_proj, mha.v_proj)]
    try:
        out = mha(x)
    finally:
        for h in handles:
            h.remove()
    assert hook_values["hit"]
    torch.testing.assert_close(out, base, atol=0, rtol=0)


def test_qkv_mask_input_longer_than_max_len_raises():
    mha = make_mha("qkv_mask", max_len=T)
    mha(random_input(t=T))  # exactly max_len is fine
    with pytest.raises(ValueError, match="max_len"):
        mha(random_input(t=T + 1))
    model = sbts.create_model("sbt", in_channels=3, out_dim=2, max_len=T, d_model=8, n_heads=2, n_layers=1,
                              d_ff=8, norm="none", attention="qkv_mask", pos_encoding="none")
    with pytest.raises(ValueError, match="max_len"):
        model(torch.randn(1, T + 2, 3))


def test_modes_give_different_outputs():
    x = random_input(b=2, seed=8)
    outs = {mode: make_mha(mode, seed=1)(x) for mode in ("full", "step_t", "qkv_mask")}
    assert not torch.allclose(outs["full"], outs["step_t"])
    assert not torch.allclose(outs["full"], outs["qkv_mask"])
    assert np.isfinite(torch.cat(list(outs.values())).detach().numpy()).all()
