"""The layer kinds: for each kind a layer declares, what it stores and how it is exported, read, run and counted.

A layer's ``storage().kind`` names one ``LayerKind`` below, and that name is what an artifact's layer
entry records. The artifact writer (``sbts.export.artifact``), the artifact reader
(``sbts.runtime.artifact``), the numpy forward (``sbts.runtime.network``) and the paper accounting
(``sbts.compression.accounting``) all look kinds up here and nowhere else.

Adding a kind (say a per-step LayerNorm over features, ``norm: layer``) takes two things: its torch
module in ``sbts/layers/norms.py`` (built by ``make_norm`` for the new value, which ``sbts.config``
lists among the norms), whose ``storage()`` declares the new kind's name, and one ``LayerKind`` entry
in ``KINDS`` with its exporter, reader, numpy forward, paper rule and the config option value that
selects it. Nothing else dispatches on kinds.

Torch-free (numpy and torch-free sbts modules only), so that the runtime can read the table: the
exporters only call methods of the module they are given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sbts.config import ModelConfig
from sbts.errors import ConfigError
from sbts.frozen_tensors import activation_mask, seeded_weight_and_bias, sinusoidal_table
from sbts.layers.storage import FLOAT_BITS, LayerCount, LayerStorage

# The keys under which a sparse-binary layer hands over its 0/1 mask and its alpha (export) and gets them
# back (read): the artifact encodes the masks and pools masks and alphas of all layers, so no kind knows the
# file's encoding.
MASK = "mask"
ALPHA = "alpha"
NO_LAYER = "none"  # the option value (norm, pos_encoding) that selects no layer at all
NORM_EPS = 1e-5  # torch's BatchNorm1d and LayerNorm default, which the model uses
PAPER_LEARNABLE_TABLE_ROWS = 1024  # the official dense model allocates 1024 positions whatever the window
PAPER_LAYER_NORM_DENSITY = 0.5  # the official SubnetLayerNorm keeps half of its gains
QKV_PROJECTIONS = ("q_proj", "k_proj", "v_proj")

Exported = tuple[dict[str, Any], dict[str, np.ndarray]]  # (layer entry, stored tensors by name)
# (layer name, torch module, its declaration, float dtype of the stored floats) -> what it stores.
Exporter = Callable[[str, Any, LayerStorage, type[np.floating]], Exported]
# (layer name, layer entry, stored tensors, model config) -> the network's tensors by name.
Materializer = Callable[[str, dict[str, Any], Mapping[str, np.ndarray], ModelConfig], dict[str, np.ndarray]]
# (the network's checked tensor lookup, layer name, activations (B, T, d), padding mask) -> activations.
Forward = Callable[[Callable[[str], np.ndarray], str, np.ndarray, np.ndarray | None], np.ndarray]
# (layer name, its declaration, model config, whether the model is sparse-binary) -> its paper row.
PaperRule = Callable[[str, LayerStorage, ModelConfig, bool], LayerCount]


@dataclass(frozen=True, kw_only=True)
class LayerKind:
    """One kind of layer: the single place that says how every part of sbts handles it.

    ``forward`` is None for the linears and the attention core: the numpy forward runs every linear
    and every attention block with its own generic code, which only needs the tensors ``read`` gives; and
    for rotary positions (``rotary``), which that attention code applies to queries and keys.
    """

    name: str  # as declared by the layer and recorded in artifacts (never rename: old artifacts name it)
    stores: str  # what an artifact keeps for it, in words
    export: Exporter
    read: Materializer
    paper: PaperRule
    forward: Forward | None = None
    option: tuple[str, str] | None = None  # the ModelConfig (field, value) that selects it, where one does
    mixes_steps: bool = False  # its forward mixes a window's steps: whole unpadded windows, no row computed alone
    rotary: bool = False  # a positional kind that turns queries and keys in the attention instead of adding a table


# --- exporters: torch module -> layer entry and stored tensors -------------------------------------------

def _array(tensor: Any, dtype: type[np.floating]) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(dtype)


def _export_sparse_binary_linear(name: str, module: Any, st: LayerStorage, dtype: type[np.floating]) -> Exported:
    entry = {"seed": str(module.seed), "kept": st.kept, "bias": module.bias is not None}
    # alpha stays float32 whatever the float dtype: it is one value and scales every weight.
    return entry, {MASK: module.mask().cpu().numpy(), ALPHA: _array(module.alpha().reshape(1), np.float32)}


def _export_floats(*keys: str) -> Exporter:
    """The module's float tensors ``keys`` (those it has), at the export's float dtype."""
    def take(name: str, module: Any, st: LayerStorage, dtype: type[np.floating]) -> Exported:
        tensors = {f"{name}.{key}": _array(getattr(module, key), dtype) for key in keys
                   if getattr(module, key, None) is not None}
        return {}, tensors
    return take


def _export_nothing(name: str, module: Any, st: LayerStorage, dtype: type[np.floating]) -> Exported:
    return {}, {}  # regenerated from the model config


def _export_attention(name: str, module: Any, st: LayerStorage, dtype: type[np.floating]) -> Exported:
    if not module.mask_seeds:
        return {}, {}
    return {"mask_seeds": {key: str(seed) for key, seed in module.mask_seeds.items()}}, {}


# --- readers: layer entry and stored tensors -> the network's tensors ---------------------------------------

def _read_sparse_binary_linear(name: str, entry: dict[str, Any], stored: Mapping[str, np.ndarray],
                               config: ModelConfig) -> dict[str, np.ndarray]:
    out_features, in_features = entry["shape"]
    mask = stored[MASK]
    if int(mask.sum()) != entry["kept"]:
        raise ValueError(f"mask keeps {int(mask.sum())} weights, the layer declares {entry['kept']}")
    weight, bias = seeded_weight_and_bias(int(entry["seed"]), out_features, in_features, entry["bias"])
    alpha = stored[ALPHA].astype(np.float32)
    sign = np.where(weight >= 0, np.float32(1.0), np.float32(-1.0))
    tensors = {f"{name}.weight": sign * (alpha * mask)}  # the same float32 products as the torch layer
    if bias is not None:
        tensors[f"{name}.bias"] = bias
    return tensors


def _read_floats(*keys: str) -> Materializer:
    """Float tensors stored as they are; each must have the layer's shape (a bias: its first dimension)."""
    def take(name: str, entry: dict[str, Any], stored: Mapping[str, np.ndarray],
             config: ModelConfig) -> dict[str, np.ndarray]:
        out = {}
        for key in keys:
            if f"{name}.{key}" not in stored and key == "bias":  # a linear without bias
                continue
            value = stored[f"{name}.{key}"]
            shape = tuple(entry["shape"][:1] if key == "bias" else entry["shape"])
            if value.shape != shape:
                raise ValueError(f"{key} has shape {value.shape}, the layer needs {shape}")
            out[f"{name}.{key}"] = value.astype(np.float32)
        return out
    return take


