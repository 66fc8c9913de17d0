"""Dense vs Sparse Binary Transformer on UEA datasets: test accuracy, mean ± std over seeds.

    python benchmarks/classification.py --seeds 3 --epochs 100 --jobs 2

Every run goes through the same path as ``sbts train classification``: a stratified validation split
held out of the training set selects the epoch; test accuracy is that epoch's. Both models get the
same epoch budget (the paper's configs give the SBT up to 5x more, e.g. JapaneseVowels 250 vs 50:
SBT needs more epochs, so a shared budget is a handicap for it; ``--paper-epochs`` uses each preset's
own count instead). Datasets absent from SBTS_DATA_DIR are skipped and listed.
Results go to docs/benchmarks.md (section ``classification``) and to a JSON file beside it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info, machine_line, mean_std, run_in_processes, save_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# paper-spec §5.1 datasets available here, plus four more from the archive.
DATASETS = ["JapaneseVowels", "Handwriting", "UWaveGestureLibrary", "BasicMotions", "Epilepsy"]
# Architecture for datasets without a paper configuration (JapaneseVowels uses its paper preset).
GENERIC_MODEL = {"d_model": 64, "n_heads": 2, "n_layers": 2, "d_ff": 256}
VARIANTS = [("dense", None), ("sbt", 0.5), ("sbt", 0.25), ("sbt", 0.1)]


def one_run(job: dict) -> dict:
    import torch

    from sbts.tasks import classification
    from sbts.tasks.runs import build_run_spec, preset_path

    torch.set_num_threads(job["threads"])
    model_overrides = {} if preset_path("classification", job["dataset"], job["model"]) else dict(GENERIC_MODEL)
    if job["density"] is not None:
        model_overrides["density"] = job["density"]
    model_overrides["seed"] = job["seed"]
    train_overrides = {"seed": job["seed"], "device": "cpu"}
    if job["epochs"] is not None:  # None: the paper preset's epoch count
        train_overrides["epochs"] = job["epochs"]
    spec = build_run_spec("classification", data=f"UEA/{job['dataset']}", model_name=job["model"], config_file=None,
                          model_overrides=model_overrides, train_overrides=train_overrides)
    with tempfile.TemporaryDirectory() as tmp:
        metrics = classification.ClassificationTask().train_run(spec, Path(tmp) / "run", verbose=False)
    return {**job, "epochs": metrics["epochs"], "test_accuracy": metrics["test"]["accuracy"], "val_accuracy": metrics["val"].get("accuracy"),
            "best_epoch": metrics["best_epoch"], "seconds_per_epoch": metrics["seconds_per_epoch"],
            "d_model": metrics["config"]["model"]["d_model"], "attention": metrics["config"]["model"]["attention"]}


def report(results: list[dict], args: argparse.Namespace, skipped: list[str], wall: float, info: dict) -> str:
    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in results)]
    header = ["dataset"] + [("dense" if m == "dense" else f"SBT d={d}") for m, d in VARIANTS]
    epochs = {(r["model"], r["density"]): r["epochs"] for r in results}
    budget = (f"{args.epochs} epochs for every model" if args.epochs is not None else
              "the paper's epochs per model (" + ", ".join(
                  f"{'dense' if m == 'dense' else f'SBT d={d}'}: {epochs[(m, d)]}" for m, d in VARIANTS
                  if (m, d) in epochs) + ")")
    command = (f"SBTS_DATA_DIR=../shared/data python benchmarks/classification.py --seeds {args.seeds} "
               + (f"--epochs {args.epochs}" if args.epochs is not None else "--paper-epochs")
               + f" --jobs {args.jobs}" + ("" if args.datasets == DATASETS else f" --datasets {' '.join(args.datasets)}")
               + ("" if args.section == "classification" else f" --section {args.section}"))
    lines = [
        f"## {args.title}",
        "",
        f"Command: `{command}`",
        f"Machine: {machine_line(info)}; {args.jobs} runs in parallel, {args.threads} torch thread(s) each; "
        f"wall time {wall / 60:.1f} min.",
        f"Protocol: seeds {', '.join(map(str, range(args.seeds)))} (model weights, split and shuffling); "
        f"{budget}; the epoch with the best accuracy on a stratified 10 % validation split "
        "held out of the training set is tested once on the official test split. SBT = sparse binary linears "
        "(density d = fraction of weights kept) with the fixed Q/K/V activation mask (a = 0.5); dense = float32 "
        "linears, full attention, learnable positions. JapaneseVowels uses its paper configuration (d_model 32); "
        f"the others d_model {GENERIC_MODEL['d_model']}, 2 heads, 2 layers, FFN {GENERIC_MODEL['d_ff']}, batch 8, "
        "Adam lr 1e-3.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for dataset in datasets:
        cells = [dataset]
        for model, density in VARIANTS:
            values = [r["test_accuracy"] for r in results if r["dataset"] == dataset and r["model"] == model
                      and r["density"] == density]
            cells.append(mean_std(values))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Seconds per epoch (training + validation pass, mean over seeds):", "",
              "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for dataset in datasets:
        cells = [dataset]
        for model, density in VARIANTS:
            values = [r["seconds_per_epoch"] for r in results if r["dataset"] == dataset and r["model"] == model
                      and r["density"] == density]
            cells.append(f"{statistics.mean(values):.3f}" if values else "–")
        lines.append("| " + " | ".join(cells) + " |")
    if skipped:
        lines += ["", f"Not in SBTS_DATA_DIR, skipped: {', '.join(skipped)}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    epochs = parser.add_mutually_exclusive_group()
    epochs.add_argument("--epochs", type=int, default=100, help="the same epoch budget for every model")
    epochs.add_argument("--paper-epochs", dest="epochs", action="store_const", const=None,
                        help="each model's epochs from its paper preset (datasets with one)")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (processes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--datasets", nargs="*", default=DATASETS)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--section", default="classification", help="section of the output file to replace")
    parser.add_argument("--title", default="Classification: dense vs SBT (test accuracy, mean ± std over seeds)")
    args = parser.parse_args()

    from sbts.data import available_uea_datasets

    available = set(available_uea_datasets())
    wanted = [d for d in args.datasets if d in available]
    skipped = [d for d in args.datasets if d not in available]
    jobs = [{"dataset": d, "model": m, "density": dens, "seed": s, "epochs": args.epochs, "threads": args.threads}
            for d in wanted for s in range(args.seeds) for m, dens in VARIANTS]
    # Most expensive datasets first so that the parallel workers finish together.
    cost_order = ["UWaveGestureLibrary", "Epilepsy", "Handwriting", "JapaneseVowels", "BasicMotions"]
    jobs.sort(key=lambda j: cost_order.index(j["dataset"]) if j["dataset"] in cost_order else len(cost_order))
    info = machine_info()
    start = time.perf_counter()
    results = run_in_processes(one_run, jobs, args.jobs)
    wall = time.perf_counter() - start
    text = report(results, args, skipped, wall, info)
    save_results(args.output, args.section, text, info, args, results)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
