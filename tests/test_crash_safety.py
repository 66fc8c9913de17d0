"""Crash safety, tested by killing: ``kill -9`` at seeded random instants during ``sbts train`` (every task) and
``sbts export`` (every format). Afterwards no file under its final name is torn (each one parses; an atomic
write's temporary ``.NAME.*.tmp`` may stay behind), ``--resume`` finishes the run, and its final weights equal an
uninterrupted run's bit for bit (CPU training is deterministic). ``SBTS_KILL_ROUNDS`` kills more often than CI's
one instant per task (the documented long run: ``SBTS_KILL_ROUNDS=20 pytest tests/test_crash_safety.py``).
The sweep worker's case is ``tests/test_sweep.py::test_a_killed_workers_trial_is_resumed_from_its_checkpoint``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import synthetic_cases, write_ts

from sbts.cli.main import main

TINY = ("--d-model", "8", "--n-heads", "2", "--d-ff", "16", "--n-layers", "1", "--seed", "0", "--device", "cpu",
        "--quiet")
EPOCHS = 4
KILL_ROUNDS = int(os.environ.get("SBTS_KILL_ROUNDS", "1"))
KILL_WINDOW = (0.35, 0.95)  # where in an export's expected life (imports included) the kills fall
STARTUP_SECONDS = 3.0  # what a fresh interpreter spends importing sbts and torch before an export starts
POLL_SECONDS = 0.01
SIGINT_EPOCHS = 100_000  # a run the SIGINT test interrupts: hours of tiny epochs
TEMPORARY = ".tmp"  # the suffix of an atomic write's temporary file


def classification_data(root: Path) -> str:
    folder = root / "Synth"
    folder.mkdir()
    for split, n, seed in (("TRAIN", 24, 1), ("TEST", 8, 2)):
        write_ts(folder / f"Synth_{split}.ts", *synthetic_cases(n, seed=seed), ["c0", "c1", "c2"])
    return str(folder)


def series_csv(path: Path, steps: int = 300) -> Path:
    t = np.arange(steps)
    values = np.stack([np.sin(t / 7), np.cos(t / 11), np.sin(t / 5) * 0.5], axis=1)
    values += np.random.default_rng(0).normal(0, 0.05, values.shape)
    path.write_text("a,b,c\n" + "\n".join(",".join(f"{v:.5f}" for v in row) for row in values) + "\n")
    return path


def anomaly_data(root: Path) -> str:
    train, test = series_csv(root / "train.csv"), series_csv(root / "test.csv", 150)
    labels = root / "labels.csv"
    labels.write_text("label\n" + "\n".join("1" if 100 <= i < 110 else "0" for i in range(150)) + "\n")
    return f"{train},{test},{labels}"


def forecasting_data(root: Path) -> str:
    return str(series_csv(root / "series.csv"))


TASKS = {"classification": (classification_data, ()),
         "anomaly": (anomaly_data, ("--window", "16", "--stride", "4")),
         "forecasting": (forecasting_data, ("--window", "16", "--stride", "4"))}


def sbts_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sbts", *map(str, args)]


def in_process(*args) -> int:
    """The command in this process: the runs that are not killed need no interpreter of their own. At one torch
    thread, as the killed subprocesses run (OMP_NUM_THREADS=1): an earlier test may have left this process at
    another count (aeon's thread limits), and another count may round a reduction differently."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main([str(a) for a in args])
    finally:
        torch.set_num_threads(threads)


def assert_nothing_torn(folder: Path) -> None:
    """Every file under its final name is whole: JSON parses, checkpoints load; temporaries are the only others."""
    for path in folder.rglob("*"):
        if not path.is_file() or path.name.endswith(TEMPORARY):
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".pt":
            torch.load(path, weights_only=True)


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def epochs_logged(run_dir: Path) -> int:
    log = run_dir / "log.jsonl"
    return len(log.read_text().splitlines()) if log.is_file() else 0


def kill_at(command: list[str], after: float, ready: Callable[[], bool] = lambda: True) -> int:
    """Run ``command`` and SIGKILL it ``after`` seconds past the moment ``ready()`` holds (polled); its exit code
    (negative: killed)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not ready() and process.poll() is None:
        time.sleep(POLL_SECONDS)
    try:
        process.wait(timeout=after)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
    return process.returncode


@pytest.mark.parametrize("task", list(TASKS))
def test_train_killed_at_random_instants_resumes_to_the_uninterrupted_weights(task, tmp_path):
    make_data, extra = TASKS[task]
    data = make_data(tmp_path)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    train = ["train", task, "--data", data, "--epochs", str(EPOCHS), *TINY, *extra]
    assert in_process(*train, "--out", straight) == 0
    log = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    epoch_seconds = log[-1]["seconds"] / len(log)
    rng = np.random.default_rng(sum(map(ord, task)))
    # Each kill: after a random number of finished epochs (the first at none: inside epoch 1), a random part of
    # an epoch later; so kills fall in training, between checkpoints and while one is written.
    kills = [(int(rng.integers(0, EPOCHS - 1)) if i else 0, float(rng.uniform(0, 1)) * epoch_seconds)
             for i in range(KILL_ROUNDS)]
    resume = sbts_command("train", task, "--out", killed, "--resume", "--quiet")

    def go_on() -> list[str]:
        """Killed before the run directory was made (while reading the data): nothing to resume, run it again."""
        return resume if killed.exists() else sbts_command(*train, "--out", killed)

    def after(epochs: int) -> Callable[[], bool]:
        return lambda: (killed / "config.json").exists() and epochs_logged(killed) >= epochs

    assert kill_at(sbts_command(*train, "--out", killed), kills[0][1], after(0)) == -signal.SIGKILL
    for epochs, delay in kills[1:]:
        assert_nothing_torn(killed)
        if (killed / "metrics.json").is_file():
            break
        kill_at(go_on(), delay, after(epochs))
    assert_nothing_torn(killed)
    if not (killed / "metrics.json").is_file():
        assert in_process(*go_on()[3:]) == 0
    got, want = final_weights(killed), final_weights(straight)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert (json.loads((killed / "metrics.json").read_text())["test"]
            == json.loads((straight / "metrics.json").read_text())["test"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    run = root / "run"
    assert in_process("train", "classification", "--data", classification_data(root), "--epochs", "1", *TINY,
                      "--out", run) == 0
    return run


def export_files(path: Path, form: str) -> dict[str, bytes]:
    """An export's files by name (the C export is a folder of two); exports of one checkpoint are byte-identical,
    so a whole one equals the reference."""
    files = [path / "sbts.h", path / "sbts.c"] if form == "c" else [path]
    return {f.name: f.read_bytes() for f in files if f.is_file()}


@pytest.mark.parametrize("form,name", [("sbts", "model.sbts"), ("onnx", "model.onnx"), ("c", "c")])
def test_export_killed_at_random_instants_leaves_the_file_whole_or_absent(form, name, trained, tmp_path):
    if form == "onnx":
        pytest.importorskip("onnx")
    start = time.perf_counter()
    assert in_process("export", trained, "-o", tmp_path / name, "--format", form) == 0
    duration = time.perf_counter() - start + STARTUP_SECONDS
    reference = export_files(tmp_path / name, form)
    rng = np.random.default_rng(len(form))
    for round_, fraction in enumerate(rng.uniform(*KILL_WINDOW, KILL_ROUNDS)):
        target = tmp_path / f"killed-{round_}" / name
        target.parent.mkdir()
        kill_at(sbts_command("export", trained, "-o", target, "--format", form), fraction * duration)
        for file_name, content in export_files(target, form).items():  # each file written atomically
            assert content == reference[file_name], file_name
        leftovers = [p.name for p in target.parent.rglob("*") if p.is_file() and p.name.endswith(TEMPORARY)]
        assert all(n.startswith(".") for n in leftovers), leftovers
        assert in_process("export", trained, "-o", target, "--format", form, "--force") == 0
        assert export_files(target, form) == reference


def test_sigint_keeps_the_finished_epochs_and_exits_130(tmp_path):
    """Ctrl-C during ``sbts train``: exit 130, one line saying how to continue, the last finished epoch kept."""
    data, run = classification_data(tmp_path), tmp_path / "run"
    # The run gets Ctrl-C's default action even where this process was started in the background (a shell without
    # job control starts background commands with SIGINT ignored, and Python then installs no KeyboardInterrupt
    # handler: the signal was lost and the run went on to its last epoch). More epochs than any machine finishes
    # before the signal; killed whatever happens, so a failure leaves no run behind.
    process = subprocess.Popen(sbts_command("train", "classification", "--data", data, "--epochs", str(SIGINT_EPOCHS),
                                            *TINY, "--out", run), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        while epochs_logged(run) < 1 and process.poll() is None:
            time.sleep(POLL_SECONDS)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err.strip().splitlines()[-1]
    finished = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"]
    assert 1 <= finished == epochs_logged(run) < SIGINT_EPOCHS
