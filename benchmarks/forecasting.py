"""Dense vs Sparse Binary Transformer one-step forecasting next to three simple baselines, mean ± std over seeds.

    SBTS_DATA_DIR=../shared/data python benchmarks/forecasting.py --seeds 3 --epochs 10 --window 96 --jobs 2

Every Transformer run goes through the same path as ``sbts train forecasting`` (paper-spec §1.4: Step-T
attention for the SBT, full attention for dense, LayerNorm over time for both; batch 128, Adam 1e-3, x0.75
learning rate on plateaus): the series is split in time (ETT: the Informer 12/4/4 months; exchange_rate:
70/10/20 %), scaled with the training rows' statistics, the epoch is selected on validation MSE and every
test row is forecast once. Each run's report carries the baselines, fitted on the same windows:
persistence, the mean of the window, and ridge regression on the window (penalty chosen on validation).

Formulations (``--target``, ``--input-norm``): ``paper`` (forecast the value from the raw standardised
window), ``change`` (forecast the change from the last observed step: zero output = persistence),
``window`` (each window on its own mean and std), ``change+window`` (both).

Budget (2 CPU cores, about an hour): windows of ``--window`` steps (paper: 200), at most ``--epochs`` epochs
with early stopping after 3 (paper: 50 with early stopping after 5), ETTm1 training windows every
``--ettm1-stride`` steps (the others every step).

Results go to docs/benchmarks.md (section ``forecasting``) and to docs/benchmarks-forecasting.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info, machine_line, mean_std, run_in_processes, save_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ["ETT/ETTm1", "ETT/ETTh1", "exchange_rate"]
FORMULATIONS = {"paper": ("value", "none"), "change": ("change", "none"), "window": ("value", "window"),
                "change+window": ("change", "window")}
# (model, density, formulation): every formulation for dense and SBT 0.5, the paper's and the combined one for 0.25.
VARIANTS = ([(m, d, f) for m, d in (("dense", None), ("sbt", 0.5)) for f in FORMULATIONS]
            + [("sbt", 0.25, f) for f in ("paper", "change+window")])
BASELINES = {"persistence": "persistence (last value)", "window_mean": "window mean", "ridge": "ridge on the window",
             "ridge_per_variable": "ridge per variable"}
PATIENCE = 3


def error_format(value: float) -> str:
    """Errors span 0.004 (exchange_rate) to 1+: four significant digits of ``value``, as fixed decimals so that a
    std printed with the same format lines up with its mean."""
    magnitude = math.floor(math.log10(abs(value))) if value else 0
    return f".{max(0, 3 - magnitude)}f"


def error(value: float) -> str:
    return f"{value:{error_format(value)}}"


def errors_mean_std(values: list[float]) -> str:
    return mean_std(values, error_format(statistics.mean(values)))


def stride_of(dataset: str, args: argparse.Namespace) -> int:
    return args.ettm1_stride if dataset == "ETT/ETTm1" else 1


def one_run(job: dict) -> dict:
    import torch

    from sbts.tasks import forecasting
    from sbts.tasks.runs import build_run_spec

    torch.set_num_threads(job["threads"])
    target, input_norm = FORMULATIONS[job["formulation"]]
    density = {} if job["density"] is None else {"density": job["density"]}
    model = {"seed": job["seed"], "max_len": job["window"]} | density | job.get("model_options", {})
    spec = build_run_spec("forecasting", data=job["dataset"], model_name=job["model"], config_file=None,
                          model_overrides=model,
                          train_overrides={"epochs": job["epochs"], "patience": PATIENCE, "stride": job["stride"],
                                           "seed": job["seed"], "device": "cpu"},
                          task_overrides={"target": target, "input_norm": input_norm})
    with tempfile.TemporaryDirectory() as tmp:
        metrics = forecasting.ForecastTask().train_run(spec, Path(tmp) / "run", verbose=False)
    baselines = {name: {split: {k: entry[split][k] for k in ("mse", "mae", "mse_original", "mae_original")}
                        for split in ("val", "test")} | ({"alpha": entry["alpha"]} if "alpha" in entry else {})
                 for name, entry in metrics["baselines"].items()}
    return {**job, **{f"test_{k}": metrics["test"][k] for k in ("mse", "mae", "mse_original", "mae_original")},
            "val_mse": metrics["val"]["mse"], "baselines": baselines, "epochs_run": metrics["epochs"],
            "best_epoch": metrics["best_epoch"], "seconds_per_epoch": metrics["seconds_per_epoch"],
            "test_forecast_seconds": metrics["test_forecast_seconds"], "d_model": metrics["config"]["model"]["d_model"],
            "split": metrics["split"]}


def run_job(job: dict) -> dict:
    start = time.perf_counter()
    return one_run(job) | {"seconds": round(time.perf_counter() - start, 1)}


def label(model: str, density: float | None) -> str:
    return "dense" if model == "dense" else f"SBT d={density}"


def dataset_table(results: list[dict], dataset: str) -> list[str]:
    runs = [r for r in results if r["dataset"] == dataset]
    if not runs:
        return []
    first = runs[0]
    lines = [f"**{dataset}** ({first['split']['method']} split: {first['split']['rows']['train']:,} / "
             f"{first['split']['rows']['val']:,} / {first['split']['rows']['test']:,} rows; "
             f"{first['split']['training_windows']:,} training windows; d_model {first['d_model']})", "",
             "| model | formulation | test MSE | test MAE | MSE / persistence | beats persistence (seeds) | val MSE |"
             " epochs (best) |", "|---|---|---|---|---|---|---|---|"]
    persistence = first["baselines"]["persistence"]["test"]["mse"]
    for name, title in BASELINES.items():
        if name not in first["baselines"]:  # runs made before this baseline existed
            continue
        entry = first["baselines"][name]  # the same in every run of the dataset: same split, windows and scaling
        note = f" (alpha {entry['alpha']:g})" if "alpha" in entry else ""
        lines.append(f"| {title}{note} | – | {error(entry['test']['mse'])} | {error(entry['test']['mae'])} | "
                     f"{entry['test']['mse'] / persistence:.2f} | – | {error(entry['val']['mse'])} | – |")
    for model, density, formulation in VARIANTS:
        group = [r for r in runs if r["model"] == model and r["density"] == density and r["formulation"] == formulation]
        if not group:
            continue
        ratio = statistics.mean(r["test_mse"] for r in group) / persistence
        wins = sum(r["test_mse"] < persistence for r in group)
        lines.append(f"| {label(model, density)} | {formulation} | {errors_mean_std([r['test_mse'] for r in group])} | "
                     f"{errors_mean_std([r['test_mae'] for r in group])} | {ratio:.2f} | {wins}/{len(group)} | "
                     f"{errors_mean_std([r['val_mse'] for r in group])} | "
                     f"{statistics.mean(r['epochs_run'] for r in group):.1f} "
                     f"({statistics.mean(r['best_epoch'] for r in group):.1f}) |")
    return lines + [""]


def report(results: list[dict], args: argparse.Namespace, wall: float, info: dict) -> str:
    command = (f"SBTS_DATA_DIR=../shared/data python benchmarks/forecasting.py --seeds {args.seeds} "
               f"--epochs {args.epochs} --window {args.window} --ettm1-stride {args.ettm1_stride} --jobs {args.jobs}"
               + ("" if args.datasets is None else f" --datasets {' '.join(args.datasets)}"))
    lines = [
        "## Forecasting: dense vs SBT vs simple baselines, one step ahead (mean ± std over seeds)",
        "",
        f"Command: `{command}`",
        f"Machine: {machine_line(info)}; {args.jobs} runs in parallel, {args.threads} torch thread(s) each; "
        f"wall time {wall / 60:.1f} min.",
        f"Protocol: seeds {', '.join(map(str, range(args.seeds)))}; windows of {args.window} steps ({args.window - 1} "
        f"observed, paper 200); at most {args.epochs} epochs, early stopping after {PATIENCE} without validation "
        "improvement, x0.75 learning rate on plateaus, batch 128, d_model 64 (the paper's ETTm1 width), 2 layers, "
        f"2 heads, FFN 256; training windows every {args.ettm1_stride} steps on ETTm1, every step elsewhere. SBT: "
        "Step-T attention; dense: full attention; LayerNorm over time in both. The epoch is selected on validation "
        "MSE (the official code selects on test). Every validation and test row is forecast once.",
        "",
        "MSE and MAE are on the standardised scale (training rows' mean and std), averaged over every test row and "
        "variable: the paper's numbers. Original-unit errors are in the JSON file. Baselines see the same windows; "
        "ridge's penalty is chosen on validation. **MSE / persistence** below 1 means better than repeating the "
        "last value.",
        "",
    ]
    for dataset in args.datasets or DATASETS:
        lines += dataset_table(results, dataset)
    lines += ["Seconds per training epoch and to forecast the whole test period (mean over runs; "
              f"{args.jobs} runs shared the machine):", "",
              "| dataset | model | s/epoch | test forecast s |", "|---|---|---|---|"]
    for dataset in args.datasets or DATASETS:
        for model, density in (("dense", None), ("sbt", 0.5), ("sbt", 0.25)):
            group = [r for r in results if r["dataset"] == dataset and r["model"] == model and r["density"] == density]
            if group:
                lines.append(f"| {dataset} | {label(model, density)} | "
                             f"{statistics.mean(r['seconds_per_epoch'] for r in group):.2f} | "
                             f"{statistics.mean(r['test_forecast_seconds'] for r in group):.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--window", type=int, default=96, help="window length (paper: 200)")
    parser.add_argument("--ettm1-stride", type=int, default=4, help="steps between ETTm1 training windows")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (processes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--datasets", nargs="*", help=f"default: {' '.join(DATASETS)}")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--from-json", type=Path, help="only re-render the report from a results file of this script")
    args = parser.parse_args()
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        for key in ("seeds", "epochs", "window", "ettm1_stride", "jobs", "threads", "datasets"):
            setattr(args, key, saved["args"][key])
        text = report(saved["results"], args, saved["wall_seconds"], saved["machine"])
        save_results(args.output, "forecasting", text, saved["machine"], args, saved["results"],
                     wall_seconds=saved["wall_seconds"])
        return
    jobs = [{"dataset": d, "model": m, "density": dens, "formulation": f, "seed": s, "epochs": args.epochs,
             "window": args.window, "stride": stride_of(d, args), "threads": args.threads}
            for d in args.datasets or DATASETS for s in range(args.seeds) for m, dens, f in VARIANTS]
    info = machine_info()
    start = time.perf_counter()
    results = run_in_processes(run_job, jobs, args.jobs)
    wall = time.perf_counter() - start
    save_results(args.output, "forecasting", report(results, args, wall, info), info, args, results,
                 wall_seconds=wall)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
