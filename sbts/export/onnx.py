"""ONNX export of the per-step network, for runtimes other than PyTorch.

``export_onnx(model, path, task=..., inference_state=..., scaler=...)`` writes ``model(x, padding_mask)`` in
eval mode as an ONNX graph:

- input ``x``: float32 (batch, time, in_channels), each channel scaled with the training statistics
  (``sbts.scaler`` below) when the export was given them;
- input ``padding_mask``: bool (batch, time), True = padded step; present only for models that take
  padded input (``not config.needs_fixed_length``: attention full/qkv_mask with norm batch/none) and not
  left out with ``padding_mask_input=False`` (see ``export_onnx``);
- output ``output``: float32 (batch, time, out_dim).

The batch axis is dynamic. The time axis is fixed at ``max_len`` for fixed-length models (step_t
attention, layer_time norm); for the others it is dynamic (any length up to ``max_len``) unless
``length`` fixes it. ``run_onnx`` refuses a longer input with a one-line ``DataError`` before onnxruntime
runs it (the graph itself fails with a broadcasting error where the positions of ``max_len`` steps meet it).

The file describes itself in its metadata props (``ModelProto.metadata_props``; in onnxruntime
``session.get_modelmeta().custom_metadata_map``), strings, JSON where structured:

- ``sbts.version``: the sbts that wrote it; ``sbts.config``: the model config (``ModelConfig.to_dict``);
- ``sbts.task`` and ``sbts.task_state`` (class names, threshold, forecast formulation): the same entries as
  the ``.sbts`` artifact's document, both made by ``sbts.export.artifact.model_facts``;
- ``sbts.classes``: a classifier's class names, in the order of the output's last axis;
- ``sbts.scaler``: ``{"mean": [...], "std": [...]}``, one per input channel: ``x = (raw - mean) / std``;
- ``sbts.inputs`` / ``sbts.outputs``: for each graph input and output its name, shape, dtype and meaning
  (for ``x`` also ``must_be_scaled`` and ``max_time_steps``; for ``output`` how the task reads it: the
  classifier's pooling, the detector's score, the forecaster's formulation).

Every sparse-binary linear becomes a plain constant-weight MatMul holding its ternary weight
``alpha * sign(W) * M`` (values {-alpha, 0, +alpha}): the top-k over the scores is done once here,
not in the graph. The exporter is PyTorch's TorchScript-based one (``dynamo=False``), which needs no
package beyond ``onnx``; the dynamo exporter would also need ``onnxscript``.
"""

from __future__ import annotations

import copy
import importlib
import io
import json
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sbts.atomic import atomic_write_bytes
from sbts.config import ModelConfig
from sbts.data.preprocessing import ChannelScaler
from sbts.errors import DataError, SBTSError
from sbts.export.artifact import model_facts
from sbts.heads.forecasting import Formulation
from sbts.layers import MaskedBatchNorm, SparseBinaryLinear
from sbts.models.transformer import TimeSeriesTransformer

# Opset 17 is the first with LayerNormalization and is widely supported by other runtimes; scaled
# dot-product attention exports from opset 14; the TorchScript exporter goes up to opset 20.
DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 14, 20

X_INPUT, MASK_INPUT, OUTPUT = "x", "padding_mask", "output"  # the graph's input and output names
BATCH_AXIS, TIME_AXIS = "batch", "time"  # names of the dynamic axes

VERSION_KEY, CONFIG_KEY = "sbts.version", "sbts.config"
TASK_KEY, TASK_STATE_KEY, CLASSES_KEY = "sbts.task", "sbts.task_state", "sbts.classes"
SCALER_KEY, INPUTS_KEY, OUTPUTS_KEY = "sbts.scaler", "sbts.inputs", "sbts.outputs"
_FACT_KEYS = {"sbts_version": VERSION_KEY, "model": CONFIG_KEY, "task": TASK_KEY, "task_state": TASK_STATE_KEY}


