"""Per-observation cost of anomaly scoring on a live stream, measured in one run.

    python benchmarks/streaming.py --quick --json     # under 2 minutes, one JSON object
    python benchmarks/streaming.py --write            # longer rounds; results to docs/benchmarks.md

For the paper's SMD (w = 200) and MSL (w = 50) shapes, the cost of one ``update(x_t)``:

- eager PyTorch dense float32 recomputing the window (the paper's dense detector: full attention,
  LayerNorm over time), batch 1, the baseline;
- today's windowed SBT runtime: the paper's SBT (sinusoidal positions) in the numpy runtime, which
  recomputes the window's first layers per observation (``ScoreStream``);
- the cached stream of the streamable SBT (the same model with rotary positions): one past-stream row and
  one query row per observation (``CachedScoreStream``).

Models are untrained (random scores; the speed does not depend on training). Timing: warm-up, then the
median over rounds of the per-call time (``benchmarks/inference.py``); threads pinned; ratios are against
the baseline measured in the same run. ``max_relative_difference``: cached stream against batch scoring of
the same 300 steps.

Also, on the SMD shape: scoring a whole series (steps/s) window by window in the runtime (the paper's SBT,
as before) against the shared pass of the streamable SBT (numpy runtime and torch); and one training epoch
at stride 1 of the streamable SBT, window by window against the shared pass (the same model, batch 128).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from inference import median_ms  # noqa: E402
from machine import machine_info, machine_line, replace_section  # noqa: E402

from sbts.config import read_config_file  # noqa: E402
from sbts.data.preprocessing import ChannelScaler  # noqa: E402
from sbts.export.artifact import export_model  # noqa: E402
from sbts.models import create_model  # noqa: E402
from sbts.config import TrainConfig  # noqa: E402
from sbts.runtime import load  # noqa: E402
from sbts.tasks.anomaly import AnomalyTask, split_and_scale  # noqa: E402
from sbts.tasks.runs import series_network  # noqa: E402
from sbts.training import Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("SMD", "MSL")
STREAMABLE = {"pos_encoding": "rope"}  # the paper's SBT (Step-T, no norms) with relative positions
CHECK_STEPS = 300


def paper_model(dataset: str, model_name: str, **changes):
    spec = read_config_file(ROOT / "sbts" / "configs" / "paper" / f"anomaly_{dataset}_{model_name}.yaml")
    torch.manual_seed(0)
    model = create_model(model_name, **{**spec["model"], **changes})
    for name, parameter in model.named_parameters():
        if name.endswith("scores"):
            torch.nn.init.normal_(parameter.data)
    return model.eval()


def exported(model, folder: Path, name: str):
    channels = model.config.in_channels
    path = folder / f"{name}.sbts"
    export_model(model, path, task="anomaly", inference_state={"threshold": {"value": 1.0, "method": "given"}},
                 scaler=ChannelScaler(np.zeros(channels), np.ones(channels)))
    return load(path)


def measure(dataset: str, seconds: float, folder: Path) -> dict:
    dense = paper_model(dataset, "dense")
    windowed = exported(paper_model(dataset, "sbt"), folder, f"{dataset}-paper")
    cached = exported(paper_model(dataset, "sbt", **STREAMABLE), folder, f"{dataset}-streamable")
    window, channels = dense.config.max_len, dense.config.in_channels
    rng = np.random.default_rng(0)
    context, rows = rng.standard_normal((window, channels)), rng.standard_normal((CHECK_STEPS, channels))
    x = torch.from_numpy(np.concatenate([context, rows])[-window:][None].astype(np.float32))

    def torch_dense() -> None:
        with torch.no_grad():
            dense(x)

    streams = {"windowed": windowed.stream(context), "cached": cached.stream(context)}
    row = iter(np.tile(rows, (1000, 1)))
    ms = {"torch_dense": median_ms(torch_dense, seconds),
          **{name: median_ms(lambda s=stream: s.update(next(row)), seconds) for name, stream in streams.items()}}
    check = cached.stream(context).update_many(rows)
    batch = cached.decision_function(rows, context)
    return {"dataset": dataset, "window": window, "channels": channels, "d_model": dense.config.d_model,
            "ms_per_step": {k: round(v, 4) for k, v in ms.items()},
            "speedup_vs_torch_dense": round(ms["torch_dense"] / ms["cached"], 2),
            "speedup_vs_windowed_runtime": round(ms["windowed"] / ms["cached"], 2),
            "cache_bytes": cached.stream(context).stream.cache_bytes,
            "artifact_bytes": cached.artifact.size_bytes,
            "max_relative_difference": float(np.max(np.abs(check - batch) / np.maximum(np.abs(batch), 1e-12)))}


def best_seconds(fn, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls (one call is already long)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def throughput_and_training(steps: int, repeats: int, folder: Path) -> dict:
    """Whole-series scoring (steps/s) and one training epoch at stride 1 on the SMD shape."""
    from sbts.heads.anomaly import score_series_with

    windowed = exported(paper_model("SMD", "sbt"), folder, "smd-throughput-paper")
    model = paper_model("SMD", "sbt", **STREAMABLE)
    streamable = exported(model, folder, "smd-throughput-streamable")
    window, channels = model.config.max_len, model.config.in_channels
    series = np.random.default_rng(1).standard_normal((steps + window, channels))
    context, rows = series[:window], series[window:]
    seconds = {"windowed_runtime": best_seconds(lambda: windowed.decision_function(rows, context), repeats),
               "shared_runtime": best_seconds(lambda: streamable.decision_function(rows, context), repeats),
               "shared_torch": best_seconds(lambda: score_series_with(series_network(model, torch.device("cpu")),
                                                                      rows.astype(np.float32), window,
                                                                      context.astype(np.float32)), repeats)}
    splits = split_and_scale(series, None, None, window=window, val_fraction=0.0, stride=1)
    task, epoch = AnomalyTask(), {}
    for name, dataset in (("windowed", splits.train_set()), ("shared", splits.train_blocks(128))):
        trainer = Trainer(paper_model("SMD", "sbt", **STREAMABLE).train(), task,
                          TrainConfig(epochs=1, batch_size=128, device="cpu"), verbose=False)
        epoch[name] = best_seconds(lambda: trainer._train_epoch(torch.utils.data.DataLoader(
            dataset, batch_size=None if getattr(dataset, "prebatched", False) else 128, shuffle=True)), 1)
    return {"steps": steps, "scoring_steps_per_second": {k: round(steps / v) for k, v in seconds.items()},
            "scoring_speedup_shared_runtime_vs_windowed": round(seconds["windowed_runtime"]
                                                                / seconds["shared_runtime"], 2),
            "training_windows": len(splits.train_set()),
            "training_seconds_per_epoch": {k: round(v, 2) for k, v in epoch.items()},
            "training_speedup_shared_vs_windowed": round(epoch["windowed"] / epoch["shared"], 2)}


def markdown(rows: list[dict], info: dict, command: str, bulk: dict) -> str:
    lines = [f"Command: `{command}`", f"Machine: {machine_line(info)}, {info['torch_threads']} thread(s).", "",
             "| config | window | eager PyTorch dense (ms/step) | windowed SBT runtime | cached SBT stream | "
             "× vs dense | × vs windowed | cache bytes | artifact bytes | max rel. diff |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ms = r["ms_per_step"]
        lines.append(f"| {r['dataset']} | {r['window']} | {ms['torch_dense']:.3f} | {ms['windowed']:.3f} | "
                     f"{ms['cached']:.3f} | {r['speedup_vs_torch_dense']:.1f} | "
                     f"{r['speedup_vs_windowed_runtime']:.1f} | {r['cache_bytes']:,} | {r['artifact_bytes']:,} | "
                     f"{r['max_relative_difference']:.1e} |")
    rate, epoch = bulk["scoring_steps_per_second"], bulk["training_seconds_per_epoch"]
    lines += ["", f"Whole-series scoring, SMD shape, {bulk['steps']:,} steps (steps/s): windowed runtime "
                  f"{rate['windowed_runtime']:,}, shared pass in the runtime {rate['shared_runtime']:,} "
                  f"({bulk['scoring_speedup_shared_runtime_vs_windowed']:.1f}x), shared pass in torch "
                  f"{rate['shared_torch']:,}.",
              f"One training epoch at stride 1 ({bulk['training_windows']:,} windows, batch 128): window by window "
              f"{epoch['windowed']:.2f} s, shared pass {epoch['shared']:.2f} s "
              f"({bulk['training_speedup_shared_vs_windowed']:.1f}x)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short rounds (under 2 minutes)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--write", action="store_true", help="write the results to docs/benchmarks.md")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    info = machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(dataset, 1.0 if args.quick else 5.0, Path(tmp)) for dataset in DATASETS]
        bulk = throughput_and_training(2_000 if args.quick else 20_000, 1 if args.quick else 3, Path(tmp))
    smd = rows[0]
    summary = {"per_step_speedup_vs_torch_dense": smd["speedup_vs_torch_dense"],
               "per_step_speedup_vs_windowed_runtime": smd["speedup_vs_windowed_runtime"],
               "max_relative_difference": max(r["max_relative_difference"] for r in rows), "configs": rows,
               **bulk, "machine": info}
    command = "python benchmarks/streaming.py " + " ".join(sys.argv[1:])
    if args.write:
        replace_section(ROOT / "docs" / "benchmarks.md", "streaming", markdown(rows, info, command, bulk))
    print(json.dumps(summary, indent=2) if args.json else markdown(rows, info, command, bulk))


if __name__ == "__main__":
    main()
