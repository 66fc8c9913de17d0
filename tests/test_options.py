"""One place for defaults: each task's option table is what ``sbts train <task>``, its estimator, the presets and
the README derive from; the CLI and the estimator resolve the same inputs to the same configuration."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sbts import __version__
from sbts.cli.main import build_parser, main, train_spec
from sbts.data.anomaly import AnomalyData
from sbts.data.forecasting import ForecastData
from sbts.errors import ConfigError
from sbts.registry import estimator_class, task_class, task_names
from sbts.tasks.base import DataSource
from sbts.tasks.classification import ClassificationSource
from sbts.tasks.options import FILE_OPTIONS, check_preset, options_markdown
from sbts.tasks.runs import build_run_spec

ROOT = Path(__file__).resolve().parents[1]
PAPER_TASKS = ("classification", "anomaly", "forecasting")
# The same settings, once as flags and once as estimator parameters.
GIVEN = {
    "classification": (["--d-model", "16", "--epochs", "3", "--density", "0.25", "--val-fraction", "0.2",
                        "--seed", "3", "--norm", "none", "--no-attention-bias"],
                       {"d_model": 16, "epochs": 3, "density": 0.25, "val_fraction": 0.2, "random_state": 3,
                        "norm": "none", "attention_bias": False}),
    "anomaly": (["--window", "12", "--model", "dense", "--threshold", "pot", "--pot-level", "0.9", "--stride", "2",
                 "--no-lr-decay-on-plateau"],
                {"window": 12, "model": "dense", "threshold": "pot", "pot_level": 0.9, "stride": 2,
                 "lr_decay_on_plateau": False}),
    "forecasting": (["--window", "16", "--target", "change", "--input-norm", "window", "--split-fractions",
                     "0.6,0.2,0.2", "--qkv-density", "0.25", "--d-ff", "64"],
                    {"window": 16, "target": "change", "input_norm": "window", "split_fractions": [0.6, 0.2, 0.2],
                     "qkv_density": 0.25, "d_ff": 64}),
}


def source_for(task: str) -> DataSource:
    """A small in-memory dataset of each task (the same one for the CLI path and the estimator)."""
    rng = np.random.default_rng(0)
    if task == "classification":
        series = [rng.standard_normal((3, 20)) for _ in range(30)]
        return DataSource("arrays", ClassificationSource(series, [f"c{i % 3}" for i in range(30)], ["c0", "c1", "c2"]))
    values = rng.standard_normal((400, 3))
    if task == "anomaly":
        return DataSource("arrays", AnomalyData("X", values, None, None, {}))
    return DataSource("arrays", ForecastData("y", values, ["a", "b", "c"], None, {}))


def cli_config(task: str, flags: list[str], source: DataSource):
    args = build_parser().parse_args(["train", task, "--data", "my_series", "--out", "run", *flags])
    task_object, spec = train_spec(args)
    return task_object.run_config(spec, source)


@pytest.mark.parametrize("task", PAPER_TASKS)
@pytest.mark.parametrize("given", [False, True], ids=["defaults", "given"])
def test_cli_and_estimator_resolve_the_same_configuration(task, given):
    flags, parameters = GIVEN[task] if given else ([], {})
    source = source_for(task)
    from_cli = cli_config(task, flags, source)
    from_estimator = estimator_class(task)(**parameters).resolved_config(source)
    assert from_cli.to_dict() | {"data": None} == from_estimator.to_dict() | {"data": None}
    if given:  # and the settings took effect
        assert from_cli.to_dict() != cli_config(task, [], source).to_dict()


@pytest.mark.parametrize("task", PAPER_TASKS)
def test_estimator_parameters_are_the_option_table(task):
    options = estimator_class(task).parameter_options()
    assert {o.name for o in task_class(task).options()} - {o.name for o in options} == set(
        estimator_class(task).excluded_options + FILE_OPTIONS)
    signature = inspect.signature(estimator_class(task))
    expected = {o.estimator_parameter: o.default for o in options} | {"verbose": False}
    assert {name: p.default for name, p in signature.parameters.items()} == expected
    assert all(o.help for o in options), [o.name for o in options if not o.help]
    assert "random_state" in signature.parameters and "seed" not in signature.parameters


@pytest.mark.parametrize("task", PAPER_TASKS)
def test_train_help_lists_only_the_task_options_with_help_and_default(task, capsys):
    with pytest.raises(SystemExit):
        main(["train", task, "--help"])
    text = capsys.readouterr().out
    flags = set(re.findall(r"(--[a-z][a-z0-9-]+)", text))
    table = {o.flag for o in task_class(task).options()}
    assert table <= flags
    assert text.count("(default:") >= len(table)
    table |= {alias for aliases in task_class(task).cli_aliases.values() for alias in aliases}
    others = {o.flag for name in PAPER_TASKS if name != task for o in task_class(name).options()} - table
    assert not flags & others, flags & others


@pytest.mark.parametrize("task,flag,owner", [("forecasting", "--threshold", "anomaly"),
                                             ("classification", "--stride", "anomaly and forecasting"),
                                             ("forecasting", "--val-fraction", "classification and anomaly"),
                                             ("anomaly", "--target", "forecasting")])
def test_a_flag_of_another_task_is_refused_in_one_line(task, flag, owner, tmp_path, capsys):
    assert main(["train", task, "--data", str(tmp_path), "--out", str(tmp_path / "run"), flag, "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sbts: error: ")
    assert f"{flag} is not an option of sbts train {task} (an option of sbts train {owner})" in err[0]
    assert not (tmp_path / "run").exists()


def test_unknown_flags_are_one_line(tmp_path, capsys):
    assert main(["train", "anomaly", "--out", str(tmp_path / "r"), "--warp-drive"]) == 2
    assert "--warp-drive is not an option of sbts train anomaly;" in capsys.readouterr().err
    assert main(["models", "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"sbts {__version__}"


def test_a_closed_pipe_is_not_a_traceback():
    """``sbts ... | head`` stops quietly: the reader went away (here before the first line)."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)
    config = ROOT / "sbts" / "configs" / "paper" / "anomaly_SMD_sbt.yaml"
    proc = subprocess.run([sys.executable, "-m", "sbts", "summary", "--config", str(config)], stdout=write_end,
                          stderr=subprocess.PIPE, text=True)
    os.close(write_end)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("preset", sorted((ROOT / "sbts" / "configs" / "paper").glob("*.yaml")),
                         ids=lambda path: path.stem)
