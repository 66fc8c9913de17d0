"""The training loop shared by every task.

A task supplies three things (``TaskProtocol``): the training loss of a batch, an evaluation of a
dataset returning a metrics dict, and the key used to choose the best epoch on validation. The
engine owns the rest: batching with a seeded shuffle, Adam, gradient clipping, optional plateau LR
decay, early stopping, best/last checkpoints written atomically, exact resume (model, scores,
optimiser, scheduler, RNG states, epoch, early-stopping state, history), progress, and a JSON-lines
log of per-epoch metrics. Under torchrun it trains data-parallel (``sbts.training.distributed``): the same
global batches, each process a share, rank 0 the only writer and evaluator; ``--amp`` runs the forward
passes of training and validation under bf16 autocast on CUDA.
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sbts.atomic import atomic_write_bytes
from sbts.config import TrainConfig
from sbts.errors import CheckpointError, ConfigError, TrainingDivergedError
from sbts.training.checkpoint import load_checkpoint, save_checkpoint
from sbts.training.distributed import SINGLE_PROCESS, DistributedContext, slice_examples

try:
    from tqdm.auto import tqdm
except ImportError:  # tqdm is a dependency, but the loop must not die for a progress bar
    tqdm = None

SCORES_SUFFIX = "scores"  # the name of a sparse-binary linear's trainable scores
AMP_DTYPE = torch.bfloat16  # --amp: bf16 keeps float32's range, so the losses need no scaling


class TaskProtocol(Protocol):
    def training_loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor: ...

    def evaluate(self, model: nn.Module, dataset: Dataset, batch_size: int, device: torch.device) -> dict[str, float]: ...

    def selection_key(self, metrics: dict[str, float]) -> tuple[float, ...]: ...


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N; got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N; got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def mismatch_reason(exc: Exception) -> str:
    """The informative line of a load_state_dict error (its first line is only a preamble)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("size mismatch", "Missing key", "Unexpected key")):
            return line[:160]
    return lines[-1][:160] if lines else exc.__class__.__name__


def _to_device(batch, device: torch.device):
    """The batch's tensors on ``device``, keeping the batch's type (a tuple, or a named tuple the task reads)."""
    moved = [t.to(device) for t in batch]
    return type(batch)(*moved) if hasattr(batch, "_fields") else tuple(moved)


def check_amp(amp: bool, device: torch.device) -> None:
    """--amp is bf16 autocast on CUDA: refused on any other device."""
    if not amp:
        return
    if device.type != "cuda":
        raise ConfigError(f"--amp (bf16 autocast) needs a CUDA device; this run trains on {device}")
    if not torch.cuda.is_bf16_supported():
        raise ConfigError(f"--amp (bf16 autocast): {torch.cuda.get_device_name(device)} does not support bf16")


class TrainingLoss(nn.Module):
    """The task's training loss of a batch as a module: DistributedDataParallel all-reduces the gradients of
    what its wrapped module's forward computed, and the task may call the model's forward or its shared pass."""

    def __init__(self, model: nn.Module, task: TaskProtocol):
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.task.training_loss(self.model, batch)


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """Adam's parameter groups: the scores of sparse-binary linears at ``lr * score_lr_scale``, every other trainable
    parameter (dense weights, norms, learnable positions) at ``lr``. Each group keeps its ``lr_scale``, so the
    logged rate is the base one. At scale 1, one group: the optimiser of the runs before the option existed."""
    if config.score_lr_scale == 1.0:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": config.lr, "lr_scale": 1.0}]
    scores, others = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (scores if name.endswith(SCORES_SUFFIX) else others).append(parameter)
    groups = [(others, 1.0), (scores, config.score_lr_scale)]
    return [{"params": params, "lr": config.lr * scale, "lr_scale": scale} for params, scale in groups if params]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class FitResult:
    epochs_run: int
    best_epoch: int
    best_val: dict[str, float]
    history: list[dict[str, Any]]
    train_seconds: float
    stopped_early: bool
    interrupted: bool = False
    best_state: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)


