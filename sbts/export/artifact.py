"""Writing the compact ``.sbts`` artifact from a PyTorch model or a saved run (format: ``sbts.runtime.artifact``).

Each layer's declared kind (``sbts.layers.kinds``) picks what is stored: a sparse-binary linear keeps
its encoded mask, its alpha and its weight seed; float tensors (dense weights, norms, a learnable
table) are stored as float32 or, on request, float16. Before the file is written, the artifact is decoded again and run
by the numpy runtime against the PyTorch model on a probe batch, so an export that would not
reproduce the model fails instead of leaving a wrong file.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sbts import __version__
from sbts.atomic import atomic_write_bytes
from sbts.data.preprocessing import ChannelScaler
from sbts.errors import SBTSError
from sbts.export.c_build import CExportResult, write_c_export
from sbts.export.c_source import DEFAULT_WEIGHT_FORM
from sbts.layers.kinds import ALPHA, MASK, layer_kind
from sbts.models.transformer import TimeSeriesTransformer
from sbts.runtime.artifact import (ALPHAS, INPUT_SCALER, MASKS, Artifact, artifact_bytes, encode_mask,
                                   load_artifact_bytes, network_tensors, signing_key)
from sbts.runtime.network import forward

FLOAT_DTYPES = {"float32": np.float32, "float16": np.float16}
# The runtime must match PyTorch to this relative tolerance on the probe (float16 rounds the stored floats).
PROBE_RTOL = {"float32": 1e-5, "float16": 1e-2}


@dataclass
class ExportResult:
    path: Path
    size_bytes: int
    float_dtype: str
    probe_max_relative_difference: float  # runtime vs PyTorch on the probe batch


def model_facts(model: TimeSeriesTransformer, *, task: str | None, inference_state: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """What every export records about ``model`` besides its weights: the sbts version, the model config, the
    task and its inference state (class names, threshold, ...). The artifact's document holds these entries and
    the ONNX export's metadata props (``sbts.export.onnx``) are made from them, so the two cannot disagree.
    ``task`` is None only for an ONNX export of a network outside any task."""
    return {"sbts_version": __version__, "model": model.config.to_dict(), "task": task,
            "task_state": inference_state or {}}


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
            entry, stored = layer_kind(st.kind).export(name, modules[name], st, dtype)
            if MASK in stored:  # one tensor for all masks and one for all alphas: fewer header entries
                encoding, code = encode_mask(stored.pop(MASK))
                entry.update(mask_encoding=encoding, mask_offset=sum(len(m) for m in masks), mask_bytes=len(code),
                             alpha_index=len(alphas))
                masks.append(code)
                alphas.append(stored.pop(ALPHA))
            layers[name] = {"kind": st.kind, "shape": list(st.shape), **entry}
            tensors.update(stored)
    if masks:
        tensors[MASKS], tensors[ALPHAS] = np.concatenate(masks), np.concatenate(alphas)
    if scaler is not None:
        mean, std = INPUT_SCALER
        tensors[mean], tensors[std] = scaler.mean.astype(np.float64), scaler.std.astype(np.float64)
    document = {**model_facts(model, task=task, inference_state=inference_state), "float_dtype": float_dtype,
                "layers": layers}
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


def verified_artifact(model: TimeSeriesTransformer, where: str | Path, *, task: str,
                      inference_state: dict[str, Any] | None = None, scaler: ChannelScaler | None = None,
                      float_dtype: str = "float32") -> tuple[bytes, float]:
    """The artifact's bytes for ``model`` and the runtime's largest relative difference from PyTorch on the probe
    batch, after checking it is within tolerance (``where`` names what would be written)."""
    was_training = model.training
    model.eval()
    try:
        document, tensors = build_artifact(model, task=task, inference_state=inference_state, scaler=scaler,
                                           float_dtype=float_dtype)
        data = artifact_bytes(document, tensors, key=signing_key())  # signed when $SBTS_SIGNING_KEY is set
        difference, torch_error = probe_difference(model, load_artifact_bytes(data, str(where)))
    finally:
        model.train(was_training)
    # An ill-conditioned model may round more than PROBE_RTOL in torch float32 itself; then allow a few times that.
    tolerance = max(PROBE_RTOL[float_dtype], 4 * torch_error)
    if not difference <= tolerance:  # NaN fails too
        raise SBTSError(f"{where}: not written: the exported model differs from the PyTorch model "
                        f"(max relative difference {difference:.2e} > {tolerance:.2g})")
    return data, difference


def export_model(model: TimeSeriesTransformer, path: str | Path, *, task: str,
                 inference_state: dict[str, Any] | None = None, scaler: ChannelScaler | None = None,
                 float_dtype: str = "float32") -> ExportResult:
    """Write ``model`` as an artifact at ``path`` (atomically), after checking that the runtime reproduces it."""
    data, difference = verified_artifact(model, path, task=task, inference_state=inference_state, scaler=scaler,
                                         float_dtype=float_dtype)
    atomic_write_bytes(path, data)
    return ExportResult(Path(path), len(data), float_dtype, difference)


def export_c_model(model: TimeSeriesTransformer, directory: str | Path, *, task: str,
                   inference_state: dict[str, Any] | None = None, scaler: ChannelScaler | None = None,
                   weight_form: str = DEFAULT_WEIGHT_FORM, force: bool = False) -> CExportResult:
    """Write ``model`` as C99 (``sbts.h``, ``sbts.c``) into ``directory``, from the verified artifact: the C
    engine computes what the numpy runtime does."""
    data, _ = verified_artifact(model, directory, task=task, inference_state=inference_state, scaler=scaler)
    return write_c_export(load_artifact_bytes(data, str(directory)), directory, weight_form=weight_form, force=force)
