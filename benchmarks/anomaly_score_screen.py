"""A screen of anomaly-score rules: chosen on ASD (development), then read on SMD (docs/benchmarks.md).

    SBTS_DATA_DIR=../shared/data python benchmarks/anomaly_score_screen.py --runs runs/score-screen

Each entity (the 12 of ASD, the 8 SMD machines) gets one run of ``sbts train anomaly --model sbt --density 0.5
--epochs 5 --stride 10 --seed S`` (trained unless its directory holds a finished run), exported to ``.sbts``; the
runtime's ``channel_errors`` gives the squared error of every channel at every step of the training series (its
last 20 % is the run's validation part) and of the test series after it. From them each rule makes one score
per step:

- ``normalise``: ``none`` (sbts' score: the mean over channels) or ``channel`` (each channel's error divided by
  its mean error over the fit part, the training steps the model learnt from, so that a channel the model
  always reconstructs badly does not drown the others);
- ``clipK``: each channel's error divided by its largest error over the fit part and clipped at K, so that one
  channel whose level has moved since training (drift: the model reconstructs it badly at every step) adds at
  most K / D to the score, while an anomaly that takes many channels outside their training range still does;
- ``smooth``: a causal moving average of the step scores over that many steps (1: none), as a stream could
  compute it; anomalies in these sets are segments of tens to hundreds of steps.

The threshold is sbts' default, the 99th percentile of the validation scores under the same rule (never test
data); F1 is point-wise, unadjusted; the oracle F1 (the best threshold on the test labels) is the ceiling the
issue's target is relative to. The rule is chosen by the mean F1 over ASD's entities; SMD is read only with
the chosen rule's row beside sbts' current score, so the SMD numbers are not tuned on.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_line, mean_std, replace_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEVELOPMENT = tuple(f"ASD/omi-{n}" for n in range(1, 13))
EVALUATION = tuple(f"SMD/machine-{m}" for m in ("1-6", "1-7", "2-1", "2-2", "2-7", "2-8", "3-3", "3-4"))
NORMALISE = ("none", "channel", "clip1", "clip2", "clip5")
SMOOTH = (1, 5, 20)
CONTAMINATION = 0.01  # sbts' default: the fraction of validation scores above the threshold
TRAIN_FLAGS = ("--model", "sbt", "--density", "0.5", "--epochs", "5", "--stride", "10")
ERROR_FLOOR = 1e-6  # keeps a channel the model reconstructs perfectly on the fit part from dividing by zero


def trained_runtime(spec: str, seed: int, runs: Path):
    import sbts.runtime

    run = runs / f"{spec.replace('/', '_')}-seed{seed}"
    if not (run / "metrics.json").is_file():
        subprocess.run([sys.executable, "-m", "sbts", "train", "anomaly", "--data", spec, *TRAIN_FLAGS,
                        "--seed", str(seed), "--out", str(run)], check=True, stdout=subprocess.DEVNULL)
    artifact = run.with_suffix(".sbts")
    if not artifact.is_file():
        subprocess.run([sys.executable, "-m", "sbts", "export", str(run), "-o", str(artifact)], check=True,
                       stdout=subprocess.DEVNULL)
    return sbts.runtime.load(artifact)


def causal_mean(scores: np.ndarray, span: int, before: np.ndarray) -> np.ndarray:
    """The mean of each step's score and the ``span - 1`` before it (``before``: the scores that precede)."""
    if span == 1:
        return scores
    joined = np.concatenate([before[-(span - 1):], scores])
    sums = np.cumsum(np.concatenate([[0.0], joined]))
    counts = np.minimum(np.arange(1, len(joined) + 1), span)
    means = (sums[1:] - sums[np.maximum(np.arange(1, len(joined) + 1) - span, 0)]) / counts
    return means[len(joined) - len(scores):]


def screen(spec: str, seed: int, runs: Path) -> dict[str, dict[str, float]]:
    from sbts.data.anomaly import load_anomaly
    from sbts.metrics.anomaly import best_f1, point_metrics
    from sbts.tasks.anomaly import AnomalyTask

    runtime = trained_runtime(spec, seed, runs)
    data = load_anomaly(spec)
    n_val = int(round(AnomalyTask.defaults["val_fraction"] * len(data.train)))
    errors = runtime.channel_errors(data.train)
    fit_errors, val_errors = errors[:-n_val], errors[-n_val:]
    test_errors = runtime.channel_errors(data.test, context=data.train)
    mean_error = np.maximum(fit_errors.mean(axis=0), ERROR_FLOOR)
    largest_error = np.maximum(fit_errors.max(axis=0), ERROR_FLOOR)

    def step_scores(errors: np.ndarray, normalise: str) -> np.ndarray:
        if normalise == "none":
            return errors.mean(axis=1)
        if normalise == "channel":
            return (errors / mean_error).mean(axis=1)
        return np.minimum(errors / largest_error, float(normalise.removeprefix("clip"))).mean(axis=1)

    rows = {}
    for normalise, smooth in itertools.product(NORMALISE, SMOOTH):
        fit, val, test = (step_scores(part, normalise) for part in (fit_errors, val_errors, test_errors))
        val_smooth = causal_mean(val, smooth, fit)
        test_smooth = causal_mean(test, smooth, np.concatenate([fit, val]))
        threshold = np.quantile(val_smooth, 1 - CONTAMINATION)
        rows[f"{normalise}/{smooth}"] = {"f1": point_metrics(data.labels, test_smooth > threshold)["f1"],
                                         "oracle": best_f1(data.labels, test_smooth)["best_f1"]}
    beyond = (test_errors > val_errors.max(axis=0)).sum(axis=1)  # channels past their largest validation error
    labels = np.asarray(data.labels, dtype=bool)
    rows["channels beyond validation"] = {"normal": float(beyond[~labels].mean()),
                                          "anomalous": float(beyond[labels].mean())}
    print(spec, seed, {rule: round(row["f1"], 3) for rule, row in rows.items() if "f1" in row}, flush=True)
    return rows


