"""The ``sbts`` command: a thin layer over the Python API.

``sbts train <task>`` is generated from each registered task's option table (``sbts.tasks.options``):
one flag per option, with its help and default, and nothing of another task's. Every user-fixable
problem ends with one line ``sbts: error: ...`` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

from sbts import __version__
from sbts.data.limits import DEFAULT_MAX_INPUT_BYTES, MAX_INPUT_BYTES_ENV
from sbts.data.locations import DATA_DIR_ENV
from sbts.errors import ConfigError, SBTSError, one_line
from sbts.registry import entry, plot_function, task_class, task_names
from sbts.runtime.artifact import REQUIRE_SIGNATURE_ENV, SIGNING_KEY_ENV

EXIT_USAGE = 2
CHECKPOINT_HELP = "the checkpoint to read: best (the epoch chosen on validation data) or last (the latest epoch)"
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a Unix tool killed by a closed pipe
RUN_FLAGS = ("data", "model", "config")  # fixed once a run exists: refused on --resume
PLOT_FLAGS = {"linear": "anomaly: linear score axis (default: logarithmic)",
              "variables": "forecasting: comma-separated variables to draw (default: the first two)"}
ENVIRONMENT_HELP = f"""environment variables:
  {DATA_DIR_ENV}           where named datasets are looked up (--data-dir sets it for one command)
  {MAX_INPUT_BYTES_ENV}    the largest series file read, in bytes (default {DEFAULT_MAX_INPUT_BYTES:,})
  {SIGNING_KEY_ENV}        exports sign .sbts files with this key (HMAC-SHA256); loads verify signed files
  {REQUIRE_SIGNATURE_ENV}  1: refuse .sbts files that the key does not verify"""
# The training stack (the ``train`` extra), by import name: a command that reaches it without it installed is
# told which extra to install. The deploy-only install (predict, C export from a .sbts file) never imports it.
TRAINING_STACK = {"torch": "PyTorch", "sklearn": "scikit-learn", "scipy": "SciPy"}
HEADLINE = ("task", "model", "dataset", "density", "seed", "checkpoint", "epoch", "epochs", "best_epoch",
            "train_seconds", "val", "test", "threshold", "compared_with_baselines")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Help texts end with their default where an option has one and does not say it already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the full usage is behind --help), and help states defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"sbts: error: {one_line(message)} (see {self.prog} --help)\n")


def _float_list(option, text: str) -> list[float]:
    try:
        return [float(piece) for piece in text.split(",")]
    except ValueError:
        raise ConfigError(f"{option.flag} must be comma-separated numbers (e.g. 0.7,0.1,0.2); got {text!r}") from None


def _add_option(parser: argparse.ArgumentParser, option, aliases: tuple[str, ...] = ()) -> None:
    help_text = f"{option.help} (default: {option.default_text})".replace("%", "%%")  # argparse formats help with %
    kwargs: dict[str, Any] = {"dest": option.name, "default": None, "help": help_text}
    if option.type is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif option.type is list:  # parsed in train_spec, so that a bad list is a one-line error naming the flag
        kwargs["metavar"] = "A,B,C"
    else:
        kwargs["type"] = option.type
        if option.choices:
            kwargs["choices"] = option.choices
    parser.add_argument(option.flag, *aliases, **kwargs)


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help=f"where named datasets (UEA/..., SMD/..., ETTh1) are looked up (default: "
                                           f"${DATA_DIR_ENV})")


def _use_data_dir(args: argparse.Namespace) -> None:
    """``--data-dir`` becomes the process's ``$SBTS_DATA_DIR``: the loaders' one way of finding the data."""
    data_dir = getattr(args, "data_dir", None)
    if data_dir is None:
        return
    if not Path(data_dir).is_dir():
        raise ConfigError(f"--data-dir {data_dir}: no such directory")
    os.environ[DATA_DIR_ENV] = str(Path(data_dir).resolve())


def _add_train_parser(subparsers, with_tasks: bool) -> None:
    train = subparsers.add_parser("train", help="train a model and write a run directory")
    if not with_tasks:  # other commands do not import the tasks (and torch)
        return
    tasks = train.add_subparsers(dest="task", required=True, parser_class=_Parser, metavar="TASK")
    for name in task_names():
        task = task_class(name)
        parser = tasks.add_parser(name, help=entry(name).description,
                                  description=f"Train a model for the task {name}. Options left out take the paper "
                                              "preset of the dataset (sbts/configs/paper) when there is one, else the "
                                              "defaults shown; --config files and flags override them.")
        parser.add_argument("--data", help=task.data_help)
        _add_data_dir(parser)
        parser.add_argument("--out", required=True, help="run directory to create (or resume)")
        parser.add_argument("--config", help="YAML/JSON run configuration (see sbts/configs/paper)")
        parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint "
                                                                   "(from epoch 0 if it stopped before the first)")
        parser.add_argument("--force", action="store_true", help="replace the run in --out (once the new run's "
                                                                  "inputs have been read)")
        parser.add_argument("--quiet", action="store_true", help="no per-epoch lines on stderr")
        parser.add_argument("--sparsity", type=float, help="fraction of weights pruned (= 1 - density; instead of "
                                                           "--density)")
        for option in task.options():
            _add_option(parser, option, task.cli_aliases.get(option.name, ()))


def _refuse_foreign_flags(args: argparse.Namespace, extra: list[str]) -> None:
    """A flag left over from ``sbts train TASK``: name the tasks that take it."""
    flag = next((item.split("=")[0] for item in extra if item.startswith("--")), extra[0])
    if getattr(args, "command", None) == "train" and getattr(args, "task", None):
        owners = [name for name in task_names() if flag in {o.flag for o in task_class(name).options()}]
        where = f" (an option of sbts train {' and '.join(owners)})" if owners else ""
        raise ConfigError(f"{flag} is not an option of sbts train {args.task}{where}; see sbts train {args.task} "
                          "--help")
    raise ConfigError(f"unrecognized arguments: {' '.join(extra)} (see sbts --help)")


def _saved_run(run_dir: str) -> dict[str, Any] | None:
    """The run's saved config.json as a mapping, or None where there is none to compare with."""
    from sbts.tasks.runs import read_run_config

    try:
        return read_run_config(run_dir).to_dict()
    except SBTSError:
        return None