def test_presets_use_only_their_task_options(preset):
    from sbts.config import read_config_file

    settings = read_config_file(preset)
    check_preset(task_class(settings["task"]), settings, str(preset))


def test_a_config_file_with_another_task_option_is_refused(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  val_fraction: 0.2\n")
    with pytest.raises(ConfigError, match=r"c.yaml: train\.val_fraction is not an option of forecasting"):
        build_run_spec("forecasting", data="x", model_name=None, config_file=str(config), model_overrides={},
                       train_overrides={})
    config.write_text("model_name: dense\nmodel:\n  linear: sparse_binary\n")
    with pytest.raises(ConfigError, match="model.linear is 'sparse_binary', but model 'dense' has dense linears"):
        cli_config("forecasting", ["--config", str(config)], source_for("forecasting"))


@pytest.mark.parametrize("flags,files,density", [
    (["--sparsity", "0.75"], {}, 0.25),  # over the preset's density
    (["--density", "0.1"], {"model": {"sparsity": 0.2}}, 0.1),  # over a config file's sparsity
    (["--sparsity", "0.9"], {"model": {"density": 0.5}}, 0.1),
    ([], {"model": {"sparsity": 0.6}}, 0.4),  # a config file's sparsity over the preset's density
])
def test_density_and_sparsity_from_any_layer_replace_each_other(tmp_path, flags, files, density):
    """JapaneseVowels has a paper preset (density 0.5); the two names of one setting never contradict."""
    import yaml

    if files:
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(files))
        flags = [*flags, "--config", str(tmp_path / "c.yaml")]
    args = build_parser().parse_args(["train", "classification", "--data", "UEA/JapaneseVowels", "--out", "r", *flags])
    _, spec = train_spec(args)
    labels = [str(i) for i in range(9)]
    source = DataSource("UEA/JapaneseVowels", ClassificationSource([np.zeros((12, 29))] * 9, labels, labels))
    assert task_class("classification")().run_config(spec, source).model.density == pytest.approx(density)


def test_a_run_config_json_is_a_valid_config_file(synthetic_ts, tmp_path):
    """A run's own config.json (which lists the linear kind and the inert settings of its task) trains again."""
    out = tmp_path / "first"
    assert main(["train", "classification", "--data", str(synthetic_ts), "--out", str(out), "--epochs", "1",
                 "--d-model", "8", "--d-ff", "16", "--device", "cpu", "--quiet"]) == 0
    again = tmp_path / "again"
    assert main(["train", "classification", "--config", str(out / "config.json"), "--out", str(again),
                 "--quiet"]) == 0
    first_config, again_config = (json.loads((d / "config.json").read_text()) for d in (out, again))
    assert first_config == again_config


@pytest.mark.parametrize("task", PAPER_TASKS)
def test_readme_states_each_task_defaults_from_the_table(task):
    readme = (ROOT / "README.md").read_text()
    stale = f"README: the {task} table is stale (python -m sbts.tasks.options prints it)"
    assert options_markdown(task_class(task)) in readme, stale


def test_every_registered_task_has_a_runtime_and_an_options_table():
    for name in task_names():
        assert task_class(name).name == name and task_class(name).options()


SNAPSHOT = ROOT / "tests" / "snapshots" / "resolved_configs.json"


@pytest.mark.parametrize("task", PAPER_TASKS)
def test_the_defaults_of_a_run_without_a_preset_are_pinned(task):
    """What ``sbts train TASK`` and its estimator resolve to when nothing is given: a change of any default shows
    here (regenerate the snapshot only on purpose, and say so in the README)."""
    resolved = {name: cli_config(name, [], source_for(name)).to_dict() for name in PAPER_TASKS}
    if not SNAPSHOT.exists():  # first run: write it (and commit it)
        SNAPSHOT.write_text(json.dumps(resolved, indent=2, sort_keys=True) + "\n")
    assert json.loads(SNAPSHOT.read_text())[task] == json.loads(json.dumps(resolved[task]))
