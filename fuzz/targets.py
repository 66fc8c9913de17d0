"""Fuzz targets: each reader of user files, fed bytes, and the outcome every input must have.

A target takes one input (bytes) and returns normally when the outcome is allowed: the reader accepted the input,
or refused it with an ``SBTSError`` (a subclass: ``DataError``, ``ConfigError``, ``ArtifactError``) whose message
is one line. Any other exception is a crash, and so is a hang (``run.py``'s per-input time limit) or memory
beyond the bound (``run.py``'s address-space limit). The artifact target holds a semantically mutated file to a
stricter rule: refused, or a model whose predictions equal the original's bit for bit.

Targets: ``ts`` (the UEA ``.ts`` parser), ``table`` (csv/txt series), ``npy`` (``sbts predict``'s ``.npy`` cases,
pickled payloads included), ``config`` (YAML and JSON run configs, then the run specification they make),
``artifact`` (the ``.sbts`` reader: raw bytes) and ``artifact-semantic`` (invalid edits with the checksum
recomputed, from ``mutations.py``).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sbts.errors import SBTSError


class Crash(AssertionError):
    """An outcome the contract forbids: another exception type, a message of several lines, a changed model."""


def _refused_cleanly(exc: SBTSError) -> None:
    if "\n" in str(exc) or not str(exc).strip():
        raise Crash(f"{type(exc).__name__} without a one-line message: {str(exc)[:200]!r}") from exc


def _as_file(data: bytes, suffix: str, read: Callable[[Path], object]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"input{suffix}"
        path.write_bytes(data)
        try:
            read(path)
        except SBTSError as exc:
            _refused_cleanly(exc)


def ts_target(data: bytes) -> None:
    from sbts.data.ts_format import read_ts

    _as_file(data, ".ts", read_ts)


def table_target(data: bytes) -> None:
    from sbts.data.tables import read_series

    _as_file(data, ".csv", read_series)


def npy_target(data: bytes) -> None:
    from sbts.runtime.inputs import read_cases

    _as_file(data, ".npy", read_cases)


def config_target(data: bytes) -> None:
    from sbts.config import read_config_file
    from sbts.tasks.runs import build_run_spec

    def read(path: Path) -> None:
        read_config_file(path)
        build_run_spec("classification", data="UEA/Fuzz", model_name=None, config_file=str(path),
                       model_overrides={}, train_overrides={}, task_overrides={})

    suffix = ".json" if data[:1] in (b"{", b"[") else ".yaml"
    _as_file(data, suffix, read)


PROBE_SEED = 7  # of the random cases every artifact is asked to predict


def probe_cases(config) -> np.ndarray:
    """Full-length random windows of the model's shape: what a mutated file's predictions are compared on."""
    rng = np.random.default_rng(PROBE_SEED)
    return rng.standard_normal((3, config.max_len, config.in_channels)).astype(np.float32)


def artifact_predictions(data: bytes) -> tuple[np.ndarray, str]:
    """What a loaded file computes, through the checks ``sbts.runtime.load`` makes: the network's outputs on the
    probe cases and the input scaler, and the task's facts that turn them into predictions (class names, the
    threshold, the forecast formulation), as JSON."""
    from sbts.registry import runtime_class
    from sbts.runtime.artifact import load_artifact_bytes

    artifact = load_artifact_bytes(data, "fuzzed.sbts")
    model = runtime_class(artifact.document["task"])(artifact)
    outputs = model.forward(probe_cases(model.config)).ravel()
    if model.scaler is not None:
        outputs = np.concatenate([outputs, model.scaler.mean, model.scaler.std])
    return outputs, json.dumps([model.task, model.task_state], sort_keys=True)


def artifact_target(data: bytes) -> None:
    try:
        artifact_predictions(data)
    except SBTSError as exc:
        _refused_cleanly(exc)


def semantic_target(original: bytes, mutated: bytes, edit: str) -> None:
    """An invalid edit (checksum recomputed) is refused, or changes nothing the model computes."""
    try:
        changed = artifact_predictions(mutated)
    except SBTSError as exc:
        _refused_cleanly(exc)
        return
    (outputs, facts), (original_outputs, original_facts) = changed, artifact_predictions(original)
    if facts != original_facts or not np.array_equal(outputs, original_outputs):
        raise Crash(f"the edit {edit} loaded and changed the predictions")


TARGETS: dict[str, Callable[[bytes], None]] = {"ts": ts_target, "table": table_target, "npy": npy_target,
                                               "config": config_target, "artifact": artifact_target}