def _saved_value(saved: dict[str, Any], section: str, key: str | None = None) -> Any:
    """A run flag's (``data``, ``model``, ``config``) or an option's value in a saved run config; ``--config``
    never compares equal (a file is not a value)."""
    if key is None:
        return {"data": saved["data"], "model": saved["model_name"]}.get(section, object())
    if section == "seed":  # one option for both seeds
        return saved["train"]["seed"]
    value = saved.get(section)  # a section of the config; the run's own keys (model_name) sit at the top
    return value.get(key, object()) if isinstance(value, dict) else saved.get(key, object())


def train_spec(args: argparse.Namespace):
    """The task and the run specification that ``sbts train`` builds from its arguments (nothing trained)."""
    from sbts.tasks import get_task
    from sbts.config import resolve_density
    from sbts.tasks.options import TRAIN_SECTION, spec_from_options
    from sbts.tasks.runs import RESUMABLE_TRAIN_FIELDS, build_run_spec

    task = get_task(args.task)
    given = [o for o in task.options() if getattr(args, o.name) is not None]
    spec = spec_from_options(type(task), {o.name: _float_list(o, getattr(args, o.name)) if o.type is list
                                          else getattr(args, o.name) for o in given})
    if args.sparsity is not None:
        if args.density is not None:
            raise ConfigError("give --density or --sparsity, not both (sparsity = 1 - density)")
        spec["model"]["density"] = resolve_density(None, args.sparsity)
    if args.resume:
        saved = _saved_run(args.out)
        if saved is not None and args.data is not None:
            args.data = task.canonical_data(args.data)  # as the run recorded it
        fixed = [f"--{name}" for name in RUN_FLAGS if getattr(args, name) is not None
                 and (saved is None or _saved_value(saved, name) != getattr(args, name))]
        fixed += [o.flag for o in given if (o.section != TRAIN_SECTION or o.key not in RESUMABLE_TRAIN_FIELDS)
                  and (saved is None or _saved_value(saved, o.section, o.key) != getattr(args, o.name))]
        fixed += ["--sparsity"] if args.sparsity is not None else []
        if fixed:
            raise ConfigError(f"{', '.join(sorted(set(fixed)))} cannot change on --resume (the run keeps its "
                              f"config.json); only {', '.join('--' + f for f in RESUMABLE_TRAIN_FIELDS)} can")
        return task, spec
    return task, build_run_spec(task.name, data=args.data, model_name=spec.get("model_name"), config_file=args.config,
                                model_overrides=spec["model"], train_overrides=spec["train"],
                                task_overrides=spec["task_options"])


