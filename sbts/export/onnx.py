"""ONNX export of the per-step network, for runtimes other than PyTorch.

``export_onnx(model, path)`` writes ``model(x, padding_mask)`` in eval mode as an ONNX graph:

- input ``x``: float32 (batch, time, in_channels);
- input ``padding_mask``: bool (batch, time), True = padded step; present only for models that take
  padded input (``not config.needs_fixed_length``: attention full/qkv_mask with norm batch/none);
- output ``output``: float32 (batch, time, out_dim).

The batch axis is dynamic. The time axis is fixed at ``max_len`` for fixed-length models (step_t
attention, layer_time norm); for the others it is dynamic (any length up to ``max_len``) unless
``length`` fixes it.

Every sparse-binary linear becomes a plain constant-weight MatMul holding its ternary weight
``alpha * sign(W) * M`` (values {-alpha, 0, +alpha}): the top-k over the scores is done once here,
not in the graph. The exporter is PyTorch's TorchScript-based one (``dynamo=False``), which needs no
package beyond ``onnx``; the dynamo exporter would also need ``onnxscript``.
"""

from __future__ import annotations

import copy
import importlib
import io
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sbts.atomic import atomic_write_bytes
from sbts.config import ModelConfig
from sbts.errors import SBTSError
from sbts.layers import MaskedBatchNorm, SparseBinaryLinear
from sbts.models.transformer import TimeSeriesTransformer

# Opset 17 is the first with LayerNormalization and is widely supported by other runtimes; scaled
# dot-product attention exports from opset 14; the TorchScript exporter goes up to opset 20.
DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 14, 20


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


def export_onnx(model: TimeSeriesTransformer, path: str | Path, *, length: int | None = None,
                opset: int | None = None) -> Path:
    """Write ``model`` as an ONNX file at ``path`` (atomically) and return the path.

    ``length=None`` leaves the time axis dynamic where the model allows it (up to ``max_len``);
    an integer fixes it. ``opset`` defaults to 17 (14 to 20 are supported).
    """
    onnx = _require("onnx")
    opset = DEFAULT_OPSET if opset is None else opset
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise SBTSError(f"opset must be an integer in [{MIN_OPSET}, {MAX_OPSET}], got {opset!r}")
    config = model.config
    steps = _example_length(config, length)
    takes_padding = not config.needs_fixed_length

    example = (torch.zeros(1, steps, config.in_channels),)
    input_names = ["x"]
    if takes_padding:  # traced with a mask so that the graph applies it; all False = no padding
        example += (torch.zeros(1, steps, dtype=torch.bool),)
        input_names.append("padding_mask")
    time_axis = {1: "time"} if length is None and takes_padding else {}
    dynamic_axes = {name: {0: "batch", **time_axis} for name in [*input_names, "output"]}

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated but is the one that needs no extra package; tracer
        # warnings come from the models' input checks, which are constant for the exported shapes.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(_frozen_copy(model), example, buffer, dynamo=False, input_names=input_names,
                          output_names=["output"], dynamic_axes=dynamic_axes, opset_version=opset)
    data = buffer.getvalue()
    onnx.checker.check_model(onnx.load_from_string(data))  # checked before writing: no invalid file lands
    path = Path(path)
    atomic_write_bytes(path, data)
    return path


def run_onnx(path: str | Path, x: np.ndarray, padding_mask: np.ndarray | None = None) -> np.ndarray:
    """Run an exported model with onnxruntime on the CPU: x (B, T, C) -> (B, T, out_dim).

    A model that takes padding gets an all-False mask when ``padding_mask`` is None.
    """
    ort = _require("onnxruntime")
    path = Path(path)
    if not path.is_file():
        raise SBTSError(f"{path}: ONNX file not found")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.asarray(x, dtype=np.float32)
    feeds = {"x": x}
    if "padding_mask" in {i.name for i in session.get_inputs()}:
        feeds["padding_mask"] = (np.zeros(x.shape[:2], dtype=bool) if padding_mask is None
                                 else np.asarray(padding_mask, dtype=bool))
    elif padding_mask is not None:
        raise SBTSError(f"{path}: this model takes fixed-length windows, not a padding mask")
    return session.run(None, feeds)[0]
