"""One trial's runs: ordinary run directories, named by their parameters, trained, resumed or read back.

A run directory is taken under an exclusive lock (a file beside it), so that two workers of one machine
never write into the same run; a worker that finds the run finished reads its metrics instead of training,
one that finds a last checkpoint resumes from it (a killed worker's run), and a directory without one (killed
before its first checkpoint) starts over. A trial that asks for more than one process per node trains under
``torchrun`` (PyTorch DDP).
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from sbts.atomic import atomic_write_bytes, read_json
from sbts.compression.accounting import paper_count
from sbts.errors import SBTSError
from sbts.export.artifact import build_artifact
from sbts.runtime.artifact import artifact_bytes
from sbts.sweep.spec import SweepSpec
from sbts.tasks import get_task
from sbts.tasks.base import Task

TRIALS_DIR = "trials"
BITS_PER_BYTE = 8
SIZE_NOTES = {"size_bytes": "bytes of the .sbts file `sbts export` writes (float32; honest: what a deployment "
                            "stores, masks compressed, the input scaler and the task's facts included)",
              "paper_bytes": "the paper's storage count in bytes (paper-spec §6, the official code's counters: 1 bit "
                             "per weight position whatever the density, 32 bits per norm gain; masks, α and biases "
                             "not counted)"}
BASELINE_FACTS = ("size_bytes", "fit_seconds")  # kept of a baseline's entry besides its metrics, when it has them


class TrialFailed(SBTSError):
    """A trial's run could not finish (its training failed, or its processes did)."""


def _text(value: Any) -> str:
    text = repr(value) if isinstance(value, float) else str(value)
    return text.replace(os.sep, "-")


def run_name(params: dict[str, Any]) -> str:
    """A run directory's name from its parameters, in order: ``density=0.5,model=sbt,seed=0``."""
    return ",".join(f"{key}={_text(value)}" for key, value in params.items()) or "default"


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock (waits for a worker of this machine that holds it; freed when a process dies)."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir.with_name(run_dir.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _can_resume(run_dir: Path) -> bool:
    return (run_dir / "config.json").is_file() and (run_dir / "checkpoints" / "last.pt").is_file()


def _train_distributed(spec: SweepSpec, run_spec: dict[str, Any], run_dir: Path, resume: bool, threads: int) -> None:
    """One run under torchrun: ``nproc_per_node`` processes on this machine, rank 0 the only writer."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={spec.nproc_per_node}",
               "-m", "sbts", "train", spec.task, "--out", str(run_dir), "--quiet"]
    if resume:
        command.append("--resume")
    else:  # the complete run specification (presets merged), so the processes build the same run
        config = run_dir.with_name(run_dir.name + ".config.json")
        atomic_write_bytes(config, json.dumps(run_spec, indent=1).encode())
        command += ["--config", str(config)]
    environment = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // spec.nproc_per_node))}
    done = subprocess.run(command, env=environment, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise TrialFailed(f"{run_dir.name}: torchrun with {spec.nproc_per_node} processes failed: {last}")


def train_or_resume(spec: SweepSpec, params: dict[str, Any], run_dir: Path, threads: int,
                    log: Callable[[str], None]) -> dict[str, Any]:
    """The run's metrics: read when it is finished, else trained (resumed from its last checkpoint if any)."""
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        log(f"{run_dir.name}: finished before; its metrics read back")
        return read_json(metrics_path, "run metrics")
    task = get_task(spec.task)
    resume = _can_resume(run_dir)
    if resume:
        epoch = len((run_dir / "log.jsonl").read_text().splitlines()) if (run_dir / "log.jsonl").is_file() else 0
        log(f"{run_dir.name}: resumed from its last checkpoint (epoch {epoch})")
    elif run_dir.exists():  # killed before its first checkpoint: nothing in it to keep
        shutil.rmtree(run_dir)
    run_spec = {} if resume else spec.run_spec(params)
    if spec.nproc_per_node > 1:
        _train_distributed(spec, run_spec, run_dir, resume, threads)
        return read_json(metrics_path, "run metrics")
    metrics = task.train_run(run_spec, run_dir, resume=resume, verbose=False)
    if metrics.get("interrupted"):
        raise KeyboardInterrupt
    return metrics


def model_sizes(task: Task, run_dir: Path) -> dict[str, int]:
    """The trained model's honest size (its .sbts file) and the paper's count, in bytes."""
    trained = task.load_trained(run_dir)
    document, tensors = build_artifact(trained.model, task=task.name, inference_state=trained.inference_state,
                                       scaler=trained.scaler)
    paper_bits = paper_count(trained.model.storage(), trained.model.config).totals()["bits"]
    return {"size_bytes": len(artifact_bytes(document, tensors)), "paper_bytes": round(paper_bits / BITS_PER_BYTE)}


def baseline_record(task: Task, entry: dict[str, Any]) -> dict[str, Any]:
    """One baseline of a run: its test metrics, and its validation objective, size and fit time where the task's
    baselines report them (classification's do; forecasting's have no size)."""
    test = entry.get("test", {})
    record: dict[str, Any] = {m.key: test[m.key] for m in task.test_metrics if m.key in test}
    objective = task.validation_objective.key
    if objective in (entry.get("val") or {}):
        record["val"] = {objective: entry["val"][objective]}
    record.update({key: entry[key] for key in BASELINE_FACTS if key in entry})
    return record


def run_record(task: Task, params: dict[str, Any], run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """What a results page needs of one run (kept in the study, so a report needs no access to the run's disk)."""
    objective = task.validation_objective
    val, test = metrics.get("val") or {}, metrics.get("test") or {}
    if objective.key not in val:
        raise TrialFailed(f"{run_dir.name}: no validation {objective.key} in its metrics; a sweep selects on "
                          "validation data only (give the run a validation split)")
    baselines = {name: baseline_record(task, entry) for name, entry in (metrics.get("baselines") or {}).items()
                 if isinstance(entry, dict) and "skipped" not in entry}
    return {"run": run_dir.name, "params": params, "dataset": metrics["dataset"], "model": metrics["model"],
            "density": metrics["density"], "seed": metrics["seed"], "val": {objective.key: val[objective.key]},
            "test": {m.key: test.get(m.key) for m in task.test_metrics}, "baselines": baselines,
            **model_sizes(task, run_dir), "epochs": metrics.get("epochs"), "best_epoch": metrics.get("best_epoch"),
            "train_seconds": metrics.get("train_seconds"), "seconds_per_epoch": metrics.get("seconds_per_epoch"),
            "torch_threads": metrics.get("environment", {}).get("torch_threads"),
            "git_commit": metrics.get("environment", {}).get("git_commit"),
            "host": platform.node(), "run_dir": str(run_dir.resolve()), "selection": metrics.get("selection"),
            "threshold_fitted_on": (metrics.get("threshold") or {}).get("fitted_on")}


def run_trial_run(spec: SweepSpec, params: dict[str, Any], out: Path, threads: int,
                  log: Callable[[str], None]) -> dict[str, Any]:
    """Train (or resume, or read back) the run of ``params`` under ``out/trials`` and return its record."""
    run_dir = out / TRIALS_DIR / run_name(spec.varying(params))
    with run_lock(run_dir):
        metrics = train_or_resume(spec, params, run_dir, threads, log)
        return run_record(get_task(spec.task), params, run_dir, metrics)
