"""Checkpoint saving (atomic) and safe loading.

Checkpoints are read with ``torch.load(weights_only=True)``: nothing is unpickled.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from sbts.atomic import atomic_write_bytes
from sbts.errors import CheckpointError

CHECKPOINT_FORMAT = "sbts-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load an sbts checkpoint; anything else (corrupted, truncated, foreign, newer) is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad bytes; all mean "not loadable"
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else exc.__class__.__name__
        raise CheckpointError(f"{path}: not a readable sbts checkpoint ({reason})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an sbts checkpoint (missing format marker)")
    version = state.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version!r} is newer than this sbts supports "
                              f"({CHECKPOINT_VERSION}); upgrade sbts")
    return state
