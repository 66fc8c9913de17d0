"""Dense vs Sparse Binary Transformer anomaly detection next to two simple baselines, mean ± std over seeds.

    SBTS_DATA_DIR=../shared/data python benchmarks/anomaly.py --seeds 3 --epochs 5 --stride 10 --jobs 2

Every Transformer run goes through the same path as ``sbts train anomaly`` with the dataset's paper
preset (paper-spec §1.3): the last 20 % of the training series is held out (in time) to select the
epoch and to fit the threshold, every test step is scored once, and the threshold never sees test data.

Budget (2 CPU cores, about 40 minutes): training windows every ``--stride`` steps (paper: every step),
``--epochs`` epochs with early stopping after 5 (paper: up to 50), and SMD windows of ``--smd-window``
steps (paper: 200; MSL and SMAP keep the paper's 50). Scoring is never subsampled.

Baselines, scored and thresholded exactly like the Transformers (same splits, scaling, threshold
methods and metrics): ``distance``, the squared distance of each scaled step from the training mean
(what a model that always predicts the mean would score), and ``iforest``, scikit-learn's Isolation
Forest fitted on the training part's steps (seeded like the runs).

Results go to docs/benchmarks.md (section ``anomaly``) and to docs/benchmarks-anomaly.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info, machine_line, mean_std, run_in_processes, save_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = [("dense", None), ("sbt", 0.5), ("sbt", 0.25), ("sbt", 0.1)]
BASELINES = ["distance", "iforest"]
# (key in a run's result, column title). Both thresholds are fitted on validation scores only; the F1 and
# PA-F1 columns name theirs, whatever the run's default was.
COLUMNS = [("f1_percentile", "F1 (pctl 1 %)"), ("f1_pot", "F1 (POT)"), ("f1_pa_pot", "PA-F1 ⚠ (POT)"),
           ("auc_pr", "AUC-PR"), ("vus_pr", "VUS-PR"), ("best_f1", "best F1 (oracle)"),
           ("paper_f1_pa", "paper protocol PA-F1 (leaky)")]


def summary(metrics: dict) -> dict:
    """The numbers the tables show, from a run's (or a baseline's) report. ``f1``, ``precision``, ``recall`` and
    the event/range/affiliation values are at the run's own threshold (``threshold`` names its method)."""
    test, compared = metrics["test"], metrics["thresholds_compared"]
    return {"f1": test["f1"], "precision": test["precision"], "recall": test["recall"],
            "f1_pa_k20": test["f1_pa_k20"], "auc_pr": test["auc_pr"], "auc_roc": test["auc_roc"],
            "vus_pr": test["vus_pr"], "vus_roc": test["vus_roc"], "best_f1": test["best_f1"],
            "affiliation_f1": test["affiliation_f1"], "event_f1": test["event_f1"],
            "f1_percentile": compared["percentile"].get("f1", float("nan")),
            "f1_pot": compared["pot"].get("f1", float("nan")), "f1_pa_pot": compared["pot"].get("f1_pa", float("nan")),
            "paper_f1_pa": metrics["paper_protocol"]["f1_pa"], "threshold": metrics["threshold"]["method"]}


def model_overrides(job: dict) -> dict:
    overrides = {"seed": job["seed"]}
    if job["density"] is not None:
        overrides["density"] = job["density"]
    if job["dataset"].startswith("SMD/"):
        overrides["max_len"] = job["smd_window"]
    return overrides | job.get("model_options", {})  # e.g. the streamable configuration's


def one_run(job: dict) -> dict:
    import torch

    from sbts.tasks import anomaly
    from sbts.tasks.runs import build_run_spec

    torch.set_num_threads(job["threads"])
    spec = build_run_spec("anomaly", data=job["dataset"], model_name=job["model"], config_file=None,
                          model_overrides=model_overrides(job),
                          train_overrides={"epochs": job["epochs"], "stride": job["stride"], "seed": job["seed"],
                                           "device": "cpu"})
    with tempfile.TemporaryDirectory() as tmp:
        metrics = anomaly.AnomalyTask().train_run(spec, Path(tmp) / "run", verbose=False)
    return {**job, **summary(metrics), "epochs_run": metrics["epochs"], "best_epoch": metrics["best_epoch"],
            "seconds_per_epoch": metrics["seconds_per_epoch"], "test_scoring_seconds": metrics["test_scoring_seconds"],
            "window": metrics["window"], "d_model": metrics["config"]["model"]["d_model"]}


