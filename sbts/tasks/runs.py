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
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from sbts.config import ModelConfig, RunConfig, TrainConfig, read_config_file
from sbts.data.preprocessing import ChannelScaler
from sbts.errors import CheckpointError, ConfigError, DataError, SBTSError
from sbts.models import create_model
from sbts.training import FitResult, Trainer, atomic_write_json, load_checkpoint, resolve_device, seed_everything
from sbts.training.checkpoint import read_json
from sbts.training.engine import TaskProtocol, mismatch_reason

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


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_run_spec(task: str, *, data: str | None, model_name: str | None, config_file: str | None,
                   model_overrides: dict[str, Any], train_overrides: dict[str, Any],
                   task_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"task": task, "model": {}, "train": {}, "task_options": {}}
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
    for key in ("model", "train", "task_options"):
        if not isinstance(spec.get(key), dict):
            raise ConfigError(f"{key} must be a mapping of settings, got {spec.get(key)!r}")
    if not config_file:
        preset = preset_path(task, spec["data"], spec["model_name"])
        if preset is not None:
            spec = _merge(read_config_file(preset), spec)
    spec = _merge(spec, {"model": model_overrides, "train": train_overrides, "task_options": task_overrides or {}})
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


# --- training and reloading a run, the same for every task -------------------------------------

@dataclass(frozen=True)
class TaskHooks:
    """What a task supplies so that runs are trained, resumed and reloaded the same way for every task."""

    name: str
    state_keys: frozenset[str]  # what the checkpoint's task_state must hold
    resolve: Callable[[dict[str, Any]], tuple[RunConfig, Any, dict[str, Any]]]  # spec -> run, data, task_state
    reload: Callable[[RunConfig, dict[str, Any]], Any]  # the run's data exactly as it was prepared
    objective: Callable[[RunConfig], TaskProtocol]
    datasets: Callable[[Any], tuple[Dataset, Dataset | None]]  # data -> training and validation sets


@dataclass
class FittedRun:
    run: RunConfig
    data: Any
    task_state: dict[str, Any]
    trainer: Trainer
    result: FitResult


def read_run_config(run_dir: str | Path) -> RunConfig:
    path = Path(run_dir) / "config.json"
    return RunConfig.from_dict(read_json(path, "run config"), str(path))


def checked_state(hooks: TaskHooks, run_dir: Path, run: RunConfig, checkpoint: str) -> dict[str, Any]:
    """Load a checkpoint of this run: its model and data must be the ones in config.json."""
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    state = load_checkpoint(path)
    saved = state.get("run_config")
    try:  # through ModelConfig, so that options added since the run (with their defaults) compare equal
        saved_model = ModelConfig.from_dict(saved["model"]).to_dict()
    except (TypeError, KeyError, ConfigError):
        saved_model = None
    if not isinstance(saved, dict) or saved_model != run.model.to_dict() or saved.get("data") != run.data:
        raise CheckpointError(f"{path}: checkpoint belongs to another run (its model or data differ from config.json)")
    task_state = state.get("task_state")
    if not isinstance(task_state, dict) or not hooks.state_keys <= set(task_state):
        raise CheckpointError(f"{run_dir}: checkpoint has no {hooks.name} state (not a {hooks.name} run?)")
    return state


def fit_run(hooks: TaskHooks, spec: dict[str, Any], run_dir: str | Path, *, resume: bool = False,
            verbose: bool = True, train_overrides: dict[str, Any] | None = None,
            on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> FittedRun:
    """Train (or resume) a run in ``run_dir`` up to the end of training; the task then evaluates it.

    On resume the saved ``config.json`` is authoritative; ``train_overrides`` may change only
    ``epochs``, ``patience`` and ``device``.
    """
    run_dir = prepare_run_dir(run_dir, resume)
    if resume:
        run = read_run_config(run_dir)
        changed = set(train_overrides or {}) - set(RESUMABLE_TRAIN_FIELDS)
        if changed:
            raise ConfigError(f"on resume only {', '.join(RESUMABLE_TRAIN_FIELDS)} may change; got "
                              f"{', '.join(sorted(changed))}")
        run.train = TrainConfig.from_dict({**run.train.to_dict(), **(train_overrides or {})})
        task_state = checked_state(hooks, run_dir, run, "last")["task_state"]
        data = hooks.reload(run, task_state)
    else:
        run, data, task_state = hooks.resolve(spec)
    seed_everything(run.train.seed)
    model = create_model(run.model)
    trainer = Trainer(model, hooks.objective(run), run.train, run_dir=run_dir, verbose=verbose,
                      checkpoint_extra={"run_config": run.to_dict(), "task_state": task_state},
                      on_epoch_end=on_epoch_end)
    if resume:
        trainer.resume()
    # Written only once the run can start (inputs valid, device available); on resume it records new epochs.
    atomic_write_json(run_dir / "config.json", run.to_dict())
    result = trainer.fit(*hooks.datasets(data))
    return FittedRun(run, data, task_state, trainer, result)


def load_run_model(hooks: TaskHooks, run_dir: str | Path, checkpoint: str = "best"
                   ) -> tuple[RunConfig, torch.nn.Module, dict[str, Any]]:
    """A saved run's config, its model (on the CPU, eval mode) and the checkpoint's state."""
    run_dir = Path(run_dir)
    run = read_run_config(run_dir)
    state = checked_state(hooks, run_dir, run, checkpoint)
    model = create_model(run.model)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{run_dir}: checkpoint does not match config.json ({mismatch_reason(exc)})") from None
    return run, model.eval(), state


def last_step_function(model: torch.nn.Module, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    """A model (put in eval mode) as the torch-free scoring and forecasting code calls networks: prepared numpy
    windows (B, w, D) -> the outputs (B, out_dim) at their last step."""
    model.eval()

    def last_step(windows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(windows).to(device), last_step_only=True)[:, 0].cpu().numpy()
    return last_step


def check_files_unchanged(recorded: dict[str, dict[str, str]], current: dict[str, dict[str, str]]) -> None:
    """Refuse to re-split a run's data when a file differs from the one it was trained on (by sha256)."""
    for role, record in recorded.items():
        now = current.get(role, {})
        if now.get("sha256") != record.get("sha256"):
            raise DataError(f"{now.get('path', record.get('path'))}: differs from the {role} data this run was "
                            f"trained on (sha256 {str(record.get('sha256'))[:12]}...); its split and scaling no "
                            "longer apply")


def reload_trained(load_trained: Callable[[str | Path, str], TrainedRun], hooks: TaskHooks, run_dir: str | Path,
                   checkpoint: str, device: str) -> tuple[TrainedRun, Any, torch.nn.Module, torch.device]:
    """For re-evaluation: the saved run, its data as prepared in training, and its model on ``device``."""
    torch_device = resolve_device(device)
    trained = load_trained(run_dir, checkpoint)
    data = hooks.reload(trained.run, trained.task_state)
    return trained, data, trained.model.to(torch_device), torch_device


def training_record(run: RunConfig, result: FitResult | None, device: torch.device) -> dict[str, Any]:
    """The part of metrics.json every task shares: how training went, the environment and the config."""
    record: dict[str, Any] = {}
    if result is not None:
        record.update({"epochs": result.epochs_run, "epochs_planned": run.train.epochs,
                       "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
                       "train_seconds": round(result.train_seconds, 3),
                       "seconds_per_epoch": round(result.train_seconds / max(result.epochs_run, 1), 4)})
    record["environment"] = environment_info(device)
    record["config"] = run.to_dict()
    return record
