"""Data-parallel training under torchrun (gloo on the CPU): two processes train what one does, rank 0 alone writes
and prints, resume stays exact; the shares' weighted gradients are the global batch's; --amp is bf16 on CUDA only."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import write_synthetic_ts

from sbts.cli.main import main
from sbts.errors import ConfigError
from sbts.models import create_model
from sbts.tasks.classification import ClassificationTask
from sbts.tasks.runs import SharedBlocks, shared_block_loss
from sbts.training import load_checkpoint
from sbts.training.distributed import DistributedContext, share_bounds, slice_examples

EPOCHS = 4
# One process against two: float summation order alone separates them (measured: 6e-8 on the scores, 1e-7 on the
# losses); the accuracies are equal.
TENSOR_ATOL = 1e-6
LOSS_RTOL = 1e-6
GRADIENT_RTOL, GRADIENT_ATOL = 1e-4, 1e-7  # float32 gradients summed in another order
# 51 training cases (val fraction 0.15 of 60) in global batches of 10: the last batch holds one case, so rank 1's
# share of it is empty and takes part with weight 0.
TRAIN_FLAGS = ["--d-model", "16", "--d-ff", "32", "--norm", "layer", "--batch-size", "10", "--val-fraction", "0.15",
               "--seed", "3", "--device", "cpu"]
PROCESSES = 2
TORCHRUN_TIMEOUT_S = 120


def start_torchrun(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(PROCESSES),
                             "--standalone", "-m", "sbts", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def finished(launched: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = launched.communicate(timeout=TORCHRUN_TIMEOUT_S)
    assert launched.returncode == 0, stderr
    return subprocess.CompletedProcess(launched.args, launched.returncode, stdout, stderr)


def torchrun(*args: str) -> subprocess.CompletedProcess:
    return finished(start_torchrun(*args))


def train_args(data, out, epochs: int = EPOCHS) -> list[str]:
    return ["train", "classification", "--data", str(data), "--out", str(out), "--epochs", str(epochs), *TRAIN_FLAGS]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run on one process (in this one) and on two (torchrun, with its output), and the first half of
    it on two (to resume): started together, as they are independent and each leaves cores idle at times."""
    root = tmp_path_factory.mktemp("distributed")
    data = write_synthetic_ts(root / "Synth")
    straight = start_torchrun(*train_args(data, root / "two"))
    first_half = start_torchrun(*train_args(data, root / "resumed", epochs=EPOCHS // 2), "--quiet")
    assert main([*train_args(data, root / "single"), "--quiet"]) == 0
    launched = finished(straight)
    finished(first_half)
    return root, launched


def without_times(history):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def test_two_processes_train_what_one_process_trains(runs):
    root, _ = runs
    single, two = (json.loads((root / name / "metrics.json").read_text()) for name in ("single", "two"))
    assert two["best_epoch"] == single["best_epoch"] and two["epochs"] == EPOCHS
    for split in ("val", "test"):
        assert two[split]["accuracy"] == single[split]["accuracy"]
        assert two[split]["loss"] == pytest.approx(single[split]["loss"], rel=LOSS_RTOL)
    for name in ("best", "last"):
        one, both = (load_checkpoint(root / run / "checkpoints" / f"{name}.pt") for run in ("single", "two"))
        assert one["model"].keys() == both["model"].keys()
        for key, tensor in one["model"].items():
            assert torch.allclose(both["model"][key], tensor, rtol=0, atol=TENSOR_ATOL), f"{name}: {key}"
        for a, b in zip(one["history"], both["history"]):
            assert b["train_loss"] == pytest.approx(a["train_loss"], rel=LOSS_RTOL)
            assert b["val_accuracy"] == a["val_accuracy"] and b["best_epoch"] == a["best_epoch"]
    assert two["environment"]["processes"] == PROCESSES and single["environment"]["processes"] == 1


def test_rank_0_alone_writes_and_prints(runs):
    root, launched = runs
    assert sorted(p.name for p in (root / "two").rglob("*")) == sorted(p.name for p in (root / "single").rglob("*"))
    assert len((root / "two" / "log.jsonl").read_text().splitlines()) == EPOCHS
    for epoch in range(1, EPOCHS + 1):
        assert launched.stderr.count(f"epoch {epoch}/{EPOCHS} ") == 1
    headline = json.loads(launched.stdout)  # one JSON document: rank 1 printed nothing
    assert headline["epochs"] == EPOCHS and headline["test"]["accuracy"] >= 0


def test_resume_under_torchrun_equals_the_straight_run(runs):
    root, _ = runs
    resumed = root / "resumed"
    assert len((resumed / "log.jsonl").read_text().splitlines()) == EPOCHS // 2
    torchrun("train", "classification", "--out", str(resumed), "--resume", "--epochs", str(EPOCHS), "--quiet")
    for name in ("best", "last"):
        straight, continued = (load_checkpoint(run / "checkpoints" / f"{name}.pt") for run in (root / "two", resumed))
        assert continued["epoch"] == straight["epoch"]
        for key, tensor in straight["model"].items():
            assert torch.equal(continued["model"][key], tensor), f"{name}: {key} differs after resume"
        assert without_times(continued["history"]) == without_times(straight["history"])


def test_weighted_shares_give_the_global_batch_gradient():
    """What DDP averages: each process's gradient of its weighted share's mean loss. Their mean is the gradient of
    the global batch's mean loss, for a batch of examples (with an empty share) and for a shared-pass block."""
    assert [share_bounds(5, rank, 2) for rank in range(2)] == [(0, 3), (3, 5)]
    assert [share_bounds(1, rank, 2) for rank in range(2)] == [(0, 1), (1, 1)]
    rng = np.random.default_rng(0)
    task = ClassificationTask()
    classifier = create_model("sbt", in_channels=3, out_dim=3, max_len=12, d_model=8, n_heads=2, d_ff=16, norm="layer")
    x = torch.from_numpy(rng.standard_normal((5, 12, 3)).astype(np.float32))
    padding = torch.zeros(5, 12, dtype=torch.bool)
    padding[1, 9:] = True
    cases = (x, padding, torch.tensor([0, 1, 2, 0, 1]))
    streamable = create_model("sbt", in_channels=3, out_dim=3, max_len=8, d_model=8, n_heads=2, d_ff=16,
                              attention="step_t", pos_encoding="rope", norm="layer")
    blocks = SharedBlocks(rng.standard_normal((60, 3)), 8, np.arange(7, 60, 2), [(0, 60)], block=9)
    examples = [(classifier, task.training_loss, cases, slice_examples, world)
                for world in (2, 3, 6)]  # 6 processes for 5 cases: one share is empty
    examples += [(streamable, shared_block_loss, blocks[0], blocks.slice_batch, world) for world in (2, 4)]
    for model, loss_of, batch, slice_batch, world in examples:
        trainable = [p for p in model.parameters() if p.requires_grad]
        expected = torch.autograd.grad(loss_of(model, batch), trainable)
        averaged = [torch.zeros_like(p) for p in trainable]
        for rank in range(world):
            process = DistributedContext(rank, world)
            shard = process.shard(batch, slice_batch)
            grads = torch.autograd.grad(loss_of(model, shard.batch) * shard.weight, trainable)
            for total, grad in zip(averaged, grads):
                total += grad / world
        for got, want in zip(averaged, expected):
            assert torch.allclose(got, want, rtol=GRADIENT_RTOL, atol=GRADIENT_ATOL)


def test_a_named_gpu_is_refused_under_torchrun():
    with pytest.raises(ConfigError, match="names one GPU"):
        DistributedContext(rank=1, world_size=2, local_rank=1).process_device(torch.device("cuda", 1))


def test_amp_off_cuda_is_one_line_exit_2(tmp_path, capsys):
    data = write_synthetic_ts(tmp_path / "Synth")
    assert main(train_args(data, tmp_path / "run", epochs=1) + ["--amp"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--amp" in err and "CUDA" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.gpu
def test_amp_on_cuda_trains_to_finite_metrics(tmp_path, capsys):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    data = write_synthetic_ts(tmp_path / "Synth")
    flags = [flag if flag != "cpu" else "cuda" for flag in train_args(data, tmp_path / "run", epochs=2)]
    assert main([*flags, "--amp", "--quiet"]) == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert all(math.isfinite(metrics[split]["loss"]) for split in ("val", "test"))
    assert metrics["config"]["train"]["amp"] is True


@pytest.mark.gpu
def test_torchrun_on_two_gpus_with_amp(tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    data = write_synthetic_ts(tmp_path / "Synth")
    flags = [flag if flag != "cpu" else "cuda" for flag in train_args(data, tmp_path / "run", epochs=2)]
    launched = torchrun(*flags, "--amp", "--quiet")
    assert launched.returncode == 0, launched.stderr
    metrics = json.loads(launched.stdout)
    assert all(math.isfinite(metrics[split]["loss"]) for split in ("val", "test"))
