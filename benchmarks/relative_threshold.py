"""The relative threshold against the percentile one on SMD machines, one SBT per machine (docs/benchmarks.md).

    SBTS_DATA_DIR=../shared/data python benchmarks/relative_threshold.py --runs runs/threshold-study

Each machine gets one run of ``sbts train anomaly --model sbt --density 0.5 --epochs 5 --stride 10 --seed 0``
(trained unless its directory already holds a finished run), exported to ``.sbts``; the runtime scores the
training series (its last 20 %, the run's validation part, is the reference) and the test series after it. Both
thresholds are fitted on the validation scores only, at contamination 1 %; the relative one at each span, run
over the test series from the level the validation part left. F1 is point-wise, unadjusted; the oracle F1 (the
best threshold on the test labels) is shown as the ceiling. The spans were looked at on machines 2-8 and 3-4's
test F1: on those two the numbers are test-informed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_line, replace_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MACHINES = ("machine-2-8", "machine-3-4", "machine-1-6", "machine-2-1")
SPANS = (200, 1000, 3000)
CONTAMINATION = 0.01
TRAIN_FLAGS = ("--model", "sbt", "--density", "0.5", "--epochs", "5", "--stride", "10", "--seed", "0")


def study(machine: str, runs: Path) -> dict[str, float]:
    import sbts.runtime
    from sbts.data.anomaly import load_anomaly
    from sbts.heads.anomaly import decision_rule
    from sbts.metrics.anomaly import best_f1, point_metrics
    from sbts.metrics.thresholds import percentile_threshold, relative_threshold
    from sbts.tasks.anomaly import AnomalyTask

    run = runs / machine
    if not (run / "metrics.json").is_file():
        subprocess.run([sys.executable, "-m", "sbts", "train", "anomaly", "--data", f"SMD/{machine}", *TRAIN_FLAGS,
                        "--out", str(run)], check=True)
    artifact = runs / f"{machine}.sbts"
    if not artifact.is_file():
        subprocess.run([sys.executable, "-m", "sbts", "export", str(run), "-o", str(artifact)], check=True,
                       stdout=subprocess.DEVNULL)
    runtime = sbts.runtime.load(artifact)
    data = load_anomaly(f"SMD/{machine}")
    n_val = int(round(AnomalyTask.defaults["val_fraction"] * len(data.train)))
    val = runtime.decision_function(data.train)[-n_val:]
    test = runtime.decision_function(data.test, context=data.train)

    def f1(threshold) -> float:
        return point_metrics(data.labels, decision_rule(threshold.to_dict()).run(test)[0])["f1"]

    row = {"percentile": f1(percentile_threshold(val, CONTAMINATION, "validation scores")),
           **{f"relative {span}": f1(relative_threshold(val, CONTAMINATION, span, fitted_on="validation scores"))
              for span in SPANS},
           "oracle": best_f1(data.labels, test)["best_f1"]}
    print(machine, {key: round(value, 3) for key, value in row.items()}, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "threshold-study", help="one run per machine")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    rows = {machine: study(machine, args.runs) for machine in MACHINES}
    columns = list(next(iter(rows.values())))
    lines = ["## Anomaly thresholds: percentile against relative (F1, unadjusted; one SBT per machine)", "",
             "Command: `SBTS_DATA_DIR=../shared/data python benchmarks/relative_threshold.py`  ",
             f"Machine: {machine_line()}  ",
             f"Protocol: `sbts train anomaly --data SMD/<machine> {' '.join(TRAIN_FLAGS)}`; thresholds fitted on "
             f"the validation scores only (contamination {CONTAMINATION:g}); relative at span N runs on over the test "
             "series; oracle = best F1 on the test labels (ORACLE). Spans looked at on 2-8 and 3-4's test F1 "
             "(test-informed there).", "",
             "| machine | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {machine} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |" for machine, row in rows.items()]
    lines.append("| mean | " + " | ".join(f"{np.mean([row[c] for row in rows.values()]):.3f}" for c in columns) + " |")
    replace_section(args.output, "relative-threshold", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
