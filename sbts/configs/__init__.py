"""Shipped run configurations (YAML); see paper/ for the paper's settings."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PRESET_PACKAGE = "sbts.configs"


def preset_path(task: str, dataset: str, model_name: str) -> Path | None:
    """The shipped paper configuration for a dataset, if any: by the dataset's own name (``UEA/JapaneseVowels``,
    or a folder of that name), else, for an archive member like ``SMD/machine-1-6``, by its archive (never
    for file paths)."""
    parts = [part for part in dataset.split("/") if part]
    archive_member = len(parts) == 2 and "," not in dataset and not Path(dataset).expanduser().exists()
    # Case-insensitive, as the loaders are: ``ett/ettm1`` is the same dataset as ``ETT/ETTm1``.
    presets = {entry.name.lower(): entry for entry in resources.files(PRESET_PACKAGE).joinpath("paper").iterdir()}
    for name in parts[-1:] + (parts[:1] if archive_member else []):
        candidate = presets.get(f"{task}_{name}_{model_name}.yaml".lower())
        if candidate is not None and candidate.is_file():
            return Path(str(candidate))
    return None
