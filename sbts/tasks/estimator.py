"""One estimator base for the three scikit-learn style estimators.

An estimator is a task (``sbts.tasks.base.Task``) run on arrays in memory instead of files. Its
constructor parameters are the task's option table (``sbts.tasks.options``), generated, so the
estimator and ``sbts train <task>`` cannot disagree on a name or a default: both turn the same option
values into the same ``RunConfig`` through ``Task.run_config``. ``random_state`` is the option
``seed``. ``fit`` is a template: the subclass turns its arrays into the task's data source
(``_source``) and records what its predictions need (``_fitted``).
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any, ClassVar

import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from sbts.config import RunConfig
from sbts.errors import SBTSError
from sbts.export.artifact import ExportResult, build_artifact, export_c_model, export_model
from sbts.export.c_build import CExportResult
from sbts.export.c_source import DEFAULT_WEIGHT_FORM
from sbts.runtime.artifact import artifact_bytes, load_artifact_bytes, network_tensors
from sbts.runtime.streaming import StepStream
from sbts.tasks.base import DataSource, Task
from sbts.tasks.options import FILE_OPTIONS, Option, spec_from_options

IN_MEMORY = "arrays"  # what a run fitted by an estimator records as its data


class NotFittedYet(SBTSError, NotFittedError):
    """scikit-learn's NotFittedError that is also an sbts error (one line, names the estimator)."""


def _generated_init(options: list[Option]):
    """``__init__`` taking every option as a keyword (with the table's default), plus ``verbose``."""
    parameters = [(option.estimator_parameter, option.default) for option in options] + [("verbose", False)]
    names = [name for name, _ in parameters]

    def __init__(self, **kwargs: Any) -> None:
        if "seed" in kwargs:  # the name before random_state
            warnings.warn("seed= is deprecated; use random_state=", FutureWarning, stacklevel=2)
            kwargs.setdefault("random_state", kwargs.pop("seed"))
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {unknown[0]!r}")
        for name, default in parameters:
            setattr(self, name, kwargs.get(name, default))

    __init__.__signature__ = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default) for name, default in parameters])
    return __init__


def _parameter_docs(task: type[Task], options: list[Option]) -> str:
    lines = [f"    {o.estimator_parameter} (default {o.default_text}): {o.help}" for o in options]
    return "\n".join(["Parameters (the options of ``sbts train " + task.name + "``):", *lines,
                      "    verbose (default False): per-epoch lines on stderr"])


class SBTEstimator(BaseEstimator):
    """Base of ``SBTClassifier``, ``SBTAnomalyDetector`` and ``SBTForecaster``."""

    task_class: ClassVar[type[Task]]
    excluded_options: ClassVar[tuple[str, ...]] = ()  # task options that mean nothing to fit on arrays

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "task_class" in cls.__dict__:
            cls.__init__ = _generated_init(cls.parameter_options())
            cls.__doc__ = ((cls.__doc__ or "").rstrip() + "\n\n" + _parameter_docs(cls.task_class,
                                                                                  cls.parameter_options()) + "\n")

    @classmethod
    def parameter_options(cls) -> list[Option]:
        """The task's options that are this estimator's parameters."""
        return [o for o in cls.task_class.options() if o.name not in cls.excluded_options + FILE_OPTIONS]

    # --- the run configuration, as ``sbts train`` builds it -------------------------------------------
    def run_spec(self) -> dict[str, Any]:
        """The run specification of this estimator's parameters (what the CLI builds from its flags)."""
        given = {o.name: getattr(self, o.estimator_parameter) for o in self.parameter_options()}
        return spec_from_options(self.task_class, given)

    def resolved_config(self, source: DataSource) -> RunConfig:
        return self.task_class().run_config(self.run_spec(), source)

    # --- fitting: a template ------------------------------------------------------------------------------
    def _fit_source(self, source: DataSource) -> Any:
        """Train on a data source; returns the prepared data for the subclass's ``_fitted``."""
        task = self.task_class()
        run = task.run_config(self.run_spec(), source)
        data = task.prepare(source, run)
        trainer, result = task.train(run, data, verbose=self.verbose)
        self.run_config_, self.config_ = run, run.model
        self.model_ = trainer.model.eval()
        self.scaler_ = data.scaler
        self.n_features_in_ = run.model.in_channels
        self.history_, self.best_epoch_ = result.history, result.best_epoch
        self._fitted(task, data, trainer.device)
        return self

    def _fitted(self, task: Task, data: Any, device: torch.device) -> None:
        """What the subclass keeps after training (thresholds, names)."""

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedYet(f"this {type(self).__name__} is not fitted yet; call fit first")

    @property
    def device_(self) -> torch.device:
        return next(self.model_.parameters()).device

    def _step_stream(self) -> StepStream:
        """The fitted network in numpy, run one step per observation (a streamable model's ``stream()``)."""
        document, tensors = build_artifact(self.model_, task=self.task_class.name, scaler=self.scaler_)
        network = network_tensors(load_artifact_bytes(artifact_bytes(document, tensors), type(self).__name__))
        return StepStream(self.config_, network)

    def _inference_state(self) -> dict[str, Any]:
        """The facts the exported artifact keeps besides the weights."""
        return {}

    def export_c(self, directory: str | Path, weight_form: str = DEFAULT_WEIGHT_FORM,
                 force: bool = False) -> CExportResult:
        """Write the fitted model as C99 (``sbts.h``, ``sbts.c``) into ``directory`` (``weight_form``: ternary, 2
        bits per weight, or mask, 1 bit with the signs regenerated from the seed)."""
        self._check_fitted()
        return export_c_model(self.model_, directory, task=self.task_class.name,
                              inference_state=self._inference_state(), scaler=self.scaler_, weight_form=weight_form,
                              force=force)

    def export(self, path: str | Path, float_dtype: str = "float32") -> ExportResult:
        """Write the fitted model as a ``.sbts`` artifact for ``sbts.runtime`` (``float_dtype``: or float16)."""
        self._check_fitted()
        return export_model(self.model_, path, task=self.task_class.name, inference_state=self._inference_state(),
                            scaler=self.scaler_, float_dtype=float_dtype)
