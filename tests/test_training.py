"""Training engine: checkpoints, exact resume, safe loading, atomic writes, logs."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from sbts import atomic
from sbts.errors import CheckpointError, SBTSError
from sbts.tasks.classification import ClassificationTask
from sbts.tasks.runs import build_run_spec
from sbts.training import checkpoint as ckpt

CLASSIFICATION = ClassificationTask()


def spec_for(data_dir, epochs=4, model_name="sbt", **model):
    model = {"d_model": 16, "n_heads": 2, "d_ff": 32, **({"density": 0.5} if model_name == "sbt" else {}), **model}
    return build_run_spec("classification", data=str(data_dir), model_name=model_name, config_file=None,
                          model_overrides=model,
                          train_overrides={"epochs": epochs, "batch_size": 8, "seed": 3, "device": "cpu"})


class Interrupt:
    def __init__(self, after: int):
        self.after = after

    def __call__(self, epoch, record):
        if epoch == self.after:
            raise KeyboardInterrupt


def strip_times(history):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


@pytest.mark.parametrize("model_name", ["sbt", "dense"])
def test_resume_after_interruption_equals_uninterrupted_run(synthetic_ts, tmp_path, model_name):
    straight = CLASSIFICATION.train_run(spec_for(synthetic_ts, model_name=model_name), tmp_path / "straight",
                                        verbose=False)

    first = CLASSIFICATION.train_run(spec_for(synthetic_ts, model_name=model_name), tmp_path / "resumed",
                                     verbose=False, on_epoch_end=Interrupt(after=2))
    assert first["interrupted"] and first["epochs"] == 2
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    resumed = CLASSIFICATION.train_run({}, tmp_path / "resumed", resume=True, verbose=False)

    for name in ("last", "best"):
        a = ckpt.load_checkpoint(tmp_path / "straight" / "checkpoints" / f"{name}.pt")
        b = ckpt.load_checkpoint(tmp_path / "resumed" / "checkpoints" / f"{name}.pt")
        assert a["epoch"] == b["epoch"]
        assert a["model"].keys() == b["model"].keys()
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), f"{name}: {key} differs after resume"
        assert strip_times(a["history"]) == strip_times(b["history"])
    assert straight["test"] == resumed["test"] and straight["val"] == resumed["val"]
    assert straight["best_epoch"] == resumed["best_epoch"] and resumed["epochs"] == 4


def test_run_directory_contents(synthetic_ts, tmp_path):
    metrics = CLASSIFICATION.train_run(spec_for(synthetic_ts, epochs=3), tmp_path / "run", verbose=False)
    run = tmp_path / "run"
    assert (run / "checkpoints" / "best.pt").is_file() and (run / "checkpoints" / "last.pt").is_file()
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert {"train_loss", "val_accuracy", "val_loss", "lr"} <= set(log[0])
    saved = json.loads((run / "metrics.json").read_text())
    for key in ("task", "model", "density", "sparsity", "seed", "epochs", "train_seconds", "test", "val"):
        assert key in saved
    assert saved["test"]["accuracy"] == metrics["test"]["accuracy"]
    assert saved["density"] == 0.5 and saved["sparsity"] == 0.5 and saved["epochs"] == 3
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["in_channels"] == 3 and config["model"]["out_dim"] == 3
    # The best checkpoint is the best-validation epoch.
    best = ckpt.load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["epoch"] == saved["best_epoch"]


def test_evaluate_run_reproduces_metrics(synthetic_ts, tmp_path):
    metrics = CLASSIFICATION.train_run(spec_for(synthetic_ts, epochs=3), tmp_path / "run", verbose=False)
    again = CLASSIFICATION.evaluate_run(tmp_path / "run", device="cpu")
    assert again["test"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert again["val"]["accuracy"] == pytest.approx(metrics["val"]["accuracy"])


def test_validation_is_disjoint_from_training(synthetic_ts, tmp_path):
    CLASSIFICATION.train_run(spec_for(synthetic_ts, epochs=1), tmp_path / "run", verbose=False)
    state = ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["task_state"]
    val = set(state["val_indices"])
    assert len(val) == 6  # 10 % of 60, stratified: two per class
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_train"] + metrics["n_val"] == 60 and metrics["n_val"] == 6


@pytest.mark.parametrize("payload", [
    b"",
    b"not a checkpoint at all",
    "truncated",
    "foreign",
    "pickle",
    "newer",
])
def test_bad_checkpoints_are_rejected(tmp_path, synthetic_ts, payload):
    path = tmp_path / "bad.pt"
    if payload == "truncated":
        CLASSIFICATION.train_run(spec_for(synthetic_ts, epochs=1), tmp_path / "run", verbose=False)
        data = (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif payload == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    elif payload == "pickle":
        class Evil:
            def __reduce__(self):
                return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))
        path.write_bytes(pickle.dumps(Evil()))
    elif payload == "newer":
        torch.save({"format": ckpt.CHECKPOINT_FORMAT, "version": ckpt.CHECKPOINT_VERSION + 1}, path)
    else:
        path.write_bytes(payload)
    with pytest.raises(CheckpointError) as info:
        ckpt.load_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "pwned").exists()


def test_atomic_write_keeps_old_file_when_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    atomic.atomic_write_json(target, {"a": 1})

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(SBTSError, match="metrics.json: cannot write"):  # one line for the user, not a traceback
        atomic.atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left behind


def test_resume_rejects_checkpoint_of_another_model(synthetic_ts, tmp_path):
    CLASSIFICATION.train_run(spec_for(synthetic_ts, epochs=1), tmp_path / "a", verbose=False)
    CLASSIFICATION.train_run(spec_for(synthetic_ts, epochs=1, d_model=8), tmp_path / "b", verbose=False)
    other = (tmp_path / "b" / "checkpoints" / "last.pt").read_bytes()
    (tmp_path / "a" / "checkpoints" / "last.pt").write_bytes(other)
    with pytest.raises(CheckpointError):
        CLASSIFICATION.train_run({}, tmp_path / "a", resume=True, verbose=False)


def test_atomic_write_gives_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic.atomic_write_json(tmp_path / "metrics.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o644


def test_interruption_inside_the_first_epoch_can_resume(synthetic_ts, tmp_path, monkeypatch):
    straight = CLASSIFICATION.train_run(spec_for(synthetic_ts, epochs=2), tmp_path / "straight", verbose=False)
    real_loss = ClassificationTask.training_loss
    calls = {"n": 0}

    def interrupted_loss(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 3:  # Ctrl-C in the middle of epoch 1
            raise KeyboardInterrupt
        return real_loss(self, model, batch)

    monkeypatch.setattr(ClassificationTask, "training_loss", interrupted_loss)
    first = CLASSIFICATION.train_run(spec_for(synthetic_ts, epochs=2), tmp_path / "resumed", verbose=False)
    assert first["interrupted"] and first["epochs"] == 0
    monkeypatch.setattr(ClassificationTask, "training_loss", real_loss)
    resumed = CLASSIFICATION.train_run({}, tmp_path / "resumed", resume=True, verbose=False)
    assert resumed["test"] == straight["test"] and resumed["epochs"] == 2


def test_json_is_written_strict_with_undefined_values_as_null(tmp_path):
    import json

    from sbts.training import atomic_write_json

    atomic_write_json(tmp_path / "m.json", {"f1": 0.5, "affiliation_precision": float("nan"),
                                            "nested": [float("inf"), 1, {"x": float("-inf")}]})
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"f1": 0.5, "affiliation_precision": None, "nested": [None, 1, {"x": None}]}


def test_the_scores_learn_at_their_own_rate_and_resume_keeps_it(synthetic_ts, tmp_path):
    from sbts.config import TrainConfig
    from sbts.models import create_model
    from sbts.training.engine import parameter_groups

    model = create_model("sbt", in_channels=2, out_dim=2, max_len=8, d_model=8, n_heads=2, d_ff=8, norm="layer")
    groups = parameter_groups(model, TrainConfig(lr=1e-3, score_lr_scale=10.0))
    by_scale = {group["lr_scale"]: group for group in groups}
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)].rsplit(".", 1)[-1] for p in by_scale[10.0]["params"]} == {"scores"}
    assert by_scale[10.0]["lr"] == pytest.approx(1e-2) and by_scale[1.0]["lr"] == pytest.approx(1e-3)
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())
    assert len(parameter_groups(model, TrainConfig())) == 1  # scale 1: the single group of earlier runs

    spec = spec_for(synthetic_ts)
    spec["train"]["score_lr_scale"] = 10.0
    straight = CLASSIFICATION.train_run(spec, tmp_path / "straight", verbose=False)
    first = CLASSIFICATION.train_run(spec, tmp_path / "resumed", verbose=False, on_epoch_end=Interrupt(after=2))
    assert first["interrupted"]
    resumed = CLASSIFICATION.train_run({}, tmp_path / "resumed", resume=True, verbose=False)
    assert straight["val"] == resumed["val"] and straight["test"] == resumed["test"]
    log = [json.loads(line) for line in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    assert {record["lr"] for record in log} == {1e-3}  # the base rate is logged


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), True])
def test_a_bad_score_lr_scale_is_refused(value):
    from sbts.config import TrainConfig
    from sbts.errors import ConfigError

    with pytest.raises(ConfigError, match="score_lr_scale must be a finite number > 0"):
        TrainConfig(score_lr_scale=value)
