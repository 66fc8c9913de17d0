"""Seed artifacts and the invalid edits made to them, each re-saved with its checksum recomputed.

The checksum finds corruption, not edits: whoever changes a file can recompute it. So the reader's own checks
are what stands between an edited file and a wrong model. Every edit here breaks an invariant of the format (a
size beyond the config's limits, a count that disagrees with a mask, a negative index, a non-finite tensor,
alpha <= 0, a scaler std <= 0, an integer tensor, a layer the config does not make, another task's state, a
document nested deep...). An edited file must be refused with one line, or compute exactly what the original
computes (``targets.semantic_target``).

Edits that describe another valid model (step_t attention for full, another window, another density) are
tampering, not invalid files: no reader can tell them from a file exported so, and the optional signature
(``SBTS_SIGNING_KEY``) is what refuses them. They are not made here.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import numpy as np

Document = dict[str, Any]
Tensors = dict[str, np.ndarray]
Edit = Callable[[Document, Tensors, np.random.Generator], str]  # edits in place, returns what it did

SIZE_FIELDS = ("in_channels", "out_dim", "max_len", "d_model", "n_heads", "n_layers", "d_ff")
STORED_SIZE_FIELDS = ("in_channels", "out_dim", "d_model", "n_heads", "n_layers", "d_ff")  # in every layer's shape
CHOICE_FIELDS = ("linear", "attention", "norm", "pos_encoding", "head_activation")
NOT_A_CHOICE = ("", "unknown", "Dense", 3, None, True, ["full"])  # no option's value
LAYER_KEYS = ("kept", "alpha_index", "mask_offset", "mask_bytes", "seed", "shape", "bias", "kind", "mask_encoding")
TASKS = ("classification", "anomaly", "forecasting", "regression", "")
NOT_A_SEED = ("-5", "x", 7, None, "9" * 25, "")
OPTIONAL_STATE_KEYS = ("threshold",)  # a detector exported without one is valid: its absence is no invalid edit
DEEP_NESTING = 900  # below json's own recursion limit when writing, deep enough to hurt a recursive reader
# Values that break a field of one type or another: negative, zero, huge, not a number, the wrong type.
BAD_NUMBERS = (-1, 0, -(2**63), 2**40, 10**6, 100_000, 1.5, float("nan"), float("inf"), "7", None, True, [3], {})


def seed_artifacts() -> dict[str, bytes]:
    """One small model per task and model kind, exported as ``sbts export`` would (needs torch)."""
    import torch

    import sbts
    from sbts.data.preprocessing import ChannelScaler
    from sbts.export.artifact import build_artifact
    from sbts.runtime.artifact import artifact_bytes

    small = dict(in_channels=3, max_len=8, d_model=8, n_heads=2, n_layers=2, d_ff=16)
    formulation = {"target": "change", "input_norm": "window"}
    threshold = {"method": "percentile", "value": 1.5, "parameters": {"contamination": 0.01, "quantile": 0.99},
                 "fitted_on": "validation scores", "uses_test_data": False, "description": "score > 1.5"}
    kinds = {
        "classification-sbt": ("sbt", dict(out_dim=4, attention="qkv_mask", norm="batch", density=0.25),
                               "classification", {"classes": list("abcd")}),
        "classification-dense": ("dense", dict(out_dim=4, pos_encoding="learnable", linear_bias=True),
                                 "classification", {"classes": list("abcd")}),
        "anomaly-sbt": ("sbt", dict(out_dim=3, attention="step_t", norm="none", pos_encoding="rope"), "anomaly",
                        {"threshold": threshold}),
        "forecasting-dense": ("dense", dict(out_dim=3, attention="step_t", norm="layer_time", head_activation="none"),
                              "forecasting", {"formulation": formulation, "columns": list("xyz")}),
    }
    scaler = ChannelScaler(np.array([0.5, -1.0, 2.0]), np.array([1.5, 0.25, 3.0]))
    seeds = {}
    torch.manual_seed(0)
    for name, (model_name, options, task, state) in kinds.items():
        model = sbts.create_model(model_name, **small, **options)
        with torch.no_grad():  # trained-looking scores and weights, not the initial ones
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.1)
        document, tensors = build_artifact(model.eval(), task=task, inference_state=state, scaler=scaler)
        seeds[name] = artifact_bytes(document, tensors)
    return seeds


def parts(data: bytes) -> tuple[Document, Tensors]:
    from sbts.runtime.artifact import load_artifact_bytes

    artifact = load_artifact_bytes(data, "seed")
    return copy.deepcopy(artifact.document), {name: np.array(value) for name, value in artifact.tensors.items()}


def _pick(rng: np.random.Generator, options):
    options = list(options)
    return options[int(rng.integers(len(options)))]


def _bad_number(rng: np.random.Generator) -> Any:
    return _pick(rng, BAD_NUMBERS)


def _of_another_type(value: Any, rng: np.random.Generator) -> Any:
    """A value no field holding ``value`` accepts: of another JSON type, or a number that is not finite."""
    if isinstance(value, bool):
        return _pick(rng, ("yes", None, 2))
    if isinstance(value, (int, float)):  # no string: a text field garbled twice would be text again
        return _pick(rng, (None, [3], float("nan"), float("inf")))
    if isinstance(value, str):
        return _pick(rng, (7, None, ["a"], 1.5))
    if isinstance(value, list):
        return _pick(rng, ({}, None, "a,b"))
    return _pick(rng, ([], None, 3))


def config_size(document: Document, tensors: Tensors, rng: np.random.Generator) -> str:
    field, value = _pick(rng, SIZE_FIELDS), _bad_number(rng)
    document["model"][field] = value
    return f"model.{field} = {value!r}"


def config_off_by_some(document: Document, tensors: Tensors, rng: np.random.Generator) -> str:
    field = _pick(rng, STORED_SIZE_FIELDS)
    step = int(_pick(rng, (-2, -1, 1, 2, 8)))
    document["model"][field] += step
    return f"model.{field} += {step}"


def config_choice(document: Document, tensors: Tensors, rng: np.random.Generator) -> str:
    field, value = _pick(rng, CHOICE_FIELDS), _pick(rng, NOT_A_CHOICE)
    document["model"][field] = value
    return f"model.{field} = {value!r}"


def config_density(document: Document, tensors: Tensors, rng: np.random.Generator) -> str:
    field = _pick(rng, ("density", "qkv_density"))
    value = _pick(rng, (0.0, -0.5, 1.5, float("nan"), float("inf"), "half", None))
    document["model"][field] = value
    return f"model.{field} = {value!r}"


def layer_field(document: Document, tensors: Tensors, rng: np.random.Generator) -> str:
    name = _pick(rng, sorted(document["layers"]))
    entry = document["layers"][name]
    key = _pick(rng, [k for k in LAYER_KEYS if k in entry] or ["kind"])
    value = _pick(rng, (*BAD_NUMBERS, "bits-lzma", "gaps-lzma", "dense_linear", "-5", [1, 2], [10**6, 10**6]))
    if key == "seed":  # any decimal 64-bit seed is another valid layer: only what is not one
        value = _pick(rng, NOT_A_SEED)
    if entry.get(key) == value or (key == "mask_encoding" and value in ("bits-lzma", "gaps-lzma")):
        value = -7  # a swap between valid encodings is an edit the decoder itself refuses or that decodes alike
    entry[key] = value
    return f"layers.{name}.{key} = {value!r}"


def layer_shift(document: Document, tensors: Tensors, rng: np.random.Generator) -> str:
    """A plausible-looking edit of a count: one more or one fewer."""
    entries = [(n, e) for n, e in document["layers"].items() if "kept" in e]
    if not entries:
        return layer_field(document, tensors, rng)
    name, entry = _pick(rng, entries)
    key = _pick(rng, ("kept", "alpha_index", "mask_offset", "mask_bytes"))
    step = int(_pick(rng, (-1, 1)))
    entry[key] += step
    return f"layers.{name}.{key} += {step}"


def layer_set(document: Document, tensors: Tensors, rng: np.random.Generator) -> str:
    names = sorted(document["layers"])
    name = _pick(rng, names)
    if rng.random() < 0.5:
        del document["layers"][name]
        return f"del layers.{name}"
    document["layers"][f"{name}.copy"] = copy.deepcopy(document["layers"][name])
    return f"layers.{name}.copy added"


def tensor_values(document: Document, tensors: Tensors, rng: np.random.Generator) -> str:
    floats = sorted(name for name, value in tensors.items() if value.dtype.kind == "f")
    name = _pick(rng, floats)
    value = tensors[name].copy()
    flat = value.reshape(-1)
    position = int(rng.integers(len(flat)))
    bad = _pick(rng, (np.nan, np.inf, -np.inf))
    if name.endswith("alphas") or name.endswith(".std"):
        bad = _pick(rng, (np.nan, 0.0, -1.0, -flat[position]))
    flat[position] = bad
    tensors[name] = value
    return f"{name}[{position}] = {bad}"


def tensor_form(document: Document, tensors: Tensors, rng: np.random.Generator) -> str:
    name = _pick(rng, sorted(tensors))
    value = tensors[name]
    change = _pick(rng, ("int32", "int64", "uint8", "bool", "shorter", "longer", "2-d", "gone", "extra"))
    if change in ("int32", "int64", "uint8", "bool"):
        if value.dtype == np.dtype(change):
            change = "shorter"
        else:
            with np.errstate(invalid="ignore"):  # NaN or inf cast to an integer: garbage, as wanted
                tensors[name] = value.astype(change)
    if change == "shorter":
        tensors[name] = value.reshape(-1)[:-1] if value.size > 1 else value.reshape(-1)[:0]
    elif change == "longer":
        tensors[name] = np.concatenate([value.reshape(-1), value.reshape(-1)[:1]])
    elif change == "2-d":
        tensors[name] = value.reshape(1, -1) if value.ndim == 1 else value.reshape(-1)
    elif change == "gone" and name.startswith("input_scaler."):
        tensors[name] = value[:-1]  # without both statistics a model is a valid unscaled one: keep them, shorter
    elif change == "gone":
        del tensors[name]
    elif change == "extra":
        tensors["extra.weight"] = np.ones(3, dtype=np.float32)
    return f"{name}: {change}"


def task_swap(document: Document, tensors: Tensors, rng: np.random.Generator) -> str:
    task = _pick(rng, [t for t in TASKS if t != document["task"]])
    document["task"] = task
    return f"task = {task!r}"


def task_state(document: Document, tensors: Tensors, rng: np.random.Generator) -> str:
    state = document["task_state"]
    key = _pick(rng, sorted(state))
    change = _pick(rng, ("gone", "extra", "garbage", "list-garbage", "duplicate"))
    if change == "gone" and key in OPTIONAL_STATE_KEYS:
        change = "garbage"
    if change == "gone":
        del state[key]
    elif change == "extra":
        state[_pick(rng, ("classes", "threshold", "formulation", "columns", "other"))] = ["a"] * 3
        if json.dumps(state, sort_keys=True) == json.dumps(document["task_state"], sort_keys=True):
            state["other"] = 1
    elif change == "garbage":
        state[key] = _of_another_type(state[key], rng)
    elif isinstance(state[key], list) and len(state[key]) > 1:
        state[key] = ([state[key][0]] * len(state[key]) if change == "duplicate"
                      else [*state[key][:-1], _of_another_type(state[key][-1], rng)])
    elif isinstance(state[key], dict):
        inner = _pick(rng, sorted(state[key]))
        state[key][inner] = _of_another_type(state[key][inner], rng)
        return f"task_state.{key}.{inner} garbled"
    else:
        state[key] = None
    return f"task_state.{key}: {change}"


def deep_document(document: Document, tensors: Tensors, rng: np.random.Generator) -> str:
    nested: Any = 1
    for _ in range(DEEP_NESTING):
        nested = [nested]
    document[_pick(rng, ("task_state", "model", "layers"))] = nested
    return f"a value nested {DEEP_NESTING} deep"


EDITS: dict[str, Edit] = {edit.__name__: edit for edit in (
    config_size, config_off_by_some, config_choice, config_density, layer_field, layer_shift, layer_set,
    tensor_values, tensor_form, task_swap, task_state, deep_document)}


def mutate(seed: bytes, rng: np.random.Generator, n_edits: int = 1) -> tuple[bytes, str]:
    """``seed`` with ``n_edits`` invalid edits, re-saved with the checksum recomputed; and what was edited."""
    from sbts.runtime.artifact import artifact_bytes

    document, tensors = parts(seed)
    done = []
    for _ in range(n_edits):
        try:
            done.append(EDITS[_pick(rng, sorted(EDITS))](document, tensors, rng))
        except (TypeError, AttributeError, KeyError, ValueError, IndexError):
            break  # an earlier edit took away what this one edits (a section replaced by a nested list)
    return artifact_bytes(document, tensors), "; ".join(done) or "nothing"
