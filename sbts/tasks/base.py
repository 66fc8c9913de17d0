"""The task protocol: one ``Task`` base owns a run's lifecycle, each task overrides only its semantics.

The lifecycle, the same for every task (template methods of ``Task``)::

    load the data (load)  ->  the run's configuration (run_config: the option table's defaults, then the
    preset or config file, then the command line)  ->  split, scale, window (prepare)  ->  train and
    select on validation (train)  ->  evaluate, write metrics.json and the task's files (report)  ->
    reload a checkpoint (load_trained)  ->  what an exported model keeps (inference_state)

A task subclass says what its data are, what the model's output means (its loss, ``evaluate`` and
``selection_key``: the ``TaskProtocol`` of the training engine), its metrics and baselines (``report``)
and its runtime head (named in ``sbts.registry``). Its options are declared once (``options_class``,
``defaults``, ``model_defaults``): see ``sbts.tasks.options``.
"""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch.utils.data import Dataset

from sbts.atomic import atomic_write_bytes
from sbts.config import DEFAULT_MODEL, ModelConfig, RunConfig, TaskOptions, TrainConfig
from sbts.data.preprocessing import ChannelScaler
from sbts.errors import CheckpointError, ConfigError
from sbts.export.artifact import ExportResult, export_c_model, export_model
from sbts.export.c_build import CExportResult
from sbts.export.c_source import DEFAULT_WEIGHT_FORM
from sbts.export.onnx import export_onnx
from sbts.models import create_model, list_models, model_config, model_defaults
from sbts.tasks.options import MODEL_SECTION, TASK_SECTION, TRAIN_SECTION, Option, default_values, task_options
from sbts.tasks.runs import (RESUMABLE_TRAIN_FIELDS, TrainedRun, check_files_unchanged, checked_state, prepare_run_dir,
                             read_run_config, training_record)
from sbts.training import FitResult, Trainer, atomic_write_json, resolve_device, seed_everything
from sbts.training.distributed import (BATCH_NORM_WARNING, SINGLE_PROCESS, DistributedContext,
                                      distributed_from_environment)
from sbts.training.engine import mismatch_reason

EVAL_BATCH = 256  # examples per forward call when evaluating: bounds memory, does not change results


@dataclasses.dataclass
class NoTaskOptions(TaskOptions):
    """A task without options of its own."""


@dataclasses.dataclass
class DataSource:
    """A loaded dataset: the spec a run records (canonical: it means the same files from anywhere) and the data."""

    spec: str
    data: Any  # the task's own type; it has ``files``: each file read, with its sha256
    fit_only: bool = False  # all of it is for fitting (an estimator's fit): no test period

    @property
    def files(self) -> dict[str, dict[str, str]]:
        return self.data.files


@dataclasses.dataclass
class TaskReport:
    """What evaluating a model gives: the task's part of metrics.json and the files a training run writes."""

    metrics: dict[str, Any]
    files: dict[str, bytes] = dataclasses.field(default_factory=dict)


