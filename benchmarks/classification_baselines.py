"""MiniRocket, MultiRocket and 1-NN DTW on the splits of a shipped classification sweep, without its Transformers.

    SBTS_DATA_DIR=../shared/data python benchmarks/classification_baselines.py benchmark-classification

Each dataset and seed of the sweep's grid is prepared exactly as its trials prepare it (``Task.resolve`` of the
trial's run specification: the same stratified validation split, the same scaling and padding), and the
baselines are fitted on it as a ``baselines: true`` trial fits them (``sbts.tasks.classification.baseline_report``,
one torch thread). What it prints and writes (section ``classification-baselines`` of docs/benchmarks.md): test
accuracy mean ± std over the seeds, size in bytes and fit seconds per dataset; the Transformers' numbers stay
those of the sweep's own report. Use it where the sweep ran before it fitted baselines, to put the two side by
side without retraining every Transformer.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_line, replace_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from sbts.sweep import named_spec_path, read_spec
    from sbts.tasks import get_task
    from sbts.tasks.classification import baseline_report

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="a shipped classification sweep (sbts reproduce --list)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = read_spec(named_spec_path(args.sweep))
    task = get_task(spec.task)
    seeds = spec.grid.get("seed", spec.seeds)
    dense = next(label for label, options in spec.variants.items() if options.get("model") == "dense")
    results: dict[str, dict[str, list]] = {}
    for data in spec.datasets:
        for seed in seeds:
            cell = {"data": data, "variant": dense, "seed": seed} if len(spec.datasets) > 1 else {
                "variant": dense, "seed": seed}
            _, prepared, _ = task.resolve(spec.run_spec(cell))
            for name, entry in baseline_report(prepared, seed).items():
                if "skipped" in entry:
                    continue
                row = results.setdefault(data, {}).setdefault(name, [])
                row.append((entry["test"]["accuracy"], entry["size_bytes"], entry["fit_seconds"]))
            print(data, seed, {n: round(v[-1][0], 3) for n, v in results[data].items()}, flush=True)
    lines = [f"## Classification baselines on the splits of {args.sweep} (test accuracy, mean ± std over seeds)", "",
             f"Command: `SBTS_DATA_DIR=../shared/data python benchmarks/classification_baselines.py {args.sweep}`  ",
             f"Machine: {machine_line()}; 1 thread  ",
             f"Each dataset and seed ({', '.join(map(str, seeds))}) prepared as the sweep's trials prepare it (the "
             "same validation split, scaling and padding), the baselines fitted on its training cases as a "
             "`baselines: true` trial fits them; size: every stored number as float32 (1-NN DTW: its training "
             "set). The Transformers are not retrained here: their numbers are the sweep's.", "",
             "| dataset | baseline | runs | test accuracy | size (bytes) | fit (s) |", "|---|---|---|---|---|---|"]
    for data, by_name in results.items():
        for name, rows in by_name.items():
            accuracies = [r[0] for r in rows]
            spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
            lines.append(f"| {data} | {name} | {len(rows)} | {statistics.mean(accuracies):.3f} ± {spread:.3f} | "
                         f"{statistics.mean(r[1] for r in rows):,.0f} | {statistics.mean(r[2] for r in rows):.1f} |")
    replace_section(args.output, "classification-baselines", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