def _require(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SBTSError(f"ONNX support needs the {module} package: pip install 'sbts[onnx]'") from None


class _ConstantLinear(nn.Module):
    """A linear layer with fixed weight and bias held as buffers (exported as initializers)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class _EvalMaskedBatchNorm(nn.Module):
    """``MaskedBatchNorm`` in eval mode without boolean indexing.

    With running statistics every step is normalised on its own, so normalising all steps and then
    zeroing the padded ones gives the same output; the graph then has only static-shape ops
    (boolean indexing would export as NonZero/ScatterND, which many runtimes handle poorly).
    """

    def __init__(self, norm: MaskedBatchNorm):
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self.norm(x)
        return out if padding_mask is None else out.masked_fill(padding_mask[..., None], 0.0)


def _frozen_copy(model: TimeSeriesTransformer) -> TimeSeriesTransformer:
    """An eval-mode CPU copy with export-friendly layers; the caller's model is left untouched."""
    frozen = copy.deepcopy(model).cpu().eval()
    for parent in list(frozen.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SparseBinaryLinear):
                with torch.no_grad():
                    weight = child.effective_weight().detach().clone()
                bias = None if child.bias is None else child.bias.detach().clone()
                setattr(parent, name, _ConstantLinear(weight, bias))
            elif isinstance(child, MaskedBatchNorm):
                setattr(parent, name, _EvalMaskedBatchNorm(child))
    return frozen


def _example_length(config: ModelConfig, length: int | None) -> int:
    if length is None:
        return config.max_len
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= config.max_len:
        raise SBTSError(f"length must be an integer in [1, max_len={config.max_len}], got {length!r}")
    if config.needs_fixed_length and length != config.max_len:
        raise SBTSError(f"this model takes windows of exactly max_len={config.max_len} steps; got length={length}")
    return length


def _classification_output(config: ModelConfig, state: dict[str, Any]) -> str:
    return (f"per-step class logits for the {config.out_dim} classes of {CLASSES_KEY}, in order; a case's logits "
            "are the mean over its valid (not padded) steps, softmax gives its class probabilities")


def _anomaly_output(config: ModelConfig, state: dict[str, Any]) -> str:
    return (f"per-step reconstruction of x; a series is read through the window of {config.max_len} steps ending at "
            "each step, whose anomaly score is the mean over channels of (output[:, -1] - x[:, -1]) ** 2 (higher is "
            f"more anomalous), compared with the threshold record of {TASK_STATE_KEY} when it has one")


def _forecasting_output(config: ModelConfig, state: dict[str, Any]) -> str:
    formulation = Formulation(**state["formulation"])
    h, channels = formulation.horizon, config.in_channels
    meaning = (f"output[:, -1] forecasts, for every channel, the last step of a window of {config.max_len} steps "
               "whose last row (the first step forecast) is fed as zeros")
    meaning += (f", and the {h - 1} steps after it: output[:, -1].reshape(batch, {h}, {channels}) is step ahead "
                "first, then channel; " if h > 1 else "; ")
    ahead = "output[:, -1]" if h == 1 else f"output[:, -1].reshape(batch, {h}, {channels})"
    meaning += (f"it is the change over the last observed row: forecast = x[:, -2{'' if h == 1 else ', None'}] + "
                f"{ahead}" if formulation.target == "change" else "it is the forecast value itself")
    if formulation.input_norm == "window":
        meaning += ("; x holds each window's observed rows normalised by their own per-channel mean and std, and "
                    "the forecast is mapped back with them (sbts.heads.forecasting.prepare_windows)")
    return meaning


# What the output means to each task's head (the runtime's ClassifierRuntime, AnomalyRuntime, ForecastRuntime).
_OUTPUT_MEANINGS = {"classification": _classification_output, "anomaly": _anomaly_output,
                    "forecasting": _forecasting_output}


def _check_task_facts(config: ModelConfig, task: str | None, state: dict[str, Any],
                      scaler: ChannelScaler | None) -> None:
    """Refuse metadata that would misdescribe the graph, as loading the same facts in an artifact would."""
    if scaler is not None and scaler.n_channels != config.in_channels:
        raise SBTSError(f"the scaler has {scaler.n_channels} channels, the model takes {config.in_channels}")
    if task == "classification" and len(state.get("classes", ())) != config.out_dim:
        raise SBTSError(f"a classifier's inference_state needs its {config.out_dim} class names in 'classes'")
    if task == "forecasting":
        try:
            recorded = dict(state["formulation"])
            missing = {"target", "input_norm"} - set(recorded)  # as the runtime: never a silent default
            if missing:
                raise SBTSError(f"it lacks {', '.join(sorted(missing))}")
            horizon = Formulation(**recorded).horizon
        except (KeyError, TypeError, ValueError, SBTSError) as exc:
            raise SBTSError(f"a forecaster's inference_state needs a valid 'formulation' ({exc})") from None
        if config.out_dim != horizon * config.in_channels:
            raise SBTSError(f"a forecaster of {config.in_channels} channels {horizon} step(s) ahead needs "
                            f"{horizon * config.in_channels} outputs; the model has {config.out_dim}")


def _metadata(config: ModelConfig, facts: dict[str, Any], scaler: ChannelScaler | None, time: int | str,
              has_mask: bool) -> dict[str, str]:
    """The metadata props (see the module docstring); ``time`` is the graph's time axis, ``has_mask`` whether
    it takes ``padding_mask``."""
    props = {_FACT_KEYS[key]: value if isinstance(value, str) else json.dumps(value)
             for key, value in facts.items() if value is not None}
    state = facts["task_state"]
    if "classes" in state:
        props[CLASSES_KEY] = json.dumps(list(state["classes"]))
    if scaler is not None:
        props[SCALER_KEY] = json.dumps(scaler.to_dict())
    scaling = (f"each channel scaled first: (raw - mean) / std with {SCALER_KEY}" if scaler is not None
               else "channels as the network was trained on them (no scaler recorded)")
    inputs = [{"name": X_INPUT, "shape": [BATCH_AXIS, time, config.in_channels], "dtype": "float32",
               "max_time_steps": time if isinstance(time, int) else config.max_len,
               "must_be_scaled": scaler is not None, "meaning": f"the series, time before channels; {scaling}"}]
    if has_mask:
        inputs.append({"name": MASK_INPUT, "shape": [BATCH_AXIS, time], "dtype": "bool",
                       "meaning": "True marks a padded step (a case shorter than the batch's time axis, padded at "
                                  "its end); all False when no step is padded"})
    describe = _OUTPUT_MEANINGS.get(facts["task"])
    meaning = "per-step network output" if describe is None else describe(config, state)
    outputs = [{"name": OUTPUT, "shape": [BATCH_AXIS, time, config.out_dim], "dtype": "float32", "meaning": meaning}]
    props[INPUTS_KEY], props[OUTPUTS_KEY] = json.dumps(inputs), json.dumps(outputs)
    return props


def export_onnx(model: TimeSeriesTransformer, path: str | Path, *, task: str | None = None,
                inference_state: dict[str, Any] | None = None, scaler: ChannelScaler | None = None,
                length: int | None = None, opset: int | None = None, padding_mask_input: bool = True) -> Path:
    """Write ``model`` as an ONNX file at ``path`` (atomically) and return the path.

    ``task``, ``inference_state`` and ``scaler`` are what the ``.sbts`` export records (task name, class names /
    threshold / formulation, training statistics); they go into the metadata props with what the inputs and the
    output are. ``length=None`` leaves the time axis dynamic where the model allows it (up to ``max_len``);
    an integer fixes it. ``opset`` defaults to 17 (14 to 20 are supported).

    ``padding_mask_input=False`` leaves the ``padding_mask`` input out of a model that takes one: the graph is
    then fed ``{"x": x}`` alone, for callers whose batches hold unpadded series only (any length up to
    ``max_len`` while the time axis is dynamic); it computes what the default graph computes with an all-False
    mask. A separate graph rather than an optional input because ONNX has no optional graph input with a
    shape-free default (an initializer default fixes its shape) and onnxruntime refuses a feed that lacks a
    declared input, so a graph without the input is the simplest call for such a user; the masked graph stays
    the default, since classifying unequal-length cases in one batch needs it.
    """
    onnx = _require("onnx")
    opset = DEFAULT_OPSET if opset is None else opset
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise SBTSError(f"opset must be an integer in [{MIN_OPSET}, {MAX_OPSET}], got {opset!r}")
    config = model.config
    steps = _example_length(config, length)
    facts = model_facts(model, task=task, inference_state=inference_state)
    _check_task_facts(config, task, facts["task_state"], scaler)
    takes_padding = not config.needs_fixed_length and padding_mask_input

    example = (torch.zeros(1, steps, config.in_channels),)
    input_names = [X_INPUT]
    if takes_padding:  # traced with a mask so that the graph applies it; all False = no padding
        example += (torch.zeros(1, steps, dtype=torch.bool),)
        input_names.append(MASK_INPUT)
    dynamic_time = length is None and not config.needs_fixed_length
    time_axis = {1: TIME_AXIS} if dynamic_time else {}
    dynamic_axes = {name: {0: BATCH_AXIS, **time_axis} for name in [*input_names, OUTPUT]}

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated but is the one that needs no extra package; tracer
        # warnings come from the models' input checks, which are constant for the exported shapes.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(_frozen_copy(model), example, buffer, dynamo=False, input_names=input_names,
                          output_names=[OUTPUT], dynamic_axes=dynamic_axes, opset_version=opset)
    model_proto = onnx.load_from_string(buffer.getvalue())
    if not dynamic_time:  # the exporter's shape inference leaves some fixed graphs' (Step-T) output time axis unnamed
        model_proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value = steps
    onnx.helper.set_model_props(model_proto, _metadata(config, facts, scaler, TIME_AXIS if dynamic_time else steps,
                                                       takes_padding))
    onnx.checker.check_model(model_proto)  # checked before writing: no invalid file lands
    path = Path(path)
    atomic_write_bytes(path, model_proto.SerializeToString())
    return path