def _cmd_train(args: argparse.Namespace) -> int:
    task, spec = train_spec(args)
    if args.resume and args.force:
        raise ConfigError("give --resume (continue the run) or --force (replace it), not both")
    if args.resume:
        metrics = task.train_run({}, args.out, resume=True, verbose=not args.quiet, train_overrides=spec["train"])
    else:
        metrics = task.train_run(spec, args.out, verbose=not args.quiet, force=args.force)
    if metrics.get("interrupted"):
        print(f"sbts: interrupted after {metrics['epochs']} finished epoch(s); continue with: sbts train {args.task} "
              f"--out {args.out} --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone prints the result
        print(json.dumps(_headline(metrics), indent=2))
    return 0


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """What the terminal shows of metrics.json: the chosen keys, without per-variable breakdowns."""
    shown = {k: metrics[k] for k in HEADLINE if k in metrics}
    for key in ("val", "test"):
        if isinstance(shown.get(key), dict):
            shown[key] = {k: v for k, v in shown[key].items() if k != "per_variable"}
    return shown


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from sbts.tasks import task_of_run

    metrics = task_of_run(args.run_dir).evaluate_run(args.run_dir, checkpoint=args.checkpoint, device=args.device)
    print(json.dumps(_headline({k: v for k, v in metrics.items() if k not in ("epochs", "train_seconds")}), indent=2))
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from sbts.compression import render_table, summarize_config, summarize_run

    if (args.run_dir is None) == (args.config is None):
        raise ConfigError("summary needs a run directory or --config FILE (one of them)")
    if args.run_dir is not None:
        if args.density is not None or args.qkv_density is not None:
            raise ConfigError("--density and --qkv-density apply to --config; a run keeps the ones it was trained with")
        from sbts.tasks import load_trained_run

        report = summarize_run(load_trained_run(args.run_dir, args.checkpoint), f"run {args.run_dir} "
                               f"({args.checkpoint} checkpoint)", accounting=args.accounting)
    else:
        report = summarize_config(args.config, accounting=args.accounting, density=args.density,
                                  qkv_density=args.qkv_density)
    print(json.dumps(report, indent=2) if args.json else render_table(report))
    return 0


def _check_output(output: str | None, inputs: Sequence[str | None], force: bool, is_directory: bool = False) -> None:
    """An output goes where its folder exists, never onto an input, and onto an existing file only with
    ``--force`` (a directory output's own rules, such as non-empty, are its writer's)."""
    if output is None or output == "-":
        return
    path = Path(output)
    if not path.resolve().parent.is_dir():
        raise ConfigError(f"{output}: its folder {path.parent} does not exist (sbts does not create it)")
    for given in inputs:
        if given not in (None, "-") and path.exists() and Path(given).exists() and path.samefile(given):
            raise ConfigError(f"{output}: is an input of this command ({given}); choose another output")
    if not is_directory and path.is_dir():
        raise ConfigError(f"{output}: is a directory; -o takes a file")
    if not is_directory and path.exists() and not force:
        raise ConfigError(f"{output}: exists; pass --force to replace it")


def _cmd_export(args: argparse.Namespace) -> int:
    if args.c_weights and args.format != "c":
        raise ConfigError("--c-weights applies to --format c only")
    if args.no_padding_mask and args.format != "onnx":
        raise ConfigError("--no-padding-mask applies to --format onnx only")
    _check_output(args.output, [args.run_dir], args.force, is_directory=args.format == "c")
    if args.format == "c":
        return _export_c(args)  # before the tasks are imported: from a .sbts file it needs no torch
    from sbts.tasks import task_of_run

    task = task_of_run(args.run_dir)
    if args.format == "onnx":
        if args.float16:
            raise ConfigError("--float16 applies to the .sbts format only")
        path = task.export_onnx_run(args.run_dir, args.output, checkpoint=args.checkpoint,
                                    padding_mask_input=not args.no_padding_mask)
        print(json.dumps({"path": str(path), "format": "onnx", "size_bytes": path.stat().st_size}, indent=2))
        return 0
    result = task.export_run(args.run_dir, args.output, checkpoint=args.checkpoint,
                             float_dtype="float16" if args.float16 else "float32")
    print(json.dumps({"path": str(result.path), "format": "sbts", "size_bytes": result.size_bytes,
                      "float_dtype": result.float_dtype,
                      "probe_max_relative_difference": result.probe_max_relative_difference}, indent=2))
    return 0


def _export_c(args: argparse.Namespace) -> int:
    """``--format c``: from a run directory, or from an exported ``.sbts`` file (torch-free then)."""
    from sbts.export.c_build import write_c_export
    from sbts.export.c_source import DEFAULT_WEIGHT_FORM, WEIGHT_FORMS

    if args.float16:
        raise ConfigError("--float16 applies to the .sbts format only (the C export keeps float32)")
    form = args.c_weights or DEFAULT_WEIGHT_FORM
    if Path(args.run_dir).is_file():
        from sbts.runtime.artifact import read_artifact

        artifact = read_artifact(args.run_dir)
        result = write_c_export(artifact, args.output, weight_form=form, force=args.force)
    else:
        from sbts.tasks import task_of_run

        result = task_of_run(args.run_dir).export_c_run(args.run_dir, args.output, checkpoint=args.checkpoint,
                                                        weight_form=form, force=args.force)
    report = {"directory": str(result.directory), "format": "c", "files": ["sbts.h", "sbts.c"],
              "weights": result.weight_form, "weights_means": WEIGHT_FORMS[result.weight_form], **result.sizes,
              "footprint": result.footprint if result.footprint is not None else "no C compiler and size found here",
              "footprint_measured_with": "size on the host C compiler's -Os object (flash: text + data; RAM: data + "
                                         "bss, the arena included)"}
    print(json.dumps(report, indent=2))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    # Only the torch-free runtime and the data readers: predicting must not import torch.
    from sbts.runtime import load

    _check_output(args.output, [args.model, args.input, args.context], args.force)
    model = load(args.model)
    if args.horizon is not None and not hasattr(model, "horizon"):
        raise ConfigError(f"{args.model}: --horizon applies to forecasters, not to a {model.task} model")
    ahead = {} if args.horizon is None else {"horizon": args.horizon}
    if args.stream:
        if not hasattr(model, "stream_file"):
            raise ConfigError(f"{args.model}: --stream applies to anomaly detectors and forecasters, not {model.task}")
        if args.proba:
            raise ConfigError("--proba applies to classifiers")
        model.stream_file(args.input, args.output, context=args.context, on_bad_row=args.on_bad_row,
                          quiet=args.quiet, **ahead)
        return 0
    summary = model.predict_file(args.input, args.output, context=args.context, proba=args.proba, **ahead)
    if summary and not args.quiet:
        print(f"sbts: {summary}", file=sys.stderr)
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from sbts.tasks.runs import read_run_config

    task = read_run_config(args.run_dir).task
    plot = plot_function(task)
    extras = {name: getattr(args, name) for name in PLOT_FLAGS if getattr(args, name) not in (None, False)}
    foreign = sorted(set(extras) - set(inspect.signature(plot).parameters))
    if foreign:
        raise ConfigError(f"--{foreign[0]} does not apply to {task} runs")
    if "variables" in extras:
        extras["variables"] = extras["variables"].split(",")
    path = plot(args.run_dir, args.output, start=args.start, end=args.end, **extras)
    print(json.dumps({"path": str(path)}))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from sbts.models import list_models

    print(json.dumps(list_models()) if args.json else "\n".join(list_models()))
    return 0


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"sbts: warning: {one_line(message)}", file=sys.stderr)