class Trainer:
    """Fits ``model`` for ``task``; with ``run_dir`` it checkpoints to ``run_dir/checkpoints``. ``distributed``:
    this process's place under torchrun (it trains its share of every batch; only the writer writes and logs)."""

    def __init__(self, model: nn.Module, task: TaskProtocol, config: TrainConfig, *, run_dir: str | Path | None = None,
                 checkpoint_extra: dict[str, Any] | None = None, verbose: bool = True,
                 on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
                 distributed: DistributedContext = SINGLE_PROCESS):
        self.distributed = distributed
        self.device = distributed.process_device(resolve_device(config.device))
        check_amp(config.amp, self.device)
        self.model = model.to(self.device)
        self.loss_of = distributed.wrap(TrainingLoss(self.model, task))
        self.task = task
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.checkpoint_extra = checkpoint_extra or {}
        self.verbose = verbose
        self.on_epoch_end = on_epoch_end
        self.optimizer = torch.optim.Adam(parameter_groups(model, config), weight_decay=config.weight_decay)
        # Paper-spec §1.3: decay the LR by 0.75 only when validation has not improved for > 2 epochs.
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=1, gamma=0.75) if config.lr_decay_on_plateau else None
        self.shuffle_generator = torch.Generator().manual_seed(config.seed)
        self.epoch = 0
        self.best_key: tuple[float, ...] | None = None
        self.best_epoch = 0
        self.best_val: dict[str, float] = {}
        self.best_state: dict[str, torch.Tensor] = {}
        self.bad_epochs = 0
        self.history: list[dict[str, Any]] = []
        self.train_seconds = 0.0

    # --- checkpoints -------------------------------------------------------------------------
    @property
    def last_path(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "checkpoints" / "best.pt"

    def _state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "rng": {"torch": torch.get_rng_state(), "shuffle": self.shuffle_generator.get_state(),
                    "python": list(random.getstate()[1]), "python_version": random.getstate()[0],
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            "selection": {"best_key": list(self.best_key) if self.best_key else None, "best_epoch": self.best_epoch,
                          "best_val": self.best_val, "bad_epochs": self.bad_epochs},
            "history": self.history,
            "train_seconds": self.train_seconds,
            **self.checkpoint_extra,
        }

    def resume(self, path: str | Path | None = None) -> None:
        """Restore everything from the last checkpoint so training continues as if never stopped."""
        path = Path(path) if path is not None else self.last_path
        state = load_checkpoint(path)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler and state.get("scheduler"):
                self.scheduler.load_state_dict(state["scheduler"])
            rng = state["rng"]
            torch.set_rng_state(rng["torch"])
            self.shuffle_generator.set_state(rng["shuffle"])
            random.setstate((rng["python_version"], tuple(rng["python"]), None))
            if rng.get("cuda") and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            selection = state["selection"]
            self.epoch = int(state["epoch"])
            self.best_key = tuple(selection["best_key"]) if selection["best_key"] else None
            self.best_epoch, self.best_val = int(selection["best_epoch"]), dict(selection["best_val"])
            self.bad_epochs = int(selection["bad_epochs"])
            self.history = list(state["history"])
            self.train_seconds = float(state["train_seconds"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: checkpoint does not match this model or run ({mismatch_reason(exc)})") from None
        if self.run_dir is not None and self.best_path.is_file():
            self.best_state = load_checkpoint(self.best_path)["model"]
        else:
            self.best_state = copy.deepcopy(self.model.state_dict())

    # --- the loop ----------------------------------------------------------------------------
    @property
    def _reports_progress(self) -> bool:
        return self.verbose and self.distributed.is_writer

    def _log(self, message: str) -> None:
        if self._reports_progress:
            print(message, file=sys.stderr, flush=True)

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=AMP_DTYPE) if self.config.amp else contextlib.nullcontext()

    def _train_epoch(self, loader: DataLoader, slice_batch: Callable[[Any, int, int], Any]) -> float:
        self.model.train()
        total, count = 0.0, 0
        show_bar = self._reports_progress and tqdm is not None and sys.stderr.isatty()
        batches = tqdm(loader, desc=f"epoch {self.epoch + 1}", leave=False) if show_bar else loader
        for batch in batches:
            shard = self.distributed.shard(batch, slice_batch)
            batch = _to_device(shard.batch, self.device)
            self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                loss = self.loss_of(batch)
            if not torch.isfinite(loss):
                raise TrainingDivergedError(
                    f"training loss became {loss.item()} in epoch {self.epoch + 1} (lr {self.config.lr:g}); lower the lr"
                    + (f"; the last checkpoint holds epoch {self.epoch}" if self.run_dir is not None else ""))
            # The weight makes DDP's average of the processes' gradients the gradient of the global batch.
            (loss * shard.weight).backward()
            if self.config.grad_clip > 0:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.optimizer.step()
            total += loss.item() * shard.examples
            count += shard.examples
        total, count = self.distributed.sum([total, count])
        return total / max(count, 1)

    def _validate(self, dataset: Dataset) -> dict[str, float]:
        """The selection metrics: the writer's, shared with every process so that all decide alike."""
        metrics = None
        if self.distributed.is_writer:
            with self._autocast():
                metrics = self.task.evaluate(self.model, dataset, self.config.batch_size * 8, self.device)
        return self.distributed.from_writer(metrics)

    def fit(self, train_set: Dataset, val_set: Dataset | None) -> FitResult:
        """Train until ``config.epochs`` or early stopping; select the best epoch on ``val_set``.

        Without a validation set the best epoch is chosen on the training set (and says so).
        """
        # A prebatched set (the shared pass's blocks) yields whole batches: no batching, only their order shuffled;
        # it says how a batch splits between processes.
        prebatched = getattr(train_set, "prebatched", False)
        loader = DataLoader(train_set, batch_size=None if prebatched else self.config.batch_size, shuffle=True,
                            generator=self.shuffle_generator)
        slice_batch = train_set.slice_batch if prebatched else slice_examples
        selection_set, selection_name = (val_set, "val") if val_set is not None else (train_set, "train")
        stopped_early = interrupted = False
        if not self.best_state:
            self.best_state = copy.deepcopy(self.model.state_dict())
        if self.run_dir is not None and self.epoch == 0:
            self._persist(improved=False)  # epoch 0: an interruption during the first epoch can still resume
        try:
            while self.epoch < self.config.epochs:
                if self.config.patience and self.bad_epochs >= self.config.patience:
                    stopped_early = True
                    break
                start = time.perf_counter()
                train_loss = self._train_epoch(loader, slice_batch)
                metrics = self._validate(selection_set)
                self.train_seconds += time.perf_counter() - start
                self.epoch += 1
                key = self.task.selection_key(metrics)
                improved = self.best_key is None or key > self.best_key
                if improved:
                    self.best_key, self.best_epoch, self.best_val, self.bad_epochs = key, self.epoch, metrics, 0
                    self.best_state = copy.deepcopy(self.model.state_dict())
                else:
                    self.bad_epochs += 1
                    if self.scheduler is not None and self.bad_epochs > 2:
                        self.scheduler.step()
                record = {"epoch": self.epoch, "train_loss": train_loss,
                          **{f"{selection_name}_{k}": v for k, v in metrics.items()},
                          "lr": self.optimizer.param_groups[0]["lr"] / self.optimizer.param_groups[0]["lr_scale"],
                          "best_epoch": self.best_epoch,
                          "seconds": round(self.train_seconds, 3)}
                self.history.append(record)
                self._persist(improved)
                self._log("epoch {epoch}/{total} train_loss {train_loss:.4f} {sel} best_epoch {best}".format(
                    epoch=self.epoch, total=self.config.epochs, train_loss=train_loss, best=self.best_epoch,
                    sel=" ".join(f"{selection_name}_{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))))
                if self.on_epoch_end is not None:
                    self.on_epoch_end(self.epoch, record)
        except KeyboardInterrupt:
            interrupted = True
            self._log(f"interrupted after {self.epoch} finished epoch(s)"
                      + ("; the last checkpoint holds them (resume to continue)" if self.run_dir is not None else ""))
        self.model.load_state_dict(self.best_state)
        return FitResult(self.epoch, self.best_epoch, self.best_val, self.history, self.train_seconds,
                         stopped_early, interrupted, self.best_state)

    def _persist(self, improved: bool) -> None:
        if self.run_dir is None or not self.distributed.is_writer:
            return
        state = self._state()
        if improved:
            save_checkpoint(self.best_path, state)
        save_checkpoint(self.last_path, state)
        # Rewritten whole from the history so the log always matches the last checkpoint.
        atomic_write_bytes(self.run_dir / "log.jsonl", "".join(json.dumps(r) + "\n" for r in self.history).encode())
