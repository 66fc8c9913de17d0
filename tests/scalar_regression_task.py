"""A fourth task in one file: per-series regression of a scalar target (the proof that a task is one file
plus its registration; ``tests/test_task_protocol.py`` runs it end to end through the CLI and the runtime).

Data: a folder with ``train.npy`` and ``test.npy`` (float arrays (cases, channels, steps), never unpickled) and
``train_y.npy`` and ``test_y.npy`` (one target per case). The model's per-step output (one value) is averaged
over the steps and compared with the standardised target; the report adds the training mean as a baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from sbts.config import RunConfig, TaskOptions
from sbts.data.preprocessing import ChannelScaler
from sbts.data.uea import sha256_file
from sbts.errors import ConfigError, DataError
from sbts.registry import register_task
from sbts.runtime.inputs import read_cases, write_rows
from sbts.runtime.model import RuntimeModel
from sbts.tasks.base import EVAL_BATCH, DataSource, Task, TaskReport

NAME = "regression"
FILES = ("train", "train_y", "test", "test_y")


@dataclass
class RegressionFiles:
    arrays: dict[str, np.ndarray]
    files: dict[str, dict[str, str]]


@dataclass
class RegressionData:
    scaler: ChannelScaler
    target_mean: float
    target_std: float
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    files: dict[str, dict[str, str]]

    def train_set(self):
        return self.train

    def val_set(self):
        return self.val


class ScalarRegressionTask(Task):
    name = NAME
    window_option = "max_len"
    excluded_train_options = ("stride",)
    data_help = "a folder with train.npy, train_y.npy, test.npy and test_y.npy"

    def load(self, data: str, missing_value: float | None = None) -> DataSource:
        if missing_value is not None:
            raise ConfigError(f"{data}: .npy arrays mark missing cells with NaN; missing_value does not apply")
        folder = Path(data).resolve()
        arrays, files = {}, {}
        for name in FILES:
            path = folder / f"{name}.npy"
            if not path.is_file():
                raise DataError(f"{path}: file not found")
            arrays[name] = np.load(path, allow_pickle=False).astype(np.float64)
            files[name] = {"path": str(path), "sha256": sha256_file(path)}
        return DataSource(str(folder), RegressionFiles(arrays, files))

    def complete_model(self, fields: dict[str, Any], source: DataSource, options: TaskOptions) -> dict[str, Any]:
        train = source.data.arrays["train"]
        return {**fields, "in_channels": train.shape[1], "out_dim": 1,
                "max_len": fields.get("max_len") or train.shape[2]}

    def prepare(self, source: DataSource, run: RunConfig, state: dict[str, Any] | None = None) -> RegressionData:
        arrays = source.data.arrays
        n_val = max(1, int(round(run.train.val_fraction * len(arrays["train"]))))
        fit, val = arrays["train"][:-n_val], arrays["train"][-n_val:]
        fit_y = arrays["train_y"][:-n_val]
        scaler = ChannelScaler.from_dict(state["scaler"]) if state else ChannelScaler().fit(list(fit))
        mean, std = (state["target_mean"], state["target_std"]) if state else (float(fit_y.mean()),
                                                                                float(fit_y.std() or 1.0))

        def tensors(x, y):
            scaled = np.stack(scaler.transform(list(x))).transpose(0, 2, 1).astype(np.float32)
            return TensorDataset(torch.from_numpy(scaled), torch.from_numpy(((y - mean) / std).astype(np.float32)))

        return RegressionData(scaler, mean, std, tensors(fit, fit_y), tensors(val, arrays["train_y"][-n_val:]),
                              tensors(arrays["test"], arrays["test_y"]), source.files)

    def task_state(self, data: RegressionData) -> dict[str, Any]:
        return {"scaler": data.scaler.to_dict(), "files": data.files, "target_mean": data.target_mean,
                "target_std": data.target_std}

    def training_loss(self, model, batch):
        x, y = batch
        return F.mse_loss(model(x).mean(dim=(1, 2)), y)

    @torch.no_grad()
    def evaluate(self, model, dataset, batch_size, device) -> dict[str, float]:
        model.eval()
        errors = [(model(x.to(device)).mean(dim=(1, 2)).cpu() - y).square() for x, y in DataLoader(dataset, batch_size)]
        model.train()
        return {"loss": float(torch.cat(errors).mean()), "n": len(dataset)}

    def report(self, run, model, data: RegressionData, device) -> TaskReport:
        test = self.evaluate(model, data.test, EVAL_BATCH, device)
        baseline = float(data.test.tensors[1].square().mean())  # predicting the training mean: 0 standardised
        return TaskReport({"val": self.evaluate(model, data.val, EVAL_BATCH, device), "test": test,
                           "baselines": {"training_mean": {"test": {"loss": baseline}}}})

    def inference_state(self, run, state, run_dir, checkpoint, epoch) -> dict[str, Any]:
        return {"target_mean": state["target_mean"], "target_std": state["target_std"]}


class ScalarRegressionRuntime(RuntimeModel):
    state_keys = frozenset({"target_mean", "target_std"})  # what its inference_state exports

    def predict(self, series, where: str = "input") -> np.ndarray:
        x, padding = self.prepare(series, where)
        valid = (~padding)[..., None].astype(np.float32)
        per_step = self.forward(x, padding if padding.any() else None)
        standardised = (per_step * valid).sum(axis=(1, 2)) / valid.sum(axis=(1, 2))
        return standardised * self.task_state["target_std"] + self.task_state["target_mean"]

    def predict_file(self, input_path, output, *, context=None, proba=False) -> str | None:
        cases, _ = read_cases(input_path)
        write_rows(["case", "prediction"], ([i, f"{v:.9g}"] for i, v in enumerate(self.predict(cases))), output)
        return None


def register() -> None:
    register_task(NAME, task=ScalarRegressionTask, runtime=ScalarRegressionRuntime,
                  description="one number per series")