def build_parser(with_tasks: bool = True) -> argparse.ArgumentParser:
    """The command's parser; ``with_tasks=False`` leaves out the per-task train options (which import torch)."""
    parser = _Parser(prog="sbts", description="Sparse Binary Transformers for multivariate time series",
                     epilog=ENVIRONMENT_HELP)
    parser.add_argument("--version", action="version", version=f"sbts {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train_parser(subparsers, with_tasks)
    evaluate = subparsers.add_parser("evaluate", help="re-evaluate a saved run on its validation and test data")
    evaluate.add_argument("run_dir")
    _add_data_dir(evaluate)
    evaluate.add_argument("--checkpoint", choices=["best", "last"], default="best", help=CHECKPOINT_HELP)
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    models = subparsers.add_parser("models", help="list the registered models")
    models.add_argument("--json", action="store_true", help="a JSON list instead of one name per line")

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
    summary.add_argument("--checkpoint", choices=["best", "last"], default="best", help=CHECKPOINT_HELP)
    summary.add_argument("--json", action="store_true", help="machine-readable output")

    export = subparsers.add_parser("export", help="write a trained run as a compact .sbts artifact, ONNX, or C99 "
                                                  "source for a microcontroller")
    export.add_argument("run_dir", help="the run directory (--format c also takes an exported .sbts file)")
    export.add_argument("-o", "--output", required=True,
                        help="file to write (e.g. model.sbts or model.onnx); --format c: the directory for sbts.h "
                             "and sbts.c")
    export.add_argument("--format", choices=["sbts", "onnx", "c"], default="sbts",
                        help="sbts: the compact artifact (torch-free runtime); onnx: the per-step graph; c: C99 source")
    from sbts.export.c_source import DEFAULT_WEIGHT_FORM, WEIGHT_FORMS

    export.add_argument("--c-weights", choices=list(WEIGHT_FORMS),
                        help=f"--format c (default {DEFAULT_WEIGHT_FORM}): " + "; ".join(
                            f"{name}: {means}" for name, means in WEIGHT_FORMS.items()))
    export.add_argument("--force", action="store_true", help="replace an existing output file (--format c: write "
                                                             "into a non-empty directory)")
    export.add_argument("--float16", action="store_true",
                        help="store the float tensors (norms, dense weights, tables) as float16")
    export.add_argument("--no-padding-mask", action="store_true",
                        help="--format onnx: a graph whose only input is x, for batches of unpadded series")
    export.add_argument("--checkpoint", choices=["best", "last"], default="best", help=CHECKPOINT_HELP)

    predict = subparsers.add_parser("predict", help="run an exported .sbts model (numpy only, no torch): class "
                                                    "predictions, anomaly scores per step, or forecasts of the next "
                                                    "steps")
    predict.add_argument("model", help="the .sbts artifact")
    predict.add_argument("--input", required=True,
                         help="classifier: .ts file or .npy array (cases, channels, length); detector or "
                              "forecaster: one series (csv, txt or npy: steps x channels; a csv header names them)")
    predict.add_argument("--context", help="detector or forecaster: the series' preceding steps (same format), for "
                                           "its first window - 1 steps")
    predict.add_argument("-o", "--output", help="CSV file to write (default: standard output)")
    predict.add_argument("--force", action="store_true", help="replace an existing -o file (never an input)")
    predict.add_argument("--proba", action="store_true", help="classifier: add one probability column per class")
    predict.add_argument("--stream", action="store_true",
                         help="detector or forecaster: read rows as they arrive (--input - for standard input) and "
                              "write one line per row at once: its score, or the forecasts of the next steps")
    predict.add_argument("--on-bad-row", choices=["fail", "skip"], default="fail",
                         help="--stream: a malformed row ends the stream (fail) or is reported and skipped")
    predict.add_argument("--horizon", type=int, metavar="K",
                         help="forecaster: write the forecasts of steps 1 .. K ahead (default: every step the model "
                              "forecasts)")
    predict.add_argument("--quiet", action="store_true",
                         help="no summary or note on stderr (the accuracy on labelled cases, the steps above the "
                              "threshold, a window recomputed per row); warnings and errors still")

    plot = subparsers.add_parser("plot", help="an anomaly run's test scores against its threshold, anomalies shaded, "
                                              "or a forecasting run's forecasts against the truth (needs matplotlib: "
                                              "sbts[plot])")
    plot.add_argument("run_dir")
    plot.add_argument("-o", "--output", required=True, help="image file to write (.png, .pdf or .svg)")
    plot.add_argument("--start", type=int,
                      help="first test step to show (default: forecasting: the last 336 steps before --end, or 3 "
                           "horizons when more; anomaly: 0)")
    plot.add_argument("--end", type=int,
                      help="one past the last test step to show (default: the end of the test period)")
    plot.add_argument("--linear", action="store_true", help=PLOT_FLAGS["linear"])
    plot.add_argument("--variables", help=PLOT_FLAGS["variables"])
    _add_sweep_parsers(subparsers)
    return parser


def _add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default: 1)")
    parser.add_argument("--threads", type=int,
                        help="torch threads per worker (default: the cores shared out, so workers x threads <= cores)")
    parser.add_argument("--storage", help="Optuna storage URL: sqlite:///FILE (default: study.db in --out), "
                                          "postgresql://USER:PASSWORD@HOST/DB (workers on many machines), or "
                                          "journal:FILE (Optuna's journal file)")
    parser.add_argument("--retry-running", action="store_true",
                        help="queue the study's running trials again, their workers taken as dead (for storages "
                             "without a heartbeat, such as journal:; only when no worker is running)")