def baseline_run(job: dict) -> dict:
    """A baseline's scores on the same splits, thresholded and reported by the task's own code."""
    import numpy as np
    from sklearn.ensemble import IsolationForest

    from sbts.tasks import anomaly
    from sbts.tasks.runs import build_run_spec

    spec = build_run_spec("anomaly", data=job["dataset"], model_name="sbt", config_file=None,
                          model_overrides=model_overrides(job), train_overrides={"stride": job["stride"]})
    run, splits, _ = anomaly.AnomalyTask().resolve(spec)
    options = anomaly.AnomalyOptions.from_dict(run.task_options)
    if job["model"] == "distance":
        def score(rows):
            return np.mean(np.square(rows.astype(np.float64)), axis=1)
    else:
        forest = IsolationForest(random_state=job["seed"]).fit(splits.fit)

        def score(rows):
            return -forest.score_samples(rows)
    scores = anomaly.SplitScores(score(splits.fit), score(splits.val), score(splits.test), 0.0)
    _, report = anomaly.detection_report(scores, splits, options)
    return {**job, **summary(report)}


def run_job(job: dict) -> dict:
    start = time.perf_counter()
    result = baseline_run(job) if job["model"] in BASELINES else one_run(job)
    return result | {"seconds": round(time.perf_counter() - start, 1)}


def label(model: str, density: float | None) -> str:
    return {"dense": "dense", "distance": "distance from mean", "iforest": "Isolation Forest"}.get(
        model, f"SBT d={density}")


def rows_of(results: list[dict], datasets: list[str]) -> list[tuple[str, list[dict]]]:
    entries = [(label(m, d), [r for r in results if r["model"] == m and r["density"] == d and r["dataset"] in datasets])
               for m, d in VARIANTS + [(b, None) for b in BASELINES]]
    return [(name, runs) for name, runs in entries if runs]


