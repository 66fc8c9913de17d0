"""The command line: the happy path, and every bad input ends with one line and exit code 2."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import synthetic_cases, write_ts

from sbts.cli.main import main

SMALL = ["--epochs", "2", "--d-model", "16", "--seed", "0", "--device", "cpu", "--quiet"]


def run_cli(*args: str) -> int:
    return main([str(a) for a in args])


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line_error(capsys, *fragments: str) -> str:
    """Exactly one error line (one-line warnings may come before it)."""
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("sbts: error: ")]
    assert len(errors) == 1, lines
    assert all(line.startswith("sbts: warning: ") for line in lines if line not in errors), lines
    err = errors[0]
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_train_then_evaluate(synthetic_ts, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("train", "classification", "--data", synthetic_ts, "--model", "sbt", "--density", "0.25",
                   "--out", out, *SMALL) == 0
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert printed["test"] == metrics["test"]
    assert metrics["density"] == 0.25 and metrics["model"] == "sbt" and metrics["epochs"] == 2
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    assert run_cli("evaluate", out, "--device", "cpu") == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["test"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"])


def test_sparsity_is_the_other_name_for_density(synthetic_ts, tmp_path, capsys):
    assert run_cli("train", "classification", "--data", synthetic_ts, "--sparsity", "0.75",
                   "--out", tmp_path / "run", *SMALL) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["density"] == 0.25 and metrics["sparsity"] == 0.75


def test_resume_through_cli(synthetic_ts, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("train", "classification", "--data", synthetic_ts, "--out", out, *SMALL) == 0
    assert run_cli("train", "classification", "--out", out, "--resume", "--epochs", "3", "--quiet") == 0
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 3


def test_a_run_stopped_before_its_first_checkpoint_resumes_from_epoch_0(synthetic_ts, tmp_path, capsys):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    for out in (straight, stopped):
        assert run_cli("train", "classification", "--data", synthetic_ts, "--out", out, *SMALL) == 0
    for name in ("checkpoints", "metrics.json"):  # what a kill before the epoch-0 checkpoint leaves: config.json
        path = stopped / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert run_cli("train", "classification", "--out", stopped, "--resume", "--quiet") == 0
    assert (json.loads((stopped / "metrics.json").read_text())["test"]
            == json.loads((straight / "metrics.json").read_text())["test"])
    import torch

    for name in ("best.pt", "last.pt"):
        got, want = (torch.load(run / "checkpoints" / name, weights_only=True)["model"] for run in (stopped, straight))
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_force_replaces_a_run_only_once_the_new_inputs_are_read(synthetic_ts, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("train", "classification", "--data", synthetic_ts, "--out", out, *SMALL) == 0
    before = tree_digest(out)
    assert run_cli("train", "classification", "--data", tmp_path / "missing", "--out", out, "--force", *SMALL) == 2
    assert_one_line_error(capsys, "missing")
    assert tree_digest(out) == before  # a failed replacement keeps the old run
    assert run_cli("train", "classification", "--data", synthetic_ts, "--out", out, "--force", "--epochs", "1",
                   "--quiet") == 0
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 1
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    assert run_cli("train", "classification", "--data", synthetic_ts, "--out", other, "--force", *SMALL) == 2
    assert_one_line_error(capsys, "not a run directory")
    assert (other / "mine.txt").read_text() == "keep"
    assert run_cli("train", "classification", "--out", out, "--resume", "--force", "--quiet") == 2
    assert_one_line_error(capsys, "not both")


def test_resume_accepts_the_runs_own_options_and_refuses_changed_ones(synthetic_ts, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("train", "classification", "--data", synthetic_ts, "--out", out, "--model", "sbt", *SMALL) == 0
    assert run_cli("train", "classification", "--data", synthetic_ts, "--model", "sbt", "--d-model", "16",
                   "--out", out, "--resume", "--epochs", "3", "--quiet") == 0
    assert run_cli("train", "classification", "--out", out, "--resume", "--d-model", "32", "--quiet") == 2
    assert_one_line_error(capsys, "--d-model cannot change on --resume")


def test_module_entry_point_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sbts", "train", "classification", "--data",
                           str(tmp_path / "missing"), "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("sbts: error:") and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("flag,value", [("--density", "0"), ("--density", "1.5"), ("--density", "-0.1"),
                                        ("--density", "nan"), ("--sparsity", "1"), ("--sparsity", "-0.5")])
def test_density_out_of_range(synthetic_ts, tmp_path, capsys, flag, value):
    assert run_cli("train", "classification", "--data", synthetic_ts, flag, value, "--out", tmp_path / "run",
                   *SMALL) == 2
    assert_one_line_error(capsys, value if value != "nan" else "nan")
    assert not (tmp_path / "run").exists()  # a run that fails on its inputs leaves nothing behind


def test_missing_file(tmp_path, capsys):
    missing = tmp_path / "Nope_TRAIN.ts"
    assert run_cli("train", "classification", "--data", missing, "--out", tmp_path / "run", *SMALL) == 2
    assert_one_line_error(capsys, "Nope_TRAIN.ts")
    assert not (tmp_path / "run").exists()


def test_dense_model_with_a_density(synthetic_ts, tmp_path, capsys):
    assert run_cli("train", "classification", "--data", synthetic_ts, "--model", "dense", "--density", "0.5",
                   "--out", tmp_path / "run", *SMALL) == 2
    assert_one_line_error(capsys, "density=0.5", "dense")


def test_malformed_line_reports_line_number(synthetic_ts, tmp_path, capsys):
    train = synthetic_ts / "Synth_TRAIN.ts"
    lines = train.read_text().splitlines()
    lines[10] = lines[10].replace(",", ",abc,", 1)  # line 11 of the file
    train.write_text("\n".join(lines) + "\n")
    assert run_cli("train", "classification", "--data", synthetic_ts, "--out", tmp_path / "run", *SMALL) == 2
    assert_one_line_error(capsys, "Synth_TRAIN.ts", "11", "abc")


def test_train_and_test_with_different_dimensions(tmp_path, capsys):
    folder = tmp_path / "Mixed"
    folder.mkdir()
    train, labels = synthetic_cases(12, n_channels=3)
    test, test_labels = synthetic_cases(6, n_channels=2)
    write_ts(folder / "Mixed_TRAIN.ts", train, labels, ["c0", "c1", "c2"])
    write_ts(folder / "Mixed_TEST.ts", test, test_labels, ["c0", "c1", "c2"])
    assert run_cli("train", "classification", "--data", folder, "--out", tmp_path / "run", *SMALL) == 2
    assert_one_line_error(capsys, "Mixed_TEST.ts", "Mixed_TRAIN.ts")


def test_unknown_dataset_name(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SBTS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SBTS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SBTS_UEA_BASE_URL", (tmp_path / "no-server").as_uri())  # never the network in tests
    assert run_cli("train", "classification", "--data", "UEA/NoSuchDataset", "--out", tmp_path / "run", *SMALL) == 2
    assert_one_line_error(capsys, "NoSuchDataset")


def test_nan_values_that_cannot_be_filled(tmp_path, capsys):
    folder = tmp_path / "Holes"
    folder.mkdir()
    train, labels = synthetic_cases(12)
    train[4][1, :] = float("nan")  # a whole channel missing: nothing to interpolate from
    test, test_labels = synthetic_cases(6)
    write_ts(folder / "Holes_TRAIN.ts", train, labels, ["c0", "c1", "c2"])
    write_ts(folder / "Holes_TEST.ts", test, test_labels, ["c0", "c1", "c2"])
    text = (folder / "Holes_TRAIN.ts").read_text().replace("nan", "?")
    (folder / "Holes_TRAIN.ts").write_text(text)
    assert run_cli("train", "classification", "--data", folder, "--out", tmp_path / "run", *SMALL) == 2
    assert_one_line_error(capsys, "Holes_TRAIN.ts")


def test_existing_run_is_never_overwritten(synthetic_ts, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("train", "classification", "--data", synthetic_ts, "--out", out, *SMALL) == 0
    before = tree_digest(out)
    assert run_cli("train", "classification", "--data", synthetic_ts, "--out", out, *SMALL) == 2
    assert_one_line_error(capsys, str(out))
    assert tree_digest(out) == before


@pytest.mark.parametrize("damage", ["corrupt", "foreign", "missing"])
def test_evaluate_bad_checkpoint(synthetic_ts, tmp_path, capsys, damage):
    out = tmp_path / "run"
    assert run_cli("train", "classification", "--data", synthetic_ts, "--out", out, *SMALL) == 0
    capsys.readouterr()
    best = out / "checkpoints" / "best.pt"
    if damage == "corrupt":
        best.write_bytes(best.read_bytes()[:100])
    elif damage == "foreign":
        import torch
        torch.save({"weights": torch.ones(3)}, best)
    else:
        best.unlink()
    assert run_cli("evaluate", out) == 2
    assert_one_line_error(capsys, "best.pt")


def test_resume_without_a_run(tmp_path, capsys):
    assert run_cli("train", "classification", "--out", tmp_path / "empty", "--resume") == 2
    assert_one_line_error(capsys, "nothing to resume")


@pytest.mark.parametrize("text,fragment", [
    ("model:\n  d_model: 16\n  warp_drive: true\n", "warp_drive"),  # unknown key
    ("model: [unclosed\n", "bad.yaml"),  # YAML syntax
    ("model:\n  norm: layer_time\n", "layer_time"),  # needs equal lengths; these are unequal
    ("model_name: [1]\n", "model_name"),  # wrong type
    ("model:\n  in_channels: 12\n", "in_channels"),  # written for other data (these have 3 channels)
    ("model:\n  out_dim: 9\n", "out_dim"),
    ("model:\n  max_len: 5\n", "max_len"),  # shorter than the longest series
    ("model:\n  max_len: ten\n", "max_len"),
])
def test_bad_config_file(synthetic_ts, tmp_path, capsys, text, fragment):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert run_cli("train", "classification", "--data", synthetic_ts, "--config", config, "--out", tmp_path / "r",
                   *SMALL) == 2
    assert_one_line_error(capsys, fragment)
    assert not (tmp_path / "r").exists()


def test_directory_given_as_config_file(synthetic_ts, tmp_path, capsys):
    assert run_cli("train", "classification", "--data", synthetic_ts, "--config", tmp_path, "--out", tmp_path / "r",
                   *SMALL) == 2
    assert_one_line_error(capsys, str(tmp_path))


def test_paper_preset_is_applied_by_dataset_name():
    from sbts.tasks.runs import build_run_spec

    spec = build_run_spec("classification", data="UEA/JapaneseVowels", model_name="sbt", config_file=None,
                          model_overrides={}, train_overrides={})
    assert spec["model"]["d_model"] == 32 and spec["model"]["attention"] == "qkv_mask"
    assert spec["train"]["epochs"] == 250 and spec["train"]["batch_size"] == 8
    dense = build_run_spec("classification", data="UEA/JapaneseVowels", model_name="dense", config_file=None,
                           model_overrides={}, train_overrides={"epochs": 7})
    assert dense["model"]["pos_encoding"] == "learnable" and dense["train"]["epochs"] == 7


def folder_with(tmp_path: Path, name: str, train, labels, test=None, test_labels=None, classes=None) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    classes = classes or sorted(set(labels))
    write_ts(folder / f"{name}_TRAIN.ts", train, labels, classes)
    if test is None:
        test, test_labels = synthetic_cases(6, n_channels=train[0].shape[0])
    write_ts(folder / f"{name}_TEST.ts", test, test_labels, classes)
    return folder


@pytest.mark.parametrize("args,fragment", [
    (["--attention", "step_t"], "unequal lengths"),
    (["--val-fraction", "0.999"], "val_fraction"),
    (["--val-fraction", "0.005"], "no validation case"),
    (["--lr", "1e30"], "lower the lr"),
    (["--device", "cuda"] if not __import__("torch").cuda.is_available() else ["--device", "cuda:99"], "cuda"),
    (["--device", "tpu"], "device"),
    (["--epochs", "0"], "epochs"),
    (["--batch-size", "0"], "batch_size"),
    (["--lr", "-1"], "lr"),
])
def test_bad_training_settings(synthetic_ts, tmp_path, capsys, args, fragment):
    out = tmp_path / "run"
    argv = ["train", "classification", "--data", synthetic_ts, "--out", out, *SMALL, *args]
    if "--device" in args:
        argv.remove("--device"), argv.remove("cpu")
    assert run_cli(*argv) == 2
    assert_one_line_error(capsys, fragment)
    if fragment != "lower the lr":  # divergence happens after epoch 0 was checkpointed
        assert not out.exists(), "a run that cannot start must leave nothing behind"


def test_unlabelled_and_single_class_files(tmp_path, capsys):
    series, _ = synthetic_cases(12)
    folder = folder_with(tmp_path, "Single", series, ["a"] * 12, *synthetic_cases(4), classes=["a", "c0", "c1", "c2"])
    assert run_cli("train", "classification", "--data", folder, "--out", tmp_path / "r1", *SMALL) == 2
    assert_one_line_error(capsys, "only one class")
    unlabelled = tmp_path / "Plain"
    unlabelled.mkdir()
    for split in ("TRAIN", "TEST"):
        lines = ["@problemName Plain", "@dimensions 1", "@classLabel false", "@data"]
        lines += [",".join(str(v) for v in range(5 + i)) for i in range(6)]
        (unlabelled / f"Plain_{split}.ts").write_text("\n".join(lines) + "\n")
    assert run_cli("train", "classification", "--data", unlabelled, "--out", tmp_path / "r2", *SMALL) == 2
    assert_one_line_error(capsys, "without a class label")


def test_test_label_unknown_to_training(tmp_path, capsys):
    train, labels = synthetic_cases(12, n_classes=2)
    test, test_labels = synthetic_cases(6, n_classes=3)
    folder = folder_with(tmp_path, "Extra", train, labels, test, test_labels, classes=["c0", "c1", "c2"])
    (folder / "Extra_TRAIN.ts").write_text((folder / "Extra_TRAIN.ts").read_text().replace(" c0 c1 c2", " c0 c1"))
    assert run_cli("train", "classification", "--data", folder, "--out", tmp_path / "r", *SMALL) == 2
    assert_one_line_error(capsys, "Extra_TEST.ts", "c2")


def test_infinite_value(tmp_path, capsys):
    train, labels = synthetic_cases(12)
    train[3][0, 5] = float("inf")
    folder = folder_with(tmp_path, "Inf", train, labels)
    assert run_cli("train", "classification", "--data", folder, "--out", tmp_path / "r", *SMALL) == 2
    assert_one_line_error(capsys, "Inf_TRAIN.ts", "infinite")


def test_one_case_of_a_class_stays_in_training(tmp_path, capsys):
    train, labels = synthetic_cases(20, n_classes=2)
    train.append(train[0] * 2)
    labels.append("rare")
    folder = folder_with(tmp_path, "Rare", train, labels, *synthetic_cases(6, n_classes=2))
    out = tmp_path / "run"
    assert run_cli("train", "classification", "--data", folder, "--out", out, "--val-fraction", "0.2", *SMALL) == 0
    import torch
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["task_state"]
    assert labels.index("rare") not in state["val_indices"]
    assert len(state["val_indices"]) == 4


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "classification", "--density", "abc", "--out", "x"])
    assert info.value.code == 2
    assert_one_line_error(capsys, "--density", "abc")


def test_resume_rejects_changes_that_would_not_apply(synthetic_ts, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("train", "classification", "--data", synthetic_ts, "--out", out, *SMALL) == 0
    capsys.readouterr()
    before = tree_digest(out)
    assert run_cli("train", "classification", "--out", out, "--resume", "--density", "0.1") == 2
    assert_one_line_error(capsys, "--density", "cannot change on --resume")
    assert tree_digest(out) == before


def test_resume_records_new_epochs_in_config(synthetic_ts, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("train", "classification", "--data", synthetic_ts, "--out", out, *SMALL) == 0
    assert run_cli("train", "classification", "--out", out, "--resume", "--epochs", "3", "--quiet") == 0
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 3


def test_evaluate_bad_device(synthetic_ts, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("train", "classification", "--data", synthetic_ts, "--out", out, *SMALL) == 0
    capsys.readouterr()
    assert run_cli("evaluate", out, "--device", "bogus") == 2
    assert_one_line_error(capsys, "bogus")
    assert run_cli("evaluate", tmp_path / "nowhere") == 2
    assert_one_line_error(capsys, "config.json")


def test_relative_data_path_is_stored_absolute(synthetic_ts, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(synthetic_ts.parent)
    out = tmp_path / "run"
    assert run_cli("train", "classification", "--data", synthetic_ts.name, "--out", out, *SMALL) == 0
    stored = json.loads((out / "config.json").read_text())["data"]
    assert stored == f"{synthetic_ts / 'Synth_TRAIN.ts'},{synthetic_ts / 'Synth_TEST.ts'}"
    monkeypatch.chdir(tmp_path / "run")
    assert run_cli("evaluate", out, "--device", "cpu") == 0


def test_changed_data_is_detected(synthetic_ts, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("train", "classification", "--data", synthetic_ts, "--out", out, *SMALL) == 0
    capsys.readouterr()
    test_file = synthetic_ts / "Synth_TEST.ts"
    test_file.write_text(test_file.read_text().replace("0.1", "0.2", 1))
    assert run_cli("evaluate", out) == 2
    assert_one_line_error(capsys, "Synth_TEST.ts", "differs")


def test_warnings_are_one_line(tmp_path, capsys):
    # Four classes of two cases with 2 validation cases cannot be stratified: a warning, on one line.
    train, labels = synthetic_cases(8, n_classes=4)
    folder = folder_with(tmp_path, "Tiny", train, labels)
    assert run_cli("train", "classification", "--data", folder, "--out", tmp_path / "r", "--val-fraction", "0.25",
                   *SMALL) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert any(line.startswith("sbts: warning: validation split could not be stratified") for line in err), err


def test_config_max_len_longer_than_the_data_pads(synthetic_ts, tmp_path, capsys):
    """A paper config may pad beyond the longest series (InsectWingbeat: 30 steps)."""
    config = tmp_path / "long.yaml"
    config.write_text("model:\n  max_len: 25\n  in_channels: 3\n  out_dim: 3\n")
    assert run_cli("train", "classification", "--data", synthetic_ts, "--config", config, "--out", tmp_path / "r",
                   *SMALL) == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["model"]["max_len"] == 25


def test_every_flag_has_help_and_states_its_default():
    import argparse

    from sbts.cli.main import build_parser

    def options(parser: argparse.ArgumentParser, path: str):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from options(sub, f"{path} {name}")
            elif action.option_strings and action.dest not in ("help", "version"):
                yield path, parser, action

    for path, parser, action in options(build_parser(with_tasks=True), "sbts"):
        assert action.help, (path, action.option_strings)
        if action.default not in (None, False):
            shown = parser._get_formatter()._get_help_string(action) % {"default": action.default}
            assert "default" in shown, (path, action.option_strings, shown)