def _add_sweep_parsers(subparsers) -> None:
    sweep = subparsers.add_parser("sweep", help="run a grid or a search of runs as an Optuna study (needs "
                                                "sbts[sweep]); every trial an ordinary run directory")
    sweep.add_argument("spec", help="the sweep spec (YAML or JSON: task, data, fixed, grid or search)")
    sweep.add_argument("--out", required=True, help="the sweep's directory: its trials' runs, sweep.json and the "
                                                    "default SQLite study")
    _add_sweep_arguments(sweep)
    _add_data_dir(sweep)
    reproduce = subparsers.add_parser("reproduce", help="run a sweep shipped with sbts (the paper's tables, the "
                                                        "benchmarks) and write its report")
    reproduce.add_argument("name", nargs="?", help="the shipped sweep (see --list)")
    reproduce.add_argument("--quick", action="store_true", help="its quick variant (minutes on 2 cores)")
    reproduce.add_argument("--list", action="store_true", help="list the shipped sweeps")
    reproduce.add_argument("--json", action="store_true", help="--list as JSON (name -> description)")
    reproduce.add_argument("--out", help="the sweep's directory (default: sweeps/NAME[-quick])")
    _add_sweep_arguments(reproduce)
    _add_data_dir(reproduce)
    report = subparsers.add_parser("report", help="a sweep's results page: Markdown tables, JSON and figures")
    report.add_argument("sweep_dir", nargs="?", help="the sweep's directory (its sweep.json names the study)")
    report.add_argument("-o", "--output", help="the Markdown file (default: SWEEP_DIR/report.md); the JSON and the "
                                               "figures go beside it")
    report.add_argument("--storage", help="the study's storage URL (instead of, or overriding, SWEEP_DIR's)")
    report.add_argument("--study", help="the study's name (with --storage and no SWEEP_DIR)")


