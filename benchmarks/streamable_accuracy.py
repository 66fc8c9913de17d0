"""Accuracy of the streamable configuration against the paper's, same budget, mean ± std over seeds.

    SBTS_DATA_DIR=../shared/data python benchmarks/streamable_accuracy.py --seeds 3 --jobs 2

Two SBTs per dataset, trained and evaluated exactly as ``benchmarks/anomaly.py`` and
``benchmarks/forecasting.py`` do (paper presets where there are, validation held out in time, thresholds
never on test data, every test step scored once):

- **paper**: the paper's configuration, sinusoidal positions (and, for forecasting, LayerNorm over time),
  trained on shuffled windows;
- **streamable**: the same model with rotary positions (``pos_encoding rope``; forecasting also ``norm
  layer``, LayerNorm per step), trained through the shared pass in shuffled blocks of consecutive windows,
  scored through the shared pass (and streamable one step per observation).

Anomaly detection: every SMD machine in SBTS_DATA_DIR, MSL and SMAP (AUC-PR, VUS-PR, F1 at the default
percentile threshold). Forecasting: ETTm1, ETTh1, exchange_rate, the ``change`` formulation (the best one
without per-window normalisation, which a stream cannot reuse), test MSE against persistence and ridge.
Results go to docs/benchmarks.md (section ``streamable-accuracy``) and docs/benchmarks-streamable-accuracy.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import anomaly as anomaly_benchmark  # noqa: E402
import forecasting as forecasting_benchmark  # noqa: E402
from machine import machine_info, machine_line, mean_std, run_in_processes, save_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"anomaly": {"paper": {}, "streamable": {"pos_encoding": "rope"}},
           "forecasting": {"paper": {}, "streamable": {"pos_encoding": "rope", "norm": "layer"}}}
ANOMALY_DENSITY, FORECAST_DENSITY = 0.25, 0.5  # the paper's AD density; the forecasting benchmark's SBT


def run_job(job: dict) -> dict:
    runner = anomaly_benchmark if job["task"] == "anomaly" else forecasting_benchmark
    start = time.perf_counter()
    return runner.run_job(job) | {"seconds": round(time.perf_counter() - start, 1)}


def jobs_for(args: argparse.Namespace, anomaly_datasets: list[str]) -> list[dict]:
    jobs = []
    for config, options in CONFIGS["anomaly"].items():
        jobs += [{"task": "anomaly", "config": config, "model_options": options, "dataset": d, "model": "sbt",
                  "density": ANOMALY_DENSITY, "seed": s, "epochs": args.epochs, "stride": args.stride,
                  "smd_window": args.smd_window, "threads": args.threads}
                 for d in anomaly_datasets for s in range(args.seeds)]
    for config, options in CONFIGS["forecasting"].items():
        jobs += [{"task": "forecasting", "config": config, "model_options": options, "dataset": d, "model": "sbt",
                  "density": FORECAST_DENSITY, "formulation": "change", "seed": s, "epochs": args.epochs_forecasting,
                  "window": args.window, "stride": args.ettm1_stride if d == "ETT/ETTm1" else 1,
                  "threads": args.threads}
                 for d in forecasting_benchmark.DATASETS for s in range(args.seeds)]
    return jobs


def report(results: list[dict], args: argparse.Namespace, wall: float, info: dict) -> str:
    def cell(runs: list[dict], key: str) -> str:
        return mean_std([r[key] for r in runs])

    lines = [f"Command: `SBTS_DATA_DIR=../shared/data python benchmarks/streamable_accuracy.py --seeds {args.seeds} "
             f"--jobs {args.jobs}` ({len(results)} runs, {wall / 60:.1f} min).",
             f"Machine: {machine_line(info)}; {args.jobs} runs in parallel, {args.threads} torch thread(s) each.", "",
             f"Anomaly detection, SBT density {ANOMALY_DENSITY}, {args.epochs} epochs (early stopping after 5), "
             f"training windows every {args.stride} steps, SMD windows {args.smd_window} (MSL/SMAP 50):", "",
             "| dataset | config | AUC-PR | VUS-PR | F1 (percentile) | s/epoch | test scoring s |",
             "|---|---|---|---|---|---|---|"]
    anomaly = [r for r in results if r["task"] == "anomaly"]
    groups = ["SMD"] + sorted({r["dataset"] for r in anomaly if not r["dataset"].startswith("SMD/")})
    for group in groups:
        for config in CONFIGS["anomaly"]:
            runs = [r for r in anomaly if r["config"] == config
                    and (r["dataset"] == group or (group == "SMD" and r["dataset"].startswith("SMD/")))]
            if runs:
                lines.append(f"| {group} | {config} | {cell(runs, 'auc_pr')} | {cell(runs, 'vus_pr')} | "
                             f"{cell(runs, 'f1_percentile')} | {cell(runs, 'seconds_per_epoch')} | "
                             f"{cell(runs, 'test_scoring_seconds')} |")
    lines += ["", f"Forecasting, SBT density {FORECAST_DENSITY}, formulation change, window {args.window}, "
                  f"{args.epochs_forecasting} epochs; test MSE on the standardised scale:", "",
              "| dataset | config | test MSE | persistence | ridge | s/epoch |", "|---|---|---|---|---|---|"]
    forecasts = [r for r in results if r["task"] == "forecasting"]
    for dataset in forecasting_benchmark.DATASETS:
        for config in CONFIGS["forecasting"]:
            runs = [r for r in forecasts if r["config"] == config and r["dataset"] == dataset]
            if runs:
                baseline = {name: statistics.mean(r["baselines"][name]["test"]["mse"] for r in runs)
                            for name in ("persistence", "ridge")}
                lines.append(f"| {dataset} | {config} | {forecasting_benchmark.errors_mean_std([r['test_mse'] for r in runs])} "
                             f"| {forecasting_benchmark.error(baseline['persistence'])} | "
                             f"{forecasting_benchmark.error(baseline['ridge'])} | {cell(runs, 'seconds_per_epoch')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5, help="anomaly detection")
    parser.add_argument("--epochs-forecasting", type=int, default=10)
    parser.add_argument("--stride", type=int, default=10, help="anomaly detection: steps between training windows")
    parser.add_argument("--smd-window", type=int, default=100)
    parser.add_argument("--window", type=int, default=96, help="forecasting window")
    parser.add_argument("--ettm1-stride", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    from sbts.data import available_anomaly_datasets

    available = available_anomaly_datasets()
    datasets = [d for d in available if d.startswith("SMD/")] + [d for d in ("MSL", "SMAP") if d in available]
    jobs = sorted(jobs_for(args, datasets), key=lambda j: j["dataset"] not in ("SMAP", "MSL", "ETT/ETTm1"))
    info, start = machine_info(), time.perf_counter()
    results = run_in_processes(run_job, jobs, args.jobs)
    wall = time.perf_counter() - start
    save_results(args.output, "streamable-accuracy", report(results, args, wall, info), info, args, results,
                 wall_seconds=round(wall, 1))


if __name__ == "__main__":
    main()