def _read_nothing(name: str, entry: dict[str, Any], stored: Mapping[str, np.ndarray],
                  config: ModelConfig) -> dict[str, np.ndarray]:
    return {}


def _read_sinusoidal(name: str, entry: dict[str, Any], stored: Mapping[str, np.ndarray],
                     config: ModelConfig) -> dict[str, np.ndarray]:
    return {f"{name}.table": sinusoidal_table(config.max_len, config.d_model)}


def _read_attention(name: str, entry: dict[str, Any], stored: Mapping[str, np.ndarray],
                    config: ModelConfig) -> dict[str, np.ndarray]:
    """Q/K/V masks regenerated from their seeds; their size and kept fraction come from the model config."""
    if config.attention != "qkv_mask":
        return {}
    seeds = entry["mask_seeds"]
    if set(seeds) != {"q_mask", "k_mask", "v_mask"}:
        raise ValueError(f"needs the seeds of q_mask, k_mask and v_mask, has {sorted(seeds)}")
    return {f"{name}.{key}": activation_mask(int(seed), config.max_len, config.d_model, config.qkv_density)
            for key, seed in seeds.items()}


# --- numpy forward of the norms and positional encodings --------------------------------------------------

def _forward_batch_norm(tensor: Callable[[str], np.ndarray], name: str, h: np.ndarray,
                        padding_mask: np.ndarray | None) -> np.ndarray:
    """Eval mode: the running statistics, per channel."""
    scale = tensor(f"{name}.weight") / np.sqrt(tensor(f"{name}.running_var") + np.float32(NORM_EPS))
    shift = tensor(f"{name}.bias") - tensor(f"{name}.running_mean") * scale
    out = h * scale + shift
    if padding_mask is not None:
        out[padding_mask] = 0.0  # as MaskedBatchNorm: padded outputs are zero
    return out


def _forward_layer_time_norm(tensor: Callable[[str], np.ndarray], name: str, h: np.ndarray,
                             padding_mask: np.ndarray | None) -> np.ndarray:
    """Every channel normalised across the time axis; weight and bias per step."""
    mean = h.mean(axis=1, keepdims=True)
    centred = h - mean
    variance = np.mean(centred * centred, axis=1, keepdims=True)
    normalised = centred / np.sqrt(variance + np.float32(NORM_EPS))
    return normalised * tensor(f"{name}.weight")[:, None] + tensor(f"{name}.bias")[:, None]


