"""benchmarks/epoch_budget.py: its two readings of a run's log, and its refusals (exit code 2, one line)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "epoch_budget.py"


def write_run(trials: Path, name: str, density: float, accuracies: list[float], test: float) -> None:
    run = trials / name
    run.mkdir(parents=True)
    linear = "dense" if density == 1.0 else "sparse_binary"
    (run / "config.json").write_text(json.dumps({"data": "UEA/Synth", "model": {"linear": linear,
                                                                                 "density": density, "seed": 0}}))
    (run / "log.jsonl").write_text("".join(json.dumps({"epoch": i + 1, "val_accuracy": a}) + "\n"
                                           for i, a in enumerate(accuracies)))
    (run / "metrics.json").write_text(json.dumps({"test": {"accuracy": test}}))


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_the_end_of_a_budget_and_its_selection(tmp_path):
    # 20 epochs: the first 10 at 0.5 with one lucky 0.9, the last 10 at 0.7
    write_run(tmp_path / "trials", "sbt", 0.25, [0.5] * 4 + [0.9] + [0.5] * 5 + [0.7] * 10, test=0.6)
    out = run_script(str(tmp_path), "--budgets", "10", "20")
    assert out.returncode == 0, out.stderr
    end_table, selected_table = out.stdout.split("selected within")
    assert "| SBT d=0.25 | 10 | 0.540 |" in end_table  # the mean of epochs 1-10
    assert "| SBT d=0.25 | 20 | 0.700 (0.600) |" in end_table
    assert "| SBT d=0.25 | 10 | 0.900 |" in selected_table and "| SBT d=0.25 | 20 | 0.900 (0.600) |" in selected_table
    assert "| SBT d=0.25 | 30 |" not in out.stdout


def test_a_run_short_of_a_budget_is_left_out(tmp_path):
    write_run(tmp_path / "trials", "short", 0.25, [0.5] * 12, test=0.5)
    out = run_script(str(tmp_path), "--budgets", "10", "20")
    assert "| SBT d=0.25 | 20 | - (-) | - |  | 0 |" in out.stdout


@pytest.mark.parametrize("has_trials, budget, message", [
    (False, "100", "no trials/ folder"),
    (True, "5", "--budgets 5: each budget needs at least 10 epochs"),
])
def test_bad_inputs_are_refused(tmp_path, has_trials, budget, message):
    if has_trials:
        (tmp_path / "trials").mkdir()
    out = run_script(str(tmp_path), "--budgets", budget)
    assert out.returncode == 2 and message in out.stderr.splitlines()[-1]