def table(results: list[dict], datasets: list[str], title: str) -> list[str]:
    """Mean ± std over seeds (SMD: over every machine and seed)."""
    lines = [f"**{title}**", "", "| model | " + " | ".join(c for _, c in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for name, runs in rows_of(results, datasets):
        lines.append(f"| {name} | " + " | ".join(mean_std([r[key] for r in runs]) for key, _ in COLUMNS) + " |")
    return lines + [""]


def per_machine(results: list[dict], machines: list[str]) -> list[str]:
    """Unadjusted F1 (percentile threshold) per SMD machine, mean ± std over seeds."""
    names = [name for name, _ in rows_of(results, machines)]
    lines = ["**SMD per machine: F1 (percentile threshold, unadjusted), mean ± std over seeds**", "",
             "| machine | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for machine in machines:
        cells = [mean_std([r["f1_percentile"] for r in runs]) for _, runs in rows_of(results, [machine])]
        lines.append(f"| {machine.split('/')[1]} | " + " | ".join(cells) + " |")
    return lines + [""]


def report(results: list[dict], args: argparse.Namespace, datasets: list[str], wall: float, info: dict) -> str:
    machines = [d for d in datasets if d.startswith("SMD/")]
    command = (f"SBTS_DATA_DIR=../shared/data python benchmarks/anomaly.py --seeds {args.seeds} --epochs {args.epochs} "
               f"--stride {args.stride} --smd-window {args.smd_window} --jobs {args.jobs}"
               + ("" if args.datasets is None else f" --datasets {' '.join(args.datasets)}"))
    transformer = [r for r in results if r["model"] not in BASELINES]
    lines = [
        "## Anomaly detection: dense vs SBT vs simple baselines (mean ± std over seeds)",
        "",
        f"Command: `{command}`",
        f"Machine: {machine_line(info)}; {args.jobs} runs in parallel, {args.threads} torch thread(s) each; "
        f"wall time {wall / 60:.1f} min.",
        f"Protocol: seeds {', '.join(map(str, range(args.seeds)))}; paper presets (SBT: Step-T attention, no norms; "
        "dense: full attention, LayerNorm over time; d_model = 2 x channels); "
        f"training windows every {args.stride} steps, at most {args.epochs} epochs (early stopping after 5), "
        f"SMD windows of {args.smd_window} steps (paper 200), MSL/SMAP 50. The last 20 % of each training series "
        "is held out in time: it selects the epoch (reconstruction loss) and the threshold is fitted on its scores "
        "only. Every test step is scored once.",
        "",
        "Columns: **F1 (pctl 1 %)**: point-wise F1, no adjustment, threshold = the 99th percentile of the validation "
        "scores (sbts' default); **F1 (POT)**: the same with a POT threshold (risk 1e-3, level 0.98) fitted on the "
        "validation scores; **PA-F1 ⚠ (POT)**: point-adjusted F1 at the POT threshold (inflated: one hit credits a "
        "whole segment); "
        "**AUC-PR** (average precision) and **VUS-PR**: threshold-free; **best F1 (oracle)**: the best point-wise F1 "
        "over all thresholds, chosen with the test labels (an upper bound, not a result); **paper protocol PA-F1 "
        "(leaky)**: threshold = quantile of train+val+TEST scores (SMD 99.5 %, MSL/SMAP 99 %) then point adjustment, "
        "as the official code: it uses test data and is shown for comparison with published numbers only.",
        "",
    ]
    if machines:
        lines += table(results, machines, f"SMD, {len(machines)} machines ({', '.join(m.split('/')[1] for m in machines)}),"
                                          " mean ± std over machines and seeds")
        lines += per_machine(results, machines)
    for dataset in datasets:
        if not dataset.startswith("SMD/"):
            lines += table(results, [dataset], f"{dataset} (pooled channels)")
    if transformer:
        lines += ["Seconds per training epoch and to score the whole test series (mean over runs):", "",
                  "| dataset | model | s/epoch | test scoring s | epochs run (mean) |", "|---|---|---|---|---|"]
        for group in (["SMD"] if machines else []) + [d for d in datasets if not d.startswith("SMD/")]:
            for m, d in VARIANTS:
                runs = [r for r in transformer if r["model"] == m and r["density"] == d
                        and (r["dataset"] == group or (group == "SMD" and r["dataset"].startswith("SMD/")))]
                if runs:
                    lines.append(f"| {group} | {label(m, d)} | {statistics.mean(r['seconds_per_epoch'] for r in runs):.2f}"
                                 f" | {statistics.mean(r['test_scoring_seconds'] for r in runs):.1f}"
                                 f" | {statistics.mean(r['epochs_run'] for r in runs):.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--stride", type=int, default=10, help="steps between training windows")
    parser.add_argument("--smd-window", type=int, default=100, help="SMD window (paper: 200)")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (processes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--datasets", nargs="*", help="default: every SMD machine in SBTS_DATA_DIR, MSL and SMAP")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--from-json", type=Path, help="only re-render the report from a results file of this script")
    args = parser.parse_args()
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        for key in ("seeds", "epochs", "stride", "smd_window", "jobs", "threads", "datasets"):
            setattr(args, key, saved["args"][key])
        datasets = list(dict.fromkeys(r["dataset"] for r in saved["results"]))
        text = report(saved["results"], args, datasets, saved["wall_seconds"], saved["machine"])
        save_results(args.output, "anomaly", text, saved["machine"], args, saved["results"],
                     wall_seconds=saved["wall_seconds"])
        return

    from sbts.data import available_anomaly_datasets

    available = available_anomaly_datasets()
    datasets = args.datasets or [d for d in available if d.startswith("SMD/")] + [d for d in ("MSL", "SMAP")
                                                                                   if d in available]
    jobs = [{"dataset": d, "model": m, "density": dens, "seed": s, "epochs": args.epochs, "stride": args.stride,
             "smd_window": args.smd_window, "threads": args.threads}
            for d in datasets for s in range(args.seeds) for m, dens in VARIANTS + [(b, None) for b in BASELINES]]
    jobs.sort(key=lambda j: (j["dataset"] not in ("SMAP", "MSL"), j["model"] != "dense"))  # longest first
    datasets = sorted(datasets, key=lambda d: (not d.startswith("SMD/"), d))
    info = machine_info()
    start = time.perf_counter()
    results = run_in_processes(run_job, jobs, args.jobs)
    wall = time.perf_counter() - start
    text = report(results, args, datasets, wall, info)
    save_results(args.output, "anomaly", text, info, args, results, wall_seconds=wall)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