def _forward_layer_norm(tensor: Callable[[str], np.ndarray], name: str, h: np.ndarray,
                        padding_mask: np.ndarray | None) -> np.ndarray:
    """The features of every step normalised on their own; padded outputs are zero."""
    mean = h.mean(axis=-1, keepdims=True)
    centred = h - mean
    variance = np.mean(centred * centred, axis=-1, keepdims=True)
    out = centred / np.sqrt(variance + np.float32(NORM_EPS)) * tensor(f"{name}.weight") + tensor(f"{name}.bias")
    if padding_mask is not None:
        out[padding_mask] = 0.0
    return out


def _forward_positional(tensor: Callable[[str], np.ndarray], name: str, h: np.ndarray,
                        padding_mask: np.ndarray | None) -> np.ndarray:
    return h + tensor(f"{name}.table")[: h.shape[1]]


# --- paper accounting (paper-spec §6.1, §6.2; the rules are described in sbts.compression.accounting) --------

def _trained(st: LayerStorage) -> int:
    """The dense counter's rule: every trained parameter (PyTorch's ``named_parameters``)."""
    return sum(t.count for t in st.tensors if t.trainable)


def _paper_linear_flops(name: str, st: LayerStorage, config: ModelConfig) -> int:
    """Q, K and V at all w positions, every other linear at ONE position."""
    out_features, in_features = st.shape
    positions = config.max_len if name.rsplit(".", 1)[-1] in QKV_PROJECTIONS else 1
    return in_features * out_features * positions


def _paper_sparse_binary_linear(name: str, st: LayerStorage, config: ModelConfig, sparse_model: bool) -> LayerCount:
    # The official counters use the configured kept fraction k, truncated per layer: int(k * n)
    # non-zeros and int(k * dense FLOPs), whatever the mask actually keeps.
    return LayerCount(name, st.kind, st.shape, positions=st.positions, kept=st.kept, params=st.positions,
                      nonzero=int(config.density * st.positions), bits=st.positions,
                      flops=int(config.density * _paper_linear_flops(name, st, config)))


def _paper_dense_linear(name: str, st: LayerStorage, config: ModelConfig, sparse_model: bool) -> LayerCount:
    params = st.positions + _trained(st)
    return LayerCount(name, st.kind, st.shape, positions=st.positions, kept=st.kept, params=params, nonzero=params,
                      bits=FLOAT_BITS * params, flops=_paper_linear_flops(name, st, config))


def _paper_batch_norm(name: str, st: LayerStorage, config: ModelConfig, sparse_model: bool) -> LayerCount:
    params = st.tensor("weight").count if sparse_model else _trained(st)  # a sparse model: the gain only
    return LayerCount(name, st.kind, st.shape, params=params, nonzero=params, bits=FLOAT_BITS * params)


def _paper_layer_time_norm(name: str, st: LayerStorage, config: ModelConfig, sparse_model: bool) -> LayerCount:
    values = config.d_model * config.max_len
    if sparse_model:  # counted as the official SubnetLayerNorm: 1 bit per gain, half of them kept
        gains = st.tensor("weight").count
        return LayerCount(name, st.kind, st.shape, params=gains, nonzero=int(PAPER_LAYER_NORM_DENSITY * gains),
                          bits=gains, flops=PAPER_LAYER_NORM_DENSITY * values)
    params = _trained(st)
    return LayerCount(name, st.kind, st.shape, params=params, nonzero=params, bits=FLOAT_BITS * params,
                      flops=2 * values)


def _paper_layer_norm(name: str, st: LayerStorage, config: ModelConfig, sparse_model: bool) -> LayerCount:
    """Not in the paper: counted as its batch norms are (a sparse model keeps the gain), plus the normalisation
    of every value (it cannot be folded into the next linear as an eval-mode batch norm can)."""
    row = _paper_batch_norm(name, st, config, sparse_model)
    row.flops = 2 * config.d_model * config.max_len
    return row


def _paper_rotary(name: str, st: LayerStorage, config: ModelConfig, sparse_model: bool) -> LayerCount:
    """Not in the paper: two multiplications per query and key value at every step (the sin and cos terms)."""
    return LayerCount(name, st.kind, st.shape, flops=2 * 2 * config.max_len * config.d_model)