def table(results: dict[str, list[dict]], specs: tuple[str, ...], rules: list[str]) -> list[str]:
    lines = ["| rule (normalise/smooth) | F1 at the default threshold | oracle F1 | F1 / oracle |", "|---|---|---|---|"]
    for rule in rules:
        f1 = [row[rule]["f1"] for spec in specs for row in results[spec]]
        oracle = [row[rule]["oracle"] for spec in specs for row in results[spec]]
        lines.append(f"| {rule} | {mean_std(f1)} | {mean_std(oracle)} | {np.mean(f1) / np.mean(oracle):.2f} |")
    return lines


def per_entity(results: dict[str, list[dict]], specs: tuple[str, ...], rules: list[str]) -> list[str]:
    """F1 / oracle per entity and rule, and how many channels are past their largest validation error on the
    test's normal and anomalous steps (drift: many on normal steps too)."""
    lines = ["| entity | " + " | ".join(rules) + " | channels beyond validation: normal / anomalous steps |",
             "|---" * (len(rules) + 2) + "|"]
    for spec in specs:
        cells = [f"{np.mean([row[rule]['f1'] for row in results[spec]]):.3f} / "
                 f"{np.mean([row[rule]['oracle'] for row in results[spec]]):.3f}" for rule in rules]
        beyond = [row["channels beyond validation"] for row in results[spec]]
        cells.append(f"{np.mean([b['normal'] for b in beyond]):.1f} / {np.mean([b['anomalous'] for b in beyond]):.1f}")
        lines.append(f"| {spec} | " + " | ".join(cells) + " |")
    return lines


def results_of(results: dict[str, list[dict]], specs: tuple[str, ...]) -> list[dict]:
    return [row for spec in specs for row in results[spec]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "score-screen", help="one run per entity")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--results", type=Path, help="write every entity's numbers here (JSON)")
    args = parser.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    results = {spec: [screen(spec, seed, args.runs) for seed in range(args.seeds)] for spec in DEVELOPMENT}
    rules = [rule for rule, row in results[DEVELOPMENT[0]][0].items() if "f1" in row]
    chosen = max(rules, key=lambda rule: np.mean([row[rule]["f1"] for row in results_of(results, DEVELOPMENT)]))
    results.update({spec: [screen(spec, seed, args.runs) for seed in range(args.seeds)] for spec in EVALUATION})
    current = f"{NORMALISE[0]}/{SMOOTH[0]}"
    command = f"SBTS_DATA_DIR=../shared/data python benchmarks/anomaly_score_screen.py --seeds {args.seeds}"
    lines = ["## Anomaly-score rules: chosen on ASD, read on SMD (F1 unadjusted; one SBT per entity and seed)", "",
             f"Command: `{command}`  ",
             f"Machine: {machine_line()}  ",
             f"Protocol: `sbts train anomaly --data <entity> {' '.join(TRAIN_FLAGS)} --seed <0..{args.seeds - 1}>`; "
             f"threshold: the {100 * (1 - CONTAMINATION):g}th percentile of the validation scores under each rule; "
             "F1 point-wise, unadjusted; oracle = the best F1 on the test labels (ORACLE).", "",
             f"**ASD, 12 entities (development: the rule is chosen here, by mean F1): {chosen}**", "",
             *table(results, DEVELOPMENT, rules), "",
             "**SMD, 8 machines (evaluation: sbts' current score and the rule chosen on ASD)**", "",
             *table(results, EVALUATION, [current] if chosen == current else [current, chosen]), "",
             "**SMD per machine: F1 at the default threshold / oracle F1, mean over seeds; channels past their "
             "largest validation error, mean over the test's normal and anomalous steps**", "",
             *per_entity(results, EVALUATION, list(dict.fromkeys([current, chosen]))), "",
             "**SMD, every rule (not used to choose; shown so that the choice can be checked)**", "",
             *table(results, EVALUATION, rules)]
    print("\n".join(lines))
    replace_section(args.output, "anomaly-score-screen", "\n".join(lines))
    if args.results:
        args.results.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
