"""Run directories: turning a run specification into a trained, recorded run, and re-evaluating it.

A run specification is a mapping ``{task, data, model_name, model: {...}, train: {...}}`` whose model
part may omit the data-derived fields (channels, outputs, length). It is merged from, in order:
the task's defaults, the paper preset for the dataset (``sbts/configs/paper``; only when no config
file is given), a user config file, then command-line values.

A run directory holds ``config.json`` (the full ``RunConfig``), ``checkpoints/{best,last}.pt``,
``log.jsonl`` (one line per epoch) and ``metrics.json``. Nothing in an existing run directory is
touched unless the run is resumed.
"""

from __future__ import annotations

import platform
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from sbts.config import RunConfig, read_config_file
from sbts.data.preprocessing import ChannelScaler
from sbts.errors import CheckpointError, ConfigError, SBTSError

PRESET_PACKAGE = "sbts.configs"
# The only settings a resumed run may change; everything else stays as in its config.json.
RESUMABLE_TRAIN_FIELDS = ("epochs", "patience", "device")


@dataclass
class TrainedRun:
    """A saved run's trained model and what inference needs besides the weights."""

    run: RunConfig
    model: torch.nn.Module  # on the CPU, in eval mode
    epoch: int | None
    task_state: dict[str, Any]  # everything the checkpoint recorded about data and splits
    inference_state: dict[str, Any]  # the JSON-safe part an exported model keeps (class names)
    scaler: ChannelScaler  # input statistics of the training data


def preset_path(task: str, dataset: str, model_name: str) -> Path | None:
    """The shipped paper configuration for a dataset name like ``UEA/JapaneseVowels``, if any."""
    name = dataset.rstrip("/").split("/")[-1]
    candidate = resources.files(PRESET_PACKAGE).joinpath("paper", f"{task}_{name}_{model_name}.yaml")
    return Path(str(candidate)) if candidate.is_file() else None


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_run_spec(task: str, *, data: str | None, model_name: str | None, config_file: str | None,
                   model_overrides: dict[str, Any], train_overrides: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {"task": task, "model": {}, "train": {}}
    if config_file:
        user = read_config_file(config_file)
        if user.get("task", task) != task:
            raise ConfigError(f"{config_file}: task is {user['task']!r}, but the command trains {task!r}")
        spec = _merge(spec, user)
    if data is not None:
        spec["data"] = data
    if model_name is not None:
        spec["model_name"] = model_name
    spec.setdefault("model_name", "sbt")
    if "data" not in spec:
        raise ConfigError("no dataset given: pass --data NAME_OR_PATH or set 'data' in the config file")
    for key in ("data", "model_name"):
        if not isinstance(spec[key], str):
            raise ConfigError(f"{key} must be a string, got {spec[key]!r}")
    for key in ("model", "train"):
        if not isinstance(spec.get(key), dict):
            raise ConfigError(f"{key} must be a mapping of settings, got {spec.get(key)!r}")
    if not config_file:
        preset = preset_path(task, spec["data"], spec["model_name"])
        if preset is not None:
            spec = _merge(read_config_file(preset), spec)
    spec = _merge(spec, {"model": model_overrides, "train": train_overrides})
    return spec


def prepare_run_dir(run_dir: str | Path, resume: bool) -> Path:
    """Check that ``run_dir`` can be resumed, or is new or empty; nothing is created here, so a run
    that fails on its inputs leaves no directory behind."""
    run_dir = Path(run_dir)
    if resume:
        if not (run_dir / "config.json").is_file() or not (run_dir / "checkpoints" / "last.pt").is_file():
            raise CheckpointError(f"{run_dir}: nothing to resume (needs config.json and checkpoints/last.pt)")
        return run_dir
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise SBTSError(f"{run_dir}: run directory exists and is not empty; choose a new --out or pass --resume")
    return run_dir


def git_commit() -> str | None:
    """The commit of the sbts source tree when it is a git checkout, with "-dirty" if it has
    uncommitted changes (for reproducibility records)."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if head.returncode != 0 or not head.stdout.strip():
            return None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info(device: torch.device) -> dict[str, Any]:
    from sbts import __version__
    return {"sbts_version": __version__, "torch_version": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "processor": platform.processor() or None, "device": str(device),
            "torch_threads": torch.get_num_threads(), "git_commit": git_commit()}
