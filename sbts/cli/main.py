"""The ``sbts`` command: a thin layer over the Python API.

Every user-fixable problem ends with one line ``sbts: error: ...`` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any, Sequence

from sbts.errors import ConfigError, DataError, SBTSError, one_line

EXIT_USAGE = 2
FLAG_OF = {"max_len": "--window", "fractions": "--split-fractions"}  # settings whose flag is not named after them
EXIT_INTERRUPTED = 130


def _add_train_parser(subparsers) -> None:
    train = subparsers.add_parser("train", help="train a model and write a run directory")
    train.add_argument("task", choices=["classification", "anomaly", "forecasting"], help="what to train")
    train.add_argument("--data", help="dataset name (UEA/JapaneseVowels, SMD/machine-1-6, MSL, SMAP/P-1, ETT/ETTm1, "
                                      "exchange_rate) or files: a .ts pair, an anomaly folder or TRAIN,TEST[,LABELS], "
                                      "a series file or TRAIN[,VAL],TEST (csv, txt or npy)")
    train.add_argument("--model", help="registered model: sbt (sparse binary) or dense")
    train.add_argument("--out", required=True, help="run directory to create (or resume)")
    train.add_argument("--config", help="YAML/JSON run configuration (see sbts/configs/paper)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    density = train.add_mutually_exclusive_group()
    density.add_argument("--density", type=float, help="fraction of weights kept, in (0, 1]")
    density.add_argument("--sparsity", type=float, help="fraction of weights pruned (= 1 - density)")
    train.add_argument("--seed", type=int, help="seed of the random weights, split and shuffling")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--patience", type=int, help="early stopping: epochs without validation improvement")
    train.add_argument("--val-fraction", type=float, help="fraction of training cases (anomaly: of the training "
                                                          "series' end) held out for validation")
    train.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    train.add_argument("--d-model", type=int)
    train.add_argument("--n-heads", type=int)
    train.add_argument("--n-layers", type=int)
    train.add_argument("--attention", choices=["full", "step_t", "qkv_mask"])
    train.add_argument("--window", type=int, help="window length in steps (the model's max_len)")
    train.add_argument("--stride", type=int, help="steps between training windows (anomaly, forecasting)")
    anomaly = train.add_argument_group("anomaly detection: thresholds are fitted on validation or training scores")
    anomaly.add_argument("--threshold", choices=["percentile", "pot"],
                         help="how the threshold is fitted (default percentile)")
    anomaly.add_argument("--threshold-scores", choices=["val", "train"], help="which scores it is fitted on")
    anomaly.add_argument("--contamination", type=float,
                         help="percentile: fraction of reference scores above it (default 0.01)")
    anomaly.add_argument("--pot-risk", type=float, help="POT: probability of a normal score exceeding it")
    anomaly.add_argument("--pot-level", type=float, help="POT: quantile above which the tail is modelled")
    forecasting = train.add_argument_group("forecasting: the series is split in time; selection on validation")
    forecasting.add_argument("--split", choices=["auto", "informer", "fraction", "dates"],
                             help="auto (default): informer (12/4/4 months) for ETT, the files' split for TRAIN,VAL,"
                                  "TEST, else fraction")
    forecasting.add_argument("--split-fractions", help="split fraction: train,val,test (default 0.7,0.1,0.2)")
    forecasting.add_argument("--train-end", help="split dates: the first validation date")
    forecasting.add_argument("--val-end", help="split dates: the first test date")
    forecasting.add_argument("--test-end", help="split dates: the first date after the test period")
    forecasting.add_argument("--target", choices=["value", "change"],
                             help="value (the paper) or change from the last observed step (residual to persistence)")
    forecasting.add_argument("--input-norm", choices=["none", "window"],
                             help="none (the paper) or window: each window on its own mean and std")
    train.add_argument("--quiet", action="store_true", help="no per-epoch lines on stderr")


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _overrides(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The model, training and task settings given on the command line."""
    model = _given({"density": args.density, "d_model": args.d_model, "n_heads": args.n_heads,
                    "n_layers": args.n_layers, "attention": args.attention, "max_len": args.window, "seed": args.seed})
    if args.sparsity is not None:
        model["sparsity"] = args.sparsity
    train = _given({"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "patience": args.patience,
                    "val_fraction": args.val_fraction, "stride": args.stride, "device": args.device,
                    "seed": args.seed})
    task = _given({"threshold": args.threshold, "threshold_scores": args.threshold_scores,
                   "contamination": args.contamination, "pot_risk": args.pot_risk, "pot_level": args.pot_level,
                   "split": args.split, "fractions": _fractions(args.split_fractions), "train_end": args.train_end,
                   "val_end": args.val_end, "test_end": args.test_end, "target": args.target,
                   "input_norm": args.input_norm})
    return model, train, task


