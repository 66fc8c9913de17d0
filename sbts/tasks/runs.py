"""Run directories and run specifications: what every task's lifecycle (``sbts.tasks.base``) shares.

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
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from sbts import __version__
from sbts.atomic import read_json
from sbts.config import DEFAULT_MODEL, ModelConfig, RunConfig, read_config_file
from sbts.configs import preset_path
from sbts.data.preprocessing import ChannelScaler
from sbts.errors import CheckpointError, ConfigError, DataError, SBTSError
from sbts.heads.network import SHARED_CHUNK, SeriesNetwork, SharedLastSteps
from sbts.registry import task_class
from sbts.tasks.options import check_preset
from sbts.training import FitResult, load_checkpoint

# The only settings a resumed run may change; everything else stays as in its config.json. Device and amp say
# where and in which precision the same computation runs.
RESUMABLE_TRAIN_FIELDS = ("epochs", "patience", "device", "amp")


@dataclass
class TrainedRun:
    """A saved run's trained model and what inference needs besides the weights."""

    run: RunConfig
    model: torch.nn.Module  # on the CPU, in eval mode
    epoch: int | None
    task_state: dict[str, Any]  # everything the checkpoint recorded about data and splits
    inference_state: dict[str, Any]  # the JSON-safe part an exported model keeps (class names)
    scaler: ChannelScaler  # input statistics of the training data


DENSITY_NAMES = ("density", "sparsity")  # two names of one setting: a higher layer's either replaces both


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    if any(name in update for name in DENSITY_NAMES):
        for name in DENSITY_NAMES:
            merged.pop(name, None)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


DERIVED_FIELDS = ("in_channels", "out_dim")  # model fields every task fills in from its data