class Task:
    """Base of every task. Subclasses set the class attributes and override the semantic methods."""

    name: ClassVar[str]
    options_class: ClassVar[type[TaskOptions]] = NoTaskOptions
    # Options the task's baselines depend on: a sweep report compares runs that differ in them apart.
    baseline_options: ClassVar[tuple[str, ...]] = ()
    option_names: ClassVar[dict[str, str]] = {}  # task option field -> its flat name (fractions -> split_fractions)
    window_option: ClassVar[str] = "window"  # the flat name of ModelConfig.max_len
    excluded_train_options: ClassVar[tuple[str, ...]] = ()  # TrainConfig fields that do not apply
    # ModelConfig fields that do not apply: the linear path needs a last-step output whose target is not in the
    # window (a detector's path would copy its input; a classifier pools every step)
    excluded_model_options: ClassVar[tuple[str, ...]] = ("linear_path",)
    defaults: ClassVar[dict[str, Any]] = {}  # flat option name -> this task's default
    model_defaults: ClassVar[dict[str, dict[str, Any]]] = {}  # model name -> ModelConfig fields for this task
    auto_help: ClassVar[dict[str, str]] = {}  # option -> how the task decides it when left at None
    option_help: ClassVar[dict[str, str]] = {}  # option -> this task's help text, where the field's does not fit
    cli_aliases: ClassVar[dict[str, tuple[str, ...]]] = {}  # option -> other flags kept for it on the command line
    state_keys: ClassVar[frozenset[str]] = frozenset({"scaler", "files"})  # what a checkpoint's task_state holds
    data_help: ClassVar[str] = "dataset name or path"
    # The dataset spec as a run records it (a name, or the absolute paths of its files): what --data is compared
    # with on --resume. A task whose load canonicalises sets its own.
    canonical_data: ClassVar[Callable[[str], str]] = staticmethod(lambda data: data)

    # --- options --------------------------------------------------------------------------------------
    @classmethod
    def options(cls) -> list[Option]:
        return task_options(cls)

    @classmethod
    def defaults_for_model(cls, model_name: str) -> dict[str, Any]:
        """ModelConfig fields a model name gets in this task unless given: the registry's, then the task's."""
        return {**model_defaults(model_name), **cls.model_defaults.get(model_name, {})}

    @classmethod
    def model_defaults_keys(cls) -> set[str]:
        """Model options whose default depends on the model name."""
        keys = {key for name in list_models() for key in cls.defaults_for_model(name)}
        return keys - {"linear"}

    @classmethod
    def describe_model_default(cls, key: str) -> str:
        """The default of a model option whose value depends on the model, e.g. "step_t for sbt, full for dense"."""
        field = next(f for f in dataclasses.fields(ModelConfig) if f.name == key)
        values = {name: cls.defaults_for_model(name).get(key, field.default) for name in list_models()}
        if len(set(values.values())) == 1:
            return str(next(iter(values.values())))
        # ModelConfig's None density is "every weight" for a dense model.
        return ", ".join(f"{'every weight' if value is None else value} for {name}"
                         for name, value in sorted(values.items(), key=lambda item: item[0] != DEFAULT_MODEL))

    # --- semantics: what a task overrides -----------------------------------------------------------
    def load(self, data: str, missing_value: float | None = None) -> DataSource:
        """The dataset named or pointed at by ``data``; cells equal to ``missing_value`` are missing."""
        raise NotImplementedError

    def load_for(self, spec: dict[str, Any]) -> DataSource:
        """The data of a run specification (or a run's config), read as its task options say."""
        options = spec.get(TASK_SECTION) or {}
        missing_value = options.get("missing_value") if isinstance(options, dict) else None
        return self.load(spec["data"], self.options_class.from_dict({"missing_value": missing_value}).missing_value)

    def complete_model(self, fields: dict[str, Any], source: DataSource, options: TaskOptions) -> dict[str, Any]:
        """The model fields with the data-derived ones (channels, outputs, ...) filled in and checked (``options``:
        the run's task options)."""
        raise NotImplementedError

    def complete_train(self, fields: dict[str, Any], model: ModelConfig) -> dict[str, Any]:
        """The training fields with those the task decides from the model (``auto_help`` says how) filled in."""
        return fields

    def check_run(self, run: RunConfig, source: DataSource) -> None:
        """Refuse a configuration the task cannot train, before anything starts."""

    def prepare(self, source: DataSource, run: RunConfig, state: dict[str, Any] | None = None) -> Any:
        """Split, scale and window the data as the run says (with a checkpoint's ``state``: exactly as then)."""
        raise NotImplementedError

    def task_state(self, data: Any) -> dict[str, Any]:
        """What a checkpoint keeps to prepare the data again exactly (scaler, splits, names)."""
        return {"scaler": data.scaler.to_dict(), "files": data.files}

    def datasets(self, data: Any, run: RunConfig) -> tuple[Dataset, Dataset | None]:
        return data.train_set(), data.val_set()

    def training_loss(self, model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, model: torch.nn.Module, dataset: Dataset, batch_size: int,
                 device: torch.device) -> dict[str, float]:
        raise NotImplementedError

    def selection_key(self, metrics: dict[str, float]) -> tuple[float, ...]:
        return (-metrics["loss"],)

    def report(self, run: RunConfig, model: torch.nn.Module, data: Any, device: torch.device) -> TaskReport:
        """The task's metrics (and files) for a trained model."""
        raise NotImplementedError

    def inference_state(self, run: RunConfig, state: dict[str, Any], run_dir: Path, checkpoint: str,
                        epoch: int | None) -> dict[str, Any]:
        """The JSON-safe facts an exported model keeps besides its weights (class names, threshold, ...)."""
        return {}

    @staticmethod
    def channels_in_and_out(fields: dict[str, Any], n_channels: int, what: str = "channels",
                            out_dim: int | None = None) -> dict[str, Any]:
        """The model fields of a network that outputs every input channel (``out_dim``: that many values instead,
        e.g. several steps of each; ``what``: their name in errors)."""
        derived = {"in_channels": n_channels, "out_dim": n_channels if out_dim is None else out_dim}
        for key, value in derived.items():
            if key in fields and fields[key] != value:  # a config written for other data
                raise ConfigError(f"model {key} is {fields[key]!r} in the config, but the data and options give "
                                  f"{value} ({n_channels} {what})")
        return {**fields, **derived}

    # --- the lifecycle, the same for every task -----------------------------------------------------------
    def run_config(self, spec: dict[str, Any], source: DataSource) -> RunConfig:
        """A run specification (sections of settings, any of them partial) -> the complete, checked config."""
        model_name = spec.get("model_name", DEFAULT_MODEL)
        if not isinstance(model_name, str):
            raise ConfigError(f"model name must be a string, got {model_name!r}")
        for_model = self.defaults_for_model(model_name)  # also checks the name
        options = self.options_class.from_dict(spec.get(TASK_SECTION, {}))
        given = dict(spec.get(MODEL_SECTION, {}))
        inert = {f.name: f.default for f in dataclasses.fields(ModelConfig) if f.name in self.excluded_model_options}
        for key, value in inert.items():
            if key in given and given[key] != value:
                raise ConfigError(f"model.{key}={given[key]!r}: {key} is not an option of {self.name}")
        linear = given.pop("linear", for_model["linear"])  # a run's own config.json names it: it must agree
        if linear != for_model["linear"]:
            raise ConfigError(f"model.linear is {linear!r}, but model {model_name!r} has {for_model['linear']} linears "
                              "(the model name decides it)")
        defaults = {**{key: value for key, value in default_values(type(self), MODEL_SECTION).items()
                       if key not in self.model_defaults_keys()},
                    **{key: value for key, value in for_model.items() if key != "linear"}}
        if "sparsity" in given:  # the other name of the density: the default density must not contradict it
            defaults.pop("density", None)
        model = model_config(model_name, **self.complete_model({**defaults, **given}, source, options))
        train = TrainConfig.from_dict(self.complete_train({**default_values(type(self), TRAIN_SECTION),
                                                           **spec.get(TRAIN_SECTION, {})}, model), "train config")
        run = RunConfig(task=self.name, data=source.spec, model=model, train=train, model_name=model_name,
                        task_options=options.to_dict())
        self.check_run(run, source)
        return run

    def resolve(self, spec: dict[str, Any]) -> tuple[RunConfig, Any, dict[str, Any]]:
        """A run specification -> its config, its data prepared, and the state its checkpoints keep."""
        source = self.load_for(spec)
        run = self.run_config(spec, source)
        data = self.prepare(source, run)
        return run, data, self.task_state(data)

    def reload(self, run: RunConfig, state: dict[str, Any]) -> Any:
        """The run's data exactly as it was prepared when the run started (the files must not have changed)."""
        source = self.load_for(run.to_dict())
        check_files_unchanged(state.get("files", {}), source.files)
        return self.prepare(source, run, state)

    def train(self, run: RunConfig, data: Any, *, run_dir: Path | None = None, resume: bool = False,
              task_state: dict[str, Any] | None = None, verbose: bool = True,
              on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
              distributed: DistributedContext = SINGLE_PROCESS) -> tuple[Trainer, FitResult]:
        """Train a model for the run on the prepared data (checkpointed in ``run_dir`` when given; by this
        process's share under torchrun, ``distributed``)."""
        seed_everything(run.train.seed)
        extra = None if run_dir is None else {"run_config": run.to_dict(), "task_state": task_state}
        trainer = Trainer(create_model(run.model), self, run.train, run_dir=run_dir, verbose=verbose,
                          checkpoint_extra=extra, on_epoch_end=on_epoch_end, distributed=distributed)
        if distributed.is_distributed and distributed.is_writer and run.model.norm == "batch":
            warnings.warn(BATCH_NORM_WARNING)
        if resume:
            trainer.resume()
        distributed.barrier()  # every process has checked and read the run directory before the writer writes
        if run_dir is not None and distributed.is_writer:  # once the run can start; on resume: the new epoch budget
            atomic_write_json(run_dir / "config.json", run.to_dict())
        return trainer, trainer.fit(*self.datasets(data, run))

    def train_run(self, spec: dict[str, Any], run_dir: str | Path, *, resume: bool = False, verbose: bool = True,
                  train_overrides: dict[str, Any] | None = None,
                  on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
                  force: bool = False) -> dict[str, Any]:
        """Train (or resume) a run in ``run_dir``; writes metrics.json and the task's files, returns the metrics.

        On resume the saved config.json is authoritative; ``train_overrides`` may change only ``epochs``,
        ``patience``, ``device`` and ``amp``. Interrupted: returns ``{"interrupted": True, ...}`` and the last
        checkpoint holds the finished epochs. Under torchrun every process trains its share and rank 0 alone
        writes and reports; the other processes return the metrics of training only (header and training record).
        A resumed run without a checkpoint yet starts over from epoch 0 with its saved config; ``force`` replaces
        an existing run, once the new one's inputs have been read.
        """
        run_dir = Path(run_dir)
        start = prepare_run_dir(run_dir, resume, force)
        if start == "restart":
            saved = read_run_config(run_dir).to_dict()
            spec = {**saved, "train": {**saved["train"], **(train_overrides or {})}}
        resume = start == "resume"
        if resume:
            run = read_run_config(run_dir)
            if run.task != self.name:
                raise CheckpointError(f"{run_dir}: the run is of task {run.task}, not {self.name}")
            changed = set(train_overrides or {}) - set(RESUMABLE_TRAIN_FIELDS)
            if changed:
                raise ConfigError(f"on resume only {', '.join(RESUMABLE_TRAIN_FIELDS)} may change; got "
                                  f"{', '.join(sorted(changed))}")
            run.train = TrainConfig.from_dict({**run.train.to_dict(), **(train_overrides or {})})
            task_state = checked_state(self.name, self.state_keys, run_dir, run, "last")["task_state"]
            data = self.reload(run, task_state)
        else:
            run, data, task_state = self.resolve(spec)
        if start == "replace":
            shutil.rmtree(run_dir)
        with distributed_from_environment(resolve_device(run.train.device)) as distributed:
            trainer, result = self.train(run, data, run_dir=run_dir, resume=resume, task_state=task_state,
                                         verbose=verbose, on_epoch_end=on_epoch_end, distributed=distributed)
            if result.interrupted:
                return {"interrupted": True, "epochs": result.epochs_run, "run_dir": str(run_dir)}
            distributed.barrier()  # the writer holds the last checkpoint; it reports alone, without the group
        record = training_record(run, result, trainer.device, distributed.world_size)
        if not distributed.is_writer:
            return {**self.metrics_header(run), **record}
        report = self.report(run, trainer.model, data, trainer.device)
        metrics = {**self.metrics_header(run), **report.metrics, **record}
        for name, content in report.files.items():
            atomic_write_bytes(run_dir / name, content)
        atomic_write_json(run_dir / "metrics.json", metrics)
        return metrics

    def metrics_header(self, run: RunConfig) -> dict[str, Any]:
        return {"task": self.name, "model": run.model_name, "dataset": run.data, "density": run.model.density,
                "sparsity": run.model.sparsity, "seed": run.train.seed}

    def load_trained(self, run_dir: str | Path, checkpoint: str = "best") -> TrainedRun:
        """A saved run's model (on the CPU, eval mode) and what inference needs besides the weights."""
        run_dir = Path(run_dir)
        run = read_run_config(run_dir)
        state = checked_state(self.name, self.state_keys, run_dir, run, checkpoint)
        model = create_model(run.model)
        try:
            model.load_state_dict(state["model"])
        except (KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{run_dir}: checkpoint does not match config.json "
                                  f"({mismatch_reason(exc)})") from None
        task_state = state["task_state"]
        return TrainedRun(run, model.eval(), state.get("epoch"), task_state,
                          self.inference_state(run, task_state, run_dir, checkpoint, state.get("epoch")),
                          self.scaler_of(task_state))

    @staticmethod
    def scaler_of(task_state: dict[str, Any]) -> ChannelScaler:
        return ChannelScaler.from_dict(task_state["scaler"])

    def evaluate_run(self, run_dir: str | Path, *, checkpoint: str = "best", device: str = "auto") -> dict[str, Any]:
        """Re-evaluate a saved run's checkpoint on its data (nothing is written)."""
        torch_device = resolve_device(device)
        trained = self.load_trained(run_dir, checkpoint)
        data = self.reload(trained.run, trained.task_state)
        model = trained.model.to(torch_device)
        report = self.report(trained.run, model, data, torch_device)
        return {**self.metrics_header(trained.run), **report.metrics,
                **training_record(trained.run, None, torch_device), "checkpoint": checkpoint, "epoch": trained.epoch}

    def export_run(self, run_dir: str | Path, path: str | Path, *, checkpoint: str = "best",
                   float_dtype: str = "float32") -> ExportResult:
        """A saved run's checkpoint as a ``.sbts`` artifact with what inference needs."""
        trained = self.load_trained(run_dir, checkpoint)
        return export_model(trained.model, path, task=self.name, inference_state=trained.inference_state,
                            scaler=trained.scaler, float_dtype=float_dtype)

    def export_c_run(self, run_dir: str | Path, directory: str | Path, *, checkpoint: str = "best",
                     weight_form: str = DEFAULT_WEIGHT_FORM, force: bool = False) -> CExportResult:
        """A saved run's checkpoint as C99 source and header in ``directory`` (``sbts.export.c_source``)."""
        trained = self.load_trained(run_dir, checkpoint)
        return export_c_model(trained.model, directory, task=self.name, inference_state=trained.inference_state,
                              scaler=trained.scaler, weight_form=weight_form, force=force)

    def export_onnx_run(self, run_dir: str | Path, path: str | Path, *, checkpoint: str = "best",
                        padding_mask_input: bool = True) -> Path:
        """A saved run's checkpoint as ONNX (the per-step network; inputs scaled as in training), its metadata
        props describing the task, the scaler and the class names (``sbts.export.onnx``)."""
        trained = self.load_trained(run_dir, checkpoint)
        return export_onnx(trained.model, path, task=self.name, inference_state=trained.inference_state,
                           scaler=trained.scaler, padding_mask_input=padding_mask_input)