def _fractions(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(piece) for piece in text.split(",")]
    except ValueError:
        raise ConfigError(f"--split-fractions must be three numbers train,val,test (e.g. 0.7,0.1,0.2); got {text!r}")


def _cmd_train(args: argparse.Namespace) -> int:
    from sbts.config import resolve_density
    from sbts.tasks import get_task
    from sbts.tasks.runs import RESUMABLE_TRAIN_FIELDS, build_run_spec

    task = get_task(args.task)
    model_overrides, train_overrides, task_overrides = _overrides(args)
    if "sparsity" in model_overrides:
        model_overrides["density"] = resolve_density(None, model_overrides.pop("sparsity"))
    elif "density" in model_overrides:
        model_overrides["density"] = resolve_density(model_overrides["density"])
    if args.resume:
        fixed = [flag for flag, value in (("--data", args.data), ("--model", args.model), ("--config", args.config))
                 if value is not None] + [FLAG_OF.get(key, f"--{key.replace('_', '-')}")
                                          for key in [*model_overrides, *task_overrides]]
        fixed += [f"--{key.replace('_', '-')}" for key in train_overrides if key not in RESUMABLE_TRAIN_FIELDS]
        if fixed:
            raise ConfigError(f"{', '.join(sorted(set(fixed)))} cannot change on --resume (the run keeps its "
                              f"config.json); only {', '.join('--' + f for f in RESUMABLE_TRAIN_FIELDS)} can")
        metrics = task.train_run({}, args.out, resume=True, verbose=not args.quiet, train_overrides=train_overrides)
    else:
        spec = build_run_spec(args.task, data=args.data, model_name=args.model, config_file=args.config,
                              model_overrides=model_overrides, train_overrides=train_overrides,
                              task_overrides=task_overrides)
        metrics = task.train_run(spec, args.out, verbose=not args.quiet)
    if metrics.get("interrupted"):
        print(f"sbts: interrupted after {metrics['epochs']} finished epoch(s); continue with: sbts train {args.task} "
              f"--out {args.out} --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(json.dumps(_headline(metrics, ("task", "model", "dataset", "density", "seed", "epochs", "best_epoch",
                                         "train_seconds", "val", "test", "threshold", "compared_with_baselines")),
                     indent=2))
    return 0