def build_run_spec(task: str, *, data: str | None, model_name: str | None, config_file: str | None,
                   model_overrides: dict[str, Any], train_overrides: dict[str, Any],
                   task_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run specification from, in order: the paper preset for the dataset (only without a config
    file), a config file, then the command line's values. Each file may set only the task's options."""
    task_type = task_class(task)
    spec: dict[str, Any] = {"task": task, "model": {}, "train": {}, "task_options": {}}
    if config_file:
        user = read_config_file(config_file)
        if user.get("task", task) != task:
            raise ConfigError(f"{config_file}: task is {user['task']!r}, but the command trains {task!r}")
        check_preset(task_type, user, str(config_file))
        spec = _merge(spec, user)
    if data is not None:
        spec["data"] = data
    if model_name is not None:
        spec["model_name"] = model_name
    spec.setdefault("model_name", DEFAULT_MODEL)
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
            settings = read_config_file(preset)
            check_preset(task_type, settings, str(preset))
            # Its channel and output counts state the paper's shapes (for summaries of the preset itself); a run
            # derives them from its data and options (a forecaster's horizon multiplies the outputs).
            settings["model"] = {k: v for k, v in (settings.get("model") or {}).items() if k not in DERIVED_FIELDS}
            spec = _merge(settings, spec)
    spec = _merge(spec, {"model": model_overrides, "train": train_overrides, "task_options": task_overrides or {}})
    return spec


RUN_STARTS = ("new", "resume", "restart", "replace")


def prepare_run_dir(run_dir: str | Path, resume: bool, force: bool = False) -> str:
    """How a run starts in ``run_dir``: ``new`` (absent or empty), ``resume`` (from its last checkpoint),
    ``restart`` (resumed before its first checkpoint was written: from epoch 0, with its saved config) or
    ``replace`` (``force`` on an existing run: the caller removes it once the new run's inputs are checked).
    Nothing is created or removed here, so a run that fails on its inputs leaves the directory as it was."""
    run_dir = Path(run_dir)
    has_config = (run_dir / "config.json").is_file()
    if resume:
        if has_config and (run_dir / "checkpoints" / "last.pt").is_file():
            return "resume"
        if has_config:
            return "restart"
        raise CheckpointError(f"{run_dir}: nothing to resume (needs config.json and checkpoints/last.pt)")
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        if not force:
            raise SBTSError(f"{run_dir}: run directory exists and is not empty; choose a new --out, pass --resume, "
                            "or --force to replace it")
        if not has_config:
            raise SBTSError(f"{run_dir}: not a run directory (no config.json); --force replaces runs only")
        return "replace"
    return "new"


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


def environment_info(device: torch.device, processes: int = 1) -> dict[str, Any]:
    """Where a run ran; ``processes``: how many trained it together (torchrun), ``device`` is rank 0's."""
    return {"sbts_version": __version__, "torch_version": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "processor": platform.processor() or None, "device": str(device),
            "processes": processes, "torch_threads": torch.get_num_threads(), "git_commit": git_commit()}


# --- reading a run back -------------------------------------------------------------------------

def read_run_config(run_dir: str | Path) -> RunConfig:
    path = Path(run_dir) / "config.json"
    return RunConfig.from_dict(read_json(path, "run config"), str(path))


def checked_state(task: str, state_keys: frozenset[str], run_dir: Path, run: RunConfig,
                  checkpoint: str) -> dict[str, Any]:
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
    if not isinstance(task_state, dict) or not state_keys <= set(task_state):
        raise CheckpointError(f"{run_dir}: checkpoint has no {task} state (not a {task} run?)")
    return state


def last_step_function(model: torch.nn.Module, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    """A model (put in eval mode) as the torch-free scoring and forecasting code calls networks: prepared numpy
    windows (B, w, D) -> the outputs (B, out_dim) at their last step."""
    model.eval()

    def last_step(windows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(windows).to(device), last_step_only=True)[:, 0].cpu().numpy()
    return last_step


class SharedBlock(NamedTuple):
    """A training batch for the shared pass: ``len(ends)`` consecutive targets of one series and the rows their
    windows cover (and the ``horizon - 1`` after the last). ``zeroed``: the windows' last rows are target slots
    (forecasting); ``change``: the target is the change from the row before; ``horizon``: rows forecast from each
    window's last one on (0-d tensors)."""

    ends: torch.Tensor  # (K,) positions in rows
    rows: torch.Tensor  # (L, D)
    zeroed: torch.Tensor
    change: torch.Tensor
    horizon: torch.Tensor


class SharedBlocks(Dataset):
    """Training examples of a streamable model as blocks of ``block`` consecutive targets (one optimiser step
    each, in shuffled order): a block costs one pass over its rows instead of one per window. Targets are the
    window ends ``ends`` of ``rows`` (N, D) (and the ``horizon - 1`` rows after each), grouped within each of
    ``parts`` (start, stop) of the rows."""

    prebatched = True  # each item is a whole batch

    def __init__(self, rows: np.ndarray, window: int, ends: np.ndarray, parts: list[tuple[int, int]], block: int,
                 zeroed: bool = False, change: bool = False, horizon: int = 1):
        self.rows, self.past = torch.from_numpy(np.ascontiguousarray(rows, np.float32)), window - 1
        self.flags = torch.tensor(zeroed), torch.tensor(change), torch.tensor(horizon)
        self.blocks = [chosen[i:i + block] for start, stop in parts
                       for chosen in [ends[(ends >= start) & (ends < stop)]] for i in range(0, len(chosen), block)]

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> SharedBlock:
        ends = self.blocks[index]
        first, last = int(ends[0]) - self.past, int(ends[-1]) + int(self.flags[2])
        return SharedBlock(torch.from_numpy(ends - first), self.rows[first:last], *self.flags)

    def slice_batch(self, block: SharedBlock, start: int, stop: int) -> SharedBlock:
        """Targets ``start:stop`` of a block with only the rows their windows cover: one process's share under
        torchrun (a target's output depends on its window's rows only, so the share's pass is the block's)."""
        ends = block.ends[start:stop]
        first, last = int(ends[0]) - self.past, int(ends[-1]) + int(block.horizon)
        return SharedBlock(ends - first, block.rows[first:last], block.zeroed, block.change, block.horizon)


def shared_block_loss(model: torch.nn.Module, block: SharedBlock) -> torch.Tensor:
    """The windowed tasks' loss through the shared pass: MSE between the last-step outputs (plus the row before
    for a change target) and the rows at the block's targets (each and the ``horizon - 1`` after it)."""
    rows = block.rows[None]
    queries = torch.zeros(1, len(block.ends), rows.shape[2], device=rows.device) if bool(block.zeroed) else None
    horizon = int(block.horizon)
    out = model.last_steps(rows, block.ends, queries)[0].reshape(len(block.ends), horizon, rows.shape[2])
    if bool(block.change):
        out = out + block.rows[block.ends - 1][:, None]
    return F.mse_loss(out, block.rows[block.ends[:, None] + torch.arange(horizon, device=rows.device)])


def trains_shared(config: ModelConfig) -> bool:
    """Whether a model trains through the shared pass: streamable, and no batch norm (whose training statistics
    would gather other rows than the windows')."""
    return config.streamable and config.norm != "batch"


def series_network(model: torch.nn.Module, device: torch.device) -> SeriesNetwork:
    """A model (put in eval mode) as the numpy heads call it: window by window, and for a streamable model
    through its shared pass (``TimeSeriesTransformer.last_steps``)."""
    return SeriesNetwork(last_step_function(model, device),
                         _shared_last_steps(model, device) if model.config.streamable else None)


def _shared_last_steps(model: torch.nn.Module, device: torch.device) -> SharedLastSteps:
    model.eval()
    past = model.config.max_len - 1

    def last_steps(history: np.ndarray, zero_queries: bool) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(history) - past, SHARED_CHUNK):
                rows = torch.from_numpy(history[start:start + SHARED_CHUNK + past]).to(device)[None]
                ends = torch.arange(past, rows.shape[1], device=device)
                queries = torch.zeros(1, len(ends), rows.shape[2], device=device) if zero_queries else None
                out.append(model.last_steps(rows, ends, queries)[0].cpu().numpy())
        return np.concatenate(out) if out else np.empty((0, model.config.out_dim), np.float32)
    return last_steps


def check_files_unchanged(recorded: dict[str, dict[str, str]], current: dict[str, dict[str, str]]) -> None:
    """Refuse to re-split a run's data when a file differs from the one it was trained on (by sha256)."""
    for role, record in recorded.items():
        now = current.get(role, {})
        if now.get("sha256") != record.get("sha256"):
            raise DataError(f"{now.get('path', record.get('path'))}: differs from the {role} data this run was "
                            f"trained on (sha256 {str(record.get('sha256'))[:12]}...); its split and scaling no "
                            "longer apply")


def training_record(run: RunConfig, result: FitResult | None, device: torch.device,
                    processes: int = 1) -> dict[str, Any]:
    """The part of metrics.json every task shares: how training went, the environment and the config."""
    record: dict[str, Any] = {}
    if result is not None:
        record.update({"epochs": result.epochs_run, "epochs_planned": run.train.epochs,
                       "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
                       "train_seconds": round(result.train_seconds, 3),
                       "seconds_per_epoch": round(result.train_seconds / max(result.epochs_run, 1), 4)})
    record["environment"] = environment_info(device, processes)
    record["config"] = run.to_dict()
    return record