def _sweep(spec, out: str, args: argparse.Namespace) -> dict[str, Any]:
    from sbts.sweep import run_sweep

    return run_sweep(spec, out, storage_url=args.storage, workers=args.workers, threads=args.threads,
                     take_over_running=args.retry_running)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from sbts.sweep import read_spec

    print(json.dumps(_sweep(read_spec(args.spec), args.out, args), indent=2))
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from sbts.report.sweep_report import write_report
    from sbts.sweep import named_spec_path, named_sweeps, read_spec

    if args.list:
        sweeps = named_sweeps()
        print(json.dumps(sweeps, indent=2) if args.json else "\n".join(f"{n}: {d}" for n, d in sweeps.items()))
        return 0
    if args.name is None:
        raise ConfigError("reproduce needs the name of a shipped sweep (see sbts reproduce --list)")
    spec = read_spec(named_spec_path(args.name, quick=args.quick))
    out = args.out or str(Path("sweeps") / spec.name)
    summary = _sweep(spec, out, args)
    summary["report"] = str(write_report(out, storage_url=args.storage).markdown)
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from sbts.report.sweep_report import write_report

    if args.sweep_dir is None and (args.storage is None or args.study is None):
        raise ConfigError("report needs a sweep directory, or --storage URL and --study NAME")
    written = write_report(args.sweep_dir, output=args.output, storage_url=args.storage, study_name=args.study)
    print(json.dumps({"markdown": str(written.markdown), "json": str(written.json),
                      "figures": [str(path) for path in written.figures], "runs": written.runs}, indent=2))
    return 0


COMMANDS = {"train": _cmd_train, "evaluate": _cmd_evaluate, "models": _cmd_models, "summary": _cmd_summary,
            "export": _cmd_export, "predict": _cmd_predict, "plot": _cmd_plot, "sweep": _cmd_sweep,
            "reproduce": _cmd_reproduce, "report": _cmd_report}


def _first_command(argv: Sequence[str]) -> str | None:
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            parser = build_parser(with_tasks=_first_command(argv) == "train")
            args, extra = parser.parse_known_args(argv)
            with warnings.catch_warnings():  # restores the process's warning display afterwards
                warnings.showwarning = _one_line_warning
                if extra:
                    _refuse_foreign_flags(args, extra)
                _use_data_dir(args)
                return COMMANDS[args.command](args)
        except SBTSError as exc:
            print(f"sbts: error: {one_line(exc) or exc.__class__.__name__}", file=sys.stderr)
            return EXIT_USAGE
        except ModuleNotFoundError as exc:
            missing = (exc.name or "").partition(".")[0]
            if missing not in TRAINING_STACK:
                raise
            print(f"sbts: error: sbts {_first_command(argv)} needs {TRAINING_STACK[missing]}: "
                  "pip install 'sbts[train]'", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print("sbts: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of our output went away (`sbts ... | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not raise again
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