def _paper_sinusoidal(name: str, st: LayerStorage, config: ModelConfig, sparse_model: bool) -> LayerCount:
    return LayerCount(name, st.kind, st.shape, flops=config.max_len * config.d_model)


def _paper_learnable(name: str, st: LayerStorage, config: ModelConfig, sparse_model: bool) -> LayerCount:
    if sparse_model:  # the official sparse model's size counter only visits modules with weights
        return LayerCount(name, st.kind, st.shape)
    params = PAPER_LEARNABLE_TABLE_ROWS * config.d_model
    return LayerCount(name, st.kind, st.shape, params=params, nonzero=params, bits=FLOAT_BITS * params)


def _paper_attention(name: str, st: LayerStorage, config: ModelConfig, sparse_model: bool) -> LayerCount:
    w, d = config.max_len, config.d_model
    h, dh, mode = st.details["n_heads"], st.details["head_dim"], st.details["mode"]
    if mode == "step_t":
        core = w * d + h * ((w - 1) * dh + w + (w - 1) * dh)
    elif mode == "qkv_mask":
        a = st.details["qkv_density"]
        kept_steps = math.floor(w * a)
        core = w * d * a + 3 * w * d + h * (kept_steps ** 2 * dh + w ** 2 + w * kept_steps * dh)
    else:
        core = w * d + h * (w * w * dh + w * w + w * w * dh)
    return LayerCount(name, st.kind, st.shape, flops=core)


# --- the table ---------------------------------------------------------------------------------------------

KINDS: dict[str, LayerKind] = {kind.name: kind for kind in (
    LayerKind(name="sparse_binary_linear",
              stores="its 0/1 mask (encoded), alpha and the 64-bit seed that regenerates sign(W) and the frozen bias",
              export=_export_sparse_binary_linear, read=_read_sparse_binary_linear, paper=_paper_sparse_binary_linear,
              option=("linear", "sparse_binary")),
    LayerKind(name="dense_linear", stores="its float weight and bias",
              export=_export_floats("weight", "bias"), read=_read_floats("weight", "bias"), paper=_paper_dense_linear,
              option=("linear", "dense")),
    LayerKind(name="batch_norm", stores="its float weight, bias, running_mean and running_var, per channel",
              export=_export_floats("weight", "bias", "running_mean", "running_var"),
              read=_read_floats("weight", "bias", "running_mean", "running_var"), paper=_paper_batch_norm,
              forward=_forward_batch_norm, option=("norm", "batch")),
    LayerKind(name="layer_time_norm", stores="its float weight and bias, per step",
              export=_export_floats("weight", "bias"), read=_read_floats("weight", "bias"),
              paper=_paper_layer_time_norm, forward=_forward_layer_time_norm, option=("norm", "layer_time"),
              mixes_steps=True),
    LayerKind(name="layer_norm", stores="its float weight and bias, per channel",
              export=_export_floats("weight", "bias"), read=_read_floats("weight", "bias"), paper=_paper_layer_norm,
              forward=_forward_layer_norm, option=("norm", "layer")),
    LayerKind(name="positional_rope", stores="nothing: the rotations are recomputed from the positions",
              export=_export_nothing, read=_read_nothing, paper=_paper_rotary, option=("pos_encoding", "rope"),
              rotary=True),
    LayerKind(name="positional_learnable", stores="its float table",
              export=_export_floats("table"), read=_read_floats("table"), paper=_paper_learnable,
              forward=_forward_positional, option=("pos_encoding", "learnable")),
    LayerKind(name="positional_sinusoidal", stores="nothing: the table is recomputed from max_len and d_model",
              export=_export_nothing, read=_read_sinusoidal, paper=_paper_sinusoidal,
              forward=_forward_positional, option=("pos_encoding", "sinusoidal")),
    LayerKind(name="attention", stores="the seeds of its Q/K/V activation masks under qkv_mask attention, else nothing",
              export=_export_attention, read=_read_attention, paper=_paper_attention),
)}
_BY_OPTION = {kind.option: kind for kind in KINDS.values() if kind.option is not None}


def layer_kind(name: Any) -> LayerKind:
    """The kind called ``name``; a ValueError naming it if there is none."""
    kind = KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise ValueError(f"unknown layer kind {name!r} (known: {', '.join(sorted(KINDS))})")
    return kind


def kind_for_option(option: str, value: str) -> LayerKind | None:
    """The kind a ModelConfig option value selects (``kind_for_option("norm", "batch")``); None for ``none``."""
    if value == NO_LAYER:
        return None
    kind = _BY_OPTION.get((option, value))
    if kind is None:
        raise ConfigError(f"no layer kind is selected by {option}={value!r}")
    return kind
