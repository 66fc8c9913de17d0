"""Screen of a patch embedding for classification: P consecutive steps of every channel as one token.

    SBTS_DATA_DIR=../shared/data python benchmarks/patch_screen.py --results runs/patch-screen.jsonl
    python benchmarks/patch_screen.py --results runs/patch-screen.jsonl --summary-only

Patching is applied to the data, not built into the model: each case of shape (channels, T) becomes
(channels x P, ceil(T / P)), channel c's step k x P + p in row c x P + p (the last patch repeats the case's last
value), so the model's embedding maps the P x channels values of a patch to one token, as a patch embedding
would. Everything else is sbts's classification defaults (100 epochs, dense and SBT d=0.5) with the stratified
25 % validation split of ``recipe-classification-confirm``, whose runs are the comparison at P = 1. Each run's
result is one JSON line in ``--results`` (runs already there are not repeated); the summary prints the mean
best-epoch validation accuracy per set (the choice is made on it) and the test accuracy beside it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_line  # noqa: E402

SETS = ("JapaneseVowels", "Handwriting", "UWaveGestureLibrary", "BasicMotions", "Epilepsy", "ERing")
MODELS = ("dense", "sbt")
PATCHES = (4, 8)
SEEDS = (0, 1, 2)
SETTINGS = {"epochs": 100, "val_fraction": 0.25, "device": "cpu"}
SBT_DENSITY = 0.5


def patched(series: np.ndarray, patch: int) -> np.ndarray:
    """(channels, T) -> (channels x patch, ceil(T / patch)); row c x patch + p: channel c's steps p, p + patch..."""
    channels, steps = series.shape
    short = -steps % patch
    if short:
        series = np.concatenate([series, np.repeat(series[:, -1:], short, axis=1)], axis=1)
    tokens = series.shape[1] // patch
    return series.reshape(channels, tokens, patch).transpose(0, 2, 1).reshape(channels * patch, tokens)


@lru_cache(maxsize=1)  # the runs go set by set: each set is read once per patch size
def loaded(name: str):
    from sbts.data.uea import load_classification

    return load_classification(f"UEA/{name}")


def run_one(name: str, model: str, patch: int, seed: int) -> dict:
    import torch

    from sbts.tasks.classification import SBTClassifier

    torch.set_num_threads(1)
    train, test = loaded(name)
    density = {"density": SBT_DENSITY} if model == "sbt" else {}
    started = time.perf_counter()
    classifier = SBTClassifier(model=model, random_state=seed, **SETTINGS, **density).fit(
        [patched(s, patch) for s in train.series], train.labels)
    best = classifier.history_[classifier.best_epoch_ - 1]
    accuracy = float(np.mean(classifier.predict([patched(s, patch) for s in test.series]) == test.labels))
    return {"set": name, "model": model, "patch": patch, "seed": seed, "val_accuracy": best["val_accuracy"],
            "test_accuracy": accuracy, "seconds": round(time.perf_counter() - started, 1)}


def summary(rows: list[dict]) -> str:
    cells = defaultdict(list)
    for row in rows:
        cells[(row["model"], row["patch"], row["set"])].append(row)
    lines = ["| model | P | " + " | ".join(SETS) + " | mean validation | mean test |",
             "|---|---|" + "---|" * (len(SETS) + 2)]
    for model in MODELS:
        for patch in sorted({row["patch"] for row in rows}):
            found = [cells[(model, patch, name)] for name in SETS]
            if not all(found):
                continue
            val = [np.mean([r["val_accuracy"] for r in runs]) for runs in found]
            test = [np.mean([r["test_accuracy"] for r in runs]) for runs in found]
            shown = " | ".join(f"{v:.3f} ({t:.3f})" for v, t in zip(val, test))
            lines.append(f"| {model} | {patch} | {shown} | {np.mean(val):.3f} | {np.mean(test):.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, required=True, help="JSON lines, one per run (appended)")
    parser.add_argument("--summary-only", action="store_true", help="print the table of the runs already there")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.results.read_text().splitlines()] if args.results.is_file() else []
    if not args.summary_only:
        print(machine_line(), flush=True)
        done = {(r["set"], r["model"], r["patch"], r["seed"]) for r in rows}
        for patch, name, model, seed in itertools.product(PATCHES, SETS, MODELS, SEEDS):
            if (name, model, patch, seed) in done:
                continue
            row = run_one(name, model, patch, seed)
            with args.results.open("a") as out:  # one whole line per finished run
                out.write(json.dumps(row) + "\n")
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("Mean best-epoch validation accuracy over seeds (test accuracy in brackets, never used to choose):\n")
    print(summary(rows))


if __name__ == "__main__":
    main()