def _headline(metrics: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """What the terminal shows of metrics.json: the chosen keys, without per-variable breakdowns."""
    shown = {k: metrics[k] for k in keys if k in metrics}
    for key in ("val", "test"):
        if isinstance(shown.get(key), dict):
            shown[key] = {k: v for k, v in shown[key].items() if k != "per_variable"}
    return shown


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from sbts.tasks import get_task
    from sbts.training.checkpoint import read_json

    config = read_json(f"{args.run_dir}/config.json", "run config")
    task = get_task(str(config.get("task")) if isinstance(config, dict) else "")
    metrics = task.evaluate_run(args.run_dir, checkpoint=args.checkpoint, device=args.device)
    print(json.dumps(_headline(metrics, ("task", "model", "dataset", "density", "checkpoint", "epoch", "val", "test",
                                         "threshold", "compared_with_baselines")), indent=2))
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from sbts.compression import render_table, summarize_config, summarize_run

    if (args.run_dir is None) == (args.config is None):
        raise ConfigError("summary needs a run directory or --config FILE (one of them)")
    if args.run_dir is not None:
        if args.density is not None or args.qkv_density is not None:
            raise ConfigError("--density and --qkv-density apply to --config; a run keeps the ones it was trained with")
        report = summarize_run(args.run_dir, accounting=args.accounting, checkpoint=args.checkpoint)
    else:
        report = summarize_config(args.config, accounting=args.accounting, density=args.density,
                                  qkv_density=args.qkv_density)
    print(json.dumps(report, indent=2) if args.json else render_table(report))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    if args.format == "onnx":
        if args.float16:
            raise ConfigError("--float16 applies to the .sbts format only")
        from sbts.export.onnx import export_onnx_run

        path = export_onnx_run(args.run_dir, args.output, checkpoint=args.checkpoint)
        print(json.dumps({"path": str(path), "format": "onnx", "size_bytes": path.stat().st_size}, indent=2))
        return 0
    from sbts.export.artifact import export_run

    result = export_run(args.run_dir, args.output, checkpoint=args.checkpoint,
                        float_dtype="float16" if args.float16 else "float32")
    print(json.dumps({"path": str(result.path), "format": "sbts", "size_bytes": result.size_bytes,
                      "float_dtype": result.float_dtype,
                      "probe_max_relative_difference": result.probe_max_relative_difference}, indent=2))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    # Only the torch-free runtime and the data readers: predicting must not import torch.
    from sbts.runtime import AnomalyRuntime, ForecastRuntime, load
    from sbts.runtime.inputs import read_cases, write_anomaly_scores, write_forecasts, write_predictions

    model = load(args.model)
    if isinstance(model, (AnomalyRuntime, ForecastRuntime)):
        if args.proba:
            raise ConfigError("--proba applies to classifiers; detectors and forecasters write one row per step")
        context = _series_input(args.context, model) if args.context else None
        write = write_anomaly_scores if isinstance(model, AnomalyRuntime) else write_forecasts
        write(model, _series_input(args.input, model), args.input, args.output, context, args.context)
        return 0
    if args.context:
        raise ConfigError("--context applies to anomaly detectors and forecasters")
    cases, labels = read_cases(args.input)
    write_predictions(model, cases, labels, args.input, args.output, proba=args.proba)
    return 0


def _series_input(path: str, model) -> Any:
    """A series file for a detector or forecaster (a leading date column is skipped); named columns must be the
    forecaster's variables, in its order."""
    from sbts.data.tables import read_table

    table = read_table(path, date_column="auto")
    expected = getattr(model, "columns", None)
    if table.columns is not None and expected is not None and table.columns != expected:
        raise DataError(f"{path}: columns {','.join(table.columns)} are not the model's variables "
                        f"{','.join(expected)} (in that order)")
    return table.values


def _cmd_plot(args: argparse.Namespace) -> int:
    from sbts.tasks.runs import read_run_config

    if read_run_config(args.run_dir).task == "forecasting":
        from sbts.report.forecast_plot import plot_forecasts

        if args.linear:
            raise ConfigError("--linear applies to anomaly score plots")
        variables = args.variables.split(",") if args.variables else None
        path = plot_forecasts(args.run_dir, args.output, variables=variables, start=args.start, end=args.end)
    else:
        from sbts.report.anomaly_plot import plot_scores

        if args.variables:
            raise ConfigError("--variables applies to forecasting runs")
        path = plot_scores(args.run_dir, args.output, start=args.start, end=args.end, log_scale=not args.linear)
    print(json.dumps({"path": str(path)}))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from sbts.models import list_models

    print("\n".join(list_models()))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the full usage is behind --help)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"sbts: error: {one_line(message)} (see {self.prog} --help)\n")


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"sbts: warning: {one_line(message)}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sbts", description="Sparse Binary Transformers for multivariate time series")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train_parser(subparsers)
    evaluate = subparsers.add_parser("evaluate", help="re-evaluate a saved run on its validation and test data")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--checkpoint", choices=["best", "last"], default="best")
    evaluate.add_argument("--device", default="auto")
    subparsers.add_parser("models", help="list the registered models")

    summary = subparsers.add_parser("summary", help="per-layer storage and FLOPs of a dense model and its SBT")
    summary.add_argument("run_dir", nargs="?", help="a run directory (or use --config)")
    summary.add_argument("--config", help="a YAML/JSON configuration with in_channels, out_dim and max_len")
    summary.add_argument("--accounting", choices=["paper", "honest"], default="paper",
                         help="paper: the official code's counting rules; honest: what an sbts deployment stores "
                              "and executes")
    summary.add_argument("--density", type=float, help="the SBT's kept fraction of weights (with --config)")
    summary.add_argument("--qkv-density", type=float,
                         help="the SBT's kept fraction of Q/K/V activations (with --config; the paper's other-density "
                              "classification ratios set it equal to --density)")
    summary.add_argument("--checkpoint", choices=["best", "last"], default="best")
    summary.add_argument("--json", action="store_true", help="machine-readable output")

    export = subparsers.add_parser("export", help="write a trained run as a compact .sbts artifact or ONNX")
    export.add_argument("run_dir")
    export.add_argument("-o", "--output", required=True, help="file to write (e.g. model.sbts or model.onnx)")
    export.add_argument("--format", choices=["sbts", "onnx"], default="sbts")
    export.add_argument("--float16", action="store_true",
                        help="store the float tensors (norms, dense weights, tables) as float16")
    export.add_argument("--checkpoint", choices=["best", "last"], default="best")

    predict = subparsers.add_parser("predict", help="run an exported .sbts model (numpy only, no torch): class "
                                                    "predictions, anomaly scores per step, or one-step forecasts")
    predict.add_argument("model", help="the .sbts artifact")
    predict.add_argument("--input", required=True,
                         help="classifier: .ts file or .npy array (cases, channels, length); detector or "
                              "forecaster: one series (csv, txt or npy: steps x channels)")
    predict.add_argument("--context", help="detector or forecaster: the series' preceding steps (same format), for "
                                           "its first window - 1 steps")
    predict.add_argument("-o", "--output", help="CSV file to write (default: standard output)")
    predict.add_argument("--proba", action="store_true", help="add one probability column per class")

    plot = subparsers.add_parser("plot", help="an anomaly run's test scores against its threshold, anomalies shaded, "
                                              "or a forecasting run's forecasts against the truth (needs matplotlib: "
                                              "sbts[plot])")
    plot.add_argument("run_dir")
    plot.add_argument("-o", "--output", required=True, help="image file to write (.png, .pdf or .svg)")
    plot.add_argument("--start", type=int, default=0, help="first test step to show")
    plot.add_argument("--end", type=int, help="one past the last test step to show (default: all)")
    plot.add_argument("--linear", action="store_true", help="anomaly: linear score axis (default: logarithmic)")
    plot.add_argument("--variables", help="forecasting: comma-separated variables to draw (default: the first two)")
    return parser


COMMANDS = {"train": _cmd_train, "evaluate": _cmd_evaluate, "models": _cmd_models, "summary": _cmd_summary,
            "export": _cmd_export, "predict": _cmd_predict, "plot": _cmd_plot}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():  # restores the process's warning display afterwards
            warnings.showwarning = _one_line_warning
            return COMMANDS[args.command](args)
    except SBTSError as exc:
        print(f"sbts: error: {one_line(exc) or exc.__class__.__name__}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("sbts: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
