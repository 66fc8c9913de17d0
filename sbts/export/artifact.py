"""Writing the compact ``.sbts`` artifact from a PyTorch model or a saved run (format: ``sbts.runtime.artifact``).

Each layer's declared kind picks what is stored: a sparse-binary linear keeps its encoded mask, its
alpha and its weight seed; float tensors (dense weights, norms, a learnable table) are stored as
float32 or, on request, float16. Before the file is written, the artifact is decoded again and run
by the numpy runtime against the PyTorch model on a probe batch, so an export that would not
reproduce the model fails instead of leaving a wrong file.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sbts import __version__
from sbts.atomic import atomic_write_bytes
from sbts.data.preprocessing import ChannelScaler
from sbts.errors import SBTSError
from sbts.layers.storage import LayerStorage
from sbts.models.transformer import TimeSeriesTransformer
from sbts.runtime.artifact import (
    ALPHAS,
    MASKS,
    Artifact,
    artifact_bytes,
    encode_mask,
    load_artifact_bytes,
    network_tensors,
)
from sbts.runtime.network import forward

FLOAT_DTYPES = {"float32": np.float32, "float16": np.float16}
# The runtime must match PyTorch to this relative tolerance on the probe (float16 rounds the stored floats).
PROBE_RTOL = {"float32": 1e-5, "float16": 1e-2}


def _array(tensor: torch.Tensor, dtype) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(dtype)


def _sparse_binary_linear(name: str, module: nn.Module, st: LayerStorage, dtype) -> tuple[dict, dict]:
    encoding, code = encode_mask(module.mask().cpu().numpy())
    entry = {"seed": str(module.seed), "kept": st.kept, "bias": module.bias is not None, "mask_encoding": encoding}
    # alpha stays float32 whatever the float dtype: it is one value and scales every weight.
    return entry, {MASKS: code, ALPHAS: _array(module.alpha().reshape(1), np.float32)}


def _module_floats(*keys: str) -> Callable[[str, nn.Module, LayerStorage, Any], tuple[dict, dict]]:
    def take(name: str, module: nn.Module, st: LayerStorage, dtype) -> tuple[dict, dict]:
        tensors = {f"{name}.{key}": _array(getattr(module, key), dtype) for key in keys
                   if getattr(module, key, None) is not None}
        return {}, tensors
    return take


def _sinusoidal(name: str, module: nn.Module, st: LayerStorage, dtype) -> tuple[dict, dict]:
    return {}, {}  # regenerated from its shape


def _attention(name: str, module: nn.Module, st: LayerStorage, dtype) -> tuple[dict, dict]:
    if not module.mask_seeds:
        return {}, {}
    return {"mask_seeds": {key: str(seed) for key, seed in module.mask_seeds.items()}}, {}


EXPORTERS: dict[str, Callable[[str, nn.Module, LayerStorage, Any], tuple[dict, dict]]] = {
    "sparse_binary_linear": _sparse_binary_linear,
    "dense_linear": _module_floats("weight", "bias"),
    "batch_norm": _module_floats("weight", "bias", "running_mean", "running_var"),
    "layer_time_norm": _module_floats("weight", "bias"),
    "positional_learnable": _module_floats("table"),
    "positional_sinusoidal": _sinusoidal,
    "attention": _attention,
}


@dataclass
class ExportResult:
    path: Path
    size_bytes: int
    float_dtype: str
    probe_max_relative_difference: float  # runtime vs PyTorch on the probe batch


def build_artifact(model: TimeSeriesTransformer, *, task: str, inference_state: dict[str, Any] | None = None,
                   scaler: ChannelScaler | None = None, float_dtype: str = "float32") -> tuple[dict, dict]:
    """The artifact's document and tensors for ``model`` (nothing written)."""
    if float_dtype not in FLOAT_DTYPES:
        raise SBTSError(f"float dtype must be one of {', '.join(FLOAT_DTYPES)}, got {float_dtype!r}")
    dtype = FLOAT_DTYPES[float_dtype]
    modules = dict(model.named_modules())
    layers, tensors = {}, {}
    masks, alphas = [], []
    with torch.no_grad():
        for name, st in model.storage().items():
            entry, stored = EXPORTERS[st.kind](name, modules[name], st, dtype)
            if MASKS in stored:  # one tensor for all masks and one for all alphas: fewer header entries
                code = stored.pop(MASKS)
                entry.update(mask_offset=sum(len(m) for m in masks), mask_bytes=len(code), alpha_index=len(alphas))
                masks.append(code)
                alphas.append(stored.pop(ALPHAS))
            layers[name] = {"kind": st.kind, "shape": list(st.shape), **entry}
            tensors.update(stored)
    if masks:
        tensors[MASKS], tensors[ALPHAS] = np.concatenate(masks), np.concatenate(alphas)
    if scaler is not None:
        tensors["input_scaler.mean"] = scaler.mean.astype(np.float64)
        tensors["input_scaler.std"] = scaler.std.astype(np.float64)
    document = {"sbts_version": __version__, "model": model.config.to_dict(), "task": task,
                "task_state": inference_state or {}, "float_dtype": float_dtype, "layers": layers}
    return document, tensors


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def probe_difference(model: TimeSeriesTransformer, artifact: Artifact, batch: int = 4,
                     seed: int = 0) -> tuple[float, float]:
    """On a random probe batch of full-length inputs: max |runtime - torch| / max |torch|, and the same
    measure of torch float32 itself against a float64 copy of the model (its own rounding error)."""
    config = model.config
    x = np.random.default_rng(seed).standard_normal((batch, config.max_len, config.in_channels)).astype(np.float32)
    device = next(model.parameters()).device
    with torch.no_grad():
        reference = model.eval()(torch.from_numpy(x).to(device)).cpu().numpy()
        exact = copy.deepcopy(model).cpu().double()(torch.from_numpy(x).double()).numpy()
    output = forward(artifact.config, network_tensors(artifact), x)
    return _relative(output, reference), _relative(reference, exact)


def export_model(model: TimeSeriesTransformer, path: str | Path, *, task: str,
                 inference_state: dict[str, Any] | None = None, scaler: ChannelScaler | None = None,
                 float_dtype: str = "float32") -> ExportResult:
    """Write ``model`` as an artifact at ``path`` (atomically), after checking that the runtime reproduces it."""
    was_training = model.training
    model.eval()
    try:
        document, tensors = build_artifact(model, task=task, inference_state=inference_state, scaler=scaler,
                                           float_dtype=float_dtype)
        data = artifact_bytes(document, tensors)
        difference, torch_error = probe_difference(model, load_artifact_bytes(data, str(path)))
    finally:
        model.train(was_training)
    # An ill-conditioned model may round more than PROBE_RTOL in torch float32 itself; then allow a few times that.
    tolerance = max(PROBE_RTOL[float_dtype], 4 * torch_error)
    if not difference <= tolerance:  # NaN fails too
        raise SBTSError(f"{path}: not written: the exported model differs from the PyTorch model "
                        f"(max relative difference {difference:.2e} > {tolerance:.2g})")
    atomic_write_bytes(path, data)
    return ExportResult(Path(path), len(data), float_dtype, difference)


def export_run(run_dir: str | Path, path: str | Path, *, checkpoint: str = "best",
               float_dtype: str = "float32") -> ExportResult:
    """Export a saved run's checkpoint with what inference needs (class names, input scaling)."""
    from sbts.tasks import load_trained_run

    trained = load_trained_run(run_dir, checkpoint)
    return export_model(trained.model, path, task=trained.run.task, inference_state=trained.inference_state,
                        scaler=trained.scaler, float_dtype=float_dtype)
