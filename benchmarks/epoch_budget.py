"""What a longer epoch budget gives, read from the per-epoch logs of one sweep (validation chooses).

    python benchmarks/epoch_budget.py sweeps/recipe-classification-epochs --budgets 100 250

Classification trains without a learning-rate schedule or early stopping by default, so the first B epochs of a
run for more epochs are the B-epoch run itself. Two readings per budget, mean over seeds:

- **at the end**: the mean validation accuracy of the budget's last END_EPOCHS epochs, what the model is after B
  epochs; no epoch is selected on it, so it is a fair comparison of budgets, and it is the one that chooses;
- **selected**: the best validation accuracy within B epochs, what the B-epoch run selects. It can only grow with
  B (a maximum over more epochs, each a noisy draw on a small validation set), so it is shown, not used to choose.

At the whole budget the test accuracy of each run's own selection is in brackets (never used to choose). A run
whose log has fewer epochs than a budget (stopped early, or still running) is left out of that budget's means.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def variant_name(config: dict) -> str:
    model = config["model"]
    return "dense" if model["linear"] == "dense" else f"SBT d={model['density']:g}"


def read_runs(trials: Path) -> list[dict]:
    runs = []
    for run_dir in sorted(p for p in trials.iterdir() if (p / "log.jsonl").is_file()):
        config = json.loads((run_dir / "config.json").read_text())
        log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
        metrics_file = run_dir / "metrics.json"
        test = json.loads(metrics_file.read_text())["test"]["accuracy"] if metrics_file.is_file() else None
        runs.append({"variant": variant_name(config), "set": config["data"].split("/")[-1],
                     "seed": config["model"]["seed"], "val_accuracy": [r["val_accuracy"] for r in log],
                     "test_accuracy": test})
    return runs


END_EPOCHS = 10  # the end of a budget: the mean over its last epochs, not one noisy epoch


def best_within(run: dict, budget: int) -> float | None:
    """The validation accuracy the run selects within its first ``budget`` epochs (None: it has fewer)."""
    accuracies = run["val_accuracy"]
    return max(accuracies[:budget]) if len(accuracies) >= budget else None


def end_of(run: dict, budget: int) -> float | None:
    """The mean validation accuracy of epochs ``budget - END_EPOCHS + 1`` to ``budget`` (None: it has fewer)."""
    accuracies = run["val_accuracy"]
    return float(np.mean(accuracies[budget - END_EPOCHS:budget])) if len(accuracies) >= budget else None


READINGS = {f"at the end of each budget (the mean of its last {END_EPOCHS} epochs)": end_of,
            "selected within each budget (its best epoch)": best_within}


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def table(runs: list[dict], budgets: list[int], reading) -> str:
    """One row per variant and budget: each set's mean ``reading`` of validation accuracy (at the whole budget,
    the test accuracy of the runs' selections in brackets), their mean over the sets, and the runs counted."""
    sets = list(dict.fromkeys(run["set"] for run in runs))
    cells = defaultdict(list)
    for run in runs:
        cells[(run["variant"], run["set"])].append(run)
    header = ["variant", "epochs", *sets, "mean validation", "mean test", "runs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant in sorted({run["variant"] for run in runs}):
        for budget in budgets:
            whole = budget == max(budgets)
            val, test, shown, counted = [], [], [], 0
            for name in sets:
                read = [(run, value) for run in cells[(variant, name)]
                        if (value := reading(run, budget)) is not None]  # runs that reached the budget
                counted += len(read)
                val.append(_mean([value for _, value in read]))
                test.append(_mean([run["test_accuracy"] for run, _ in read if run["test_accuracy"] is not None]))
                shown.append(_shown(val[-1]) + (f" ({_shown(test[-1])})" if whole else ""))
            complete = all(v is not None for v in val)
            mean_val = _shown(_mean(val)) if complete else "-"
            mean_test = _shown(_mean(test)) if whole and all(t is not None for t in test) else ""
            row = [variant, str(budget), *shown, mean_val, mean_test, str(counted)]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, help="a sweep's directory (its trials/ folder holds the runs)")
    parser.add_argument("--budgets", type=int, nargs="+", required=True, help="epoch budgets to compare")
    args = parser.parse_args()
    if not (args.sweep / "trials").is_dir():
        parser.error(f"{args.sweep}: no trials/ folder (not a sweep's directory)")
    if min(args.budgets) < END_EPOCHS:
        parser.error(f"--budgets {min(args.budgets)}: each budget needs at least {END_EPOCHS} epochs (its end is "
                     f"the mean of its last {END_EPOCHS})")
    runs = read_runs(args.sweep / "trials")
    for title, reading in READINGS.items():
        print(f"Validation accuracy {title}, mean over seeds (the test accuracy of each run's "
              "selection at the whole budget in brackets, never used to choose):\n")
        print(table(runs, sorted(args.budgets), reading) + "\n")


if __name__ == "__main__":
    main()