def _check_length(path: Path, session: Any, x: np.ndarray) -> None:
    """Refuse, naming the length and the limit, an input the graph cannot take (before onnxruntime sees it)."""
    if x.ndim != 3:
        raise DataError(f"{path}: x must be (batch, time, channels), got shape {x.shape}")
    steps = x.shape[1]
    config = session.get_modelmeta().custom_metadata_map.get(CONFIG_KEY)
    if config is not None:  # absent only from files written before sbts recorded its metadata
        limit = json.loads(config)["max_len"]
        if steps > limit:
            raise DataError(f"{path}: the input has {steps} time steps; the model takes at most max_len={limit}")
    fixed = session.get_inputs()[0].shape[1]  # an int where the export fixed the time axis, else its name
    if isinstance(fixed, int) and steps != fixed:
        raise DataError(f"{path}: the input has {steps} time steps; this graph takes exactly {fixed}")


def run_onnx(path: str | Path, x: np.ndarray, padding_mask: np.ndarray | None = None) -> np.ndarray:
    """Run an exported model with onnxruntime on the CPU: x (B, T, C) -> (B, T, out_dim).

    A graph that takes padding gets an all-False mask when ``padding_mask`` is None; a graph without the
    input (a fixed-length model, or exported with ``padding_mask_input=False``) refuses one. ``T`` beyond the
    model's ``max_len``, or other than a fixed time axis, is a ``DataError`` naming both.
    """
    ort = _require("onnxruntime")
    path = Path(path)
    if not path.is_file():
        raise SBTSError(f"{path}: ONNX file not found")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.asarray(x, dtype=np.float32)
    _check_length(path, session, x)
    feeds = {X_INPUT: x}
    if MASK_INPUT in {i.name for i in session.get_inputs()}:
        feeds[MASK_INPUT] = (np.zeros(x.shape[:2], dtype=bool) if padding_mask is None
                             else np.asarray(padding_mask, dtype=bool))
    elif padding_mask is not None:
        raise SBTSError(f"{path}: this graph takes no padding mask (a fixed-length model, or exported for "
                        "unpadded input only)")
    return session.run(None, feeds)[0]
