"""A catalogue of bad inputs, one table row per case, across the CLI's entry points.

Every case must end the same way: exit code 2, one line ``sbts: error: ...`` on stderr naming the culprit (the
row's fragment), no traceback, and nothing left behind (the working folder holds what the case made, no more).
Inputs that would run code if they were unpickled carry a payload that writes a marker file: the marker must
never appear.
"""

from __future__ import annotations

import gzip
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_cases, write_ts

from sbts.cli.main import main

TINY = ("--d-model", "8", "--n-heads", "2", "--d-ff", "16", "--n-layers", "1", "--epochs", "1", "--quiet")
MARKER = "unpickled.marker"
TRUNCATED_AT = 0.7  # fraction of a .ts file kept: the cut falls inside a case


class WritesMarker:
    """Unpickling this writes the marker file: proof that a file was unpickled."""

    def __init__(self, folder: Path):
        self.folder = str(folder)

    def __reduce__(self):
        return (Path.touch, (Path(self.folder) / MARKER,))


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    """A classification dataset, a trained run and its exported artifact, a forecasting series."""
    root = tmp_path_factory.mktemp("assets")
    data = root / "Synth"
    data.mkdir()
    classes = ["c0", "c1", "c2"]
    for split, n, seed in (("TRAIN", 30, 1), ("TEST", 12, 2)):
        write_ts(data / f"Synth_{split}.ts", *synthetic_cases(n, seed=seed), classes)
    run = root / "run"
    assert main(["train", "classification", "--data", str(data), "--out", str(run), *TINY]) == 0
    artifact = root / "model.sbts"
    assert main(["export", str(run), "-o", str(artifact)]) == 0
    series = root / "series.csv"
    rows = np.random.default_rng(0).standard_normal((200, 3))
    series.write_text("a,b,c\n" + "\n".join(",".join(f"{v:.5f}" for v in row) for row in rows) + "\n")
    return {"data": data, "run": run, "artifact": artifact, "series": series, "test_ts": data / "Synth_TEST.ts"}


def train(data: Path | str, *extra: str, task: str = "classification") -> Callable[[Path, dict], list[str]]:
    return lambda tmp, a: ["train", task, "--data", str(data), "--out", str(tmp / "out"), *TINY, *extra]


def train_on(make: Callable[[Path], Path], *extra: str, task: str = "classification"):
    """Train on a file the case writes into its folder."""
    return lambda tmp, a: ["train", task, "--data", str(make(tmp)), "--out", str(tmp / "out"), *TINY, *extra]


def train_synth(*extra: str):
    return lambda tmp, a: ["train", "classification", "--data", str(a["data"]), "--out", str(tmp / "out"), *TINY,
                           *extra]


def with_config(text: str, name: str = "config.yaml"):
    def make(tmp, a):
        (tmp / name).write_text(text)
        return ["train", "classification", "--data", str(a["data"]), "--out", str(tmp / "out"), "--config",
                str(tmp / name), "--quiet"]
    return make


def predict(input_maker: Callable[[Path, dict], str], *extra: str):
    return lambda tmp, a: ["predict", str(a["artifact"]), "--input", input_maker(tmp, a), *extra]


def file_with(name: str, content: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / name).write_bytes(content)
        return tmp / name
    return make


def npy(name: str, array_maker: Callable[[Path], np.ndarray], allow_pickle: bool = False):
    def make(tmp: Path, a: dict) -> str:
        np.save(tmp / name, array_maker(tmp), allow_pickle=allow_pickle)
        return str(tmp / name)
    return make


def sparse_file(name: str, size: int) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        with (tmp / name).open("wb") as handle:  # a hole: no disk used
            handle.truncate(size)
        return tmp / name
    return make


def gzip_bomb(tmp: Path) -> Path:
    path = tmp / "bomb.csv.gz"
    with gzip.open(path, "wb", compresslevel=9) as handle:
        handle.write(b"a,b,c\n")
        for _ in range(64):
            handle.write(b"0" * (1 << 20))
    return path


def pickled(name: str):
    def make(tmp: Path, a: dict) -> str:
        (tmp / name).write_bytes(pickle.dumps(WritesMarker(tmp)))
        return str(tmp / name)
    return make


def truncated_artifact(tmp: Path, a: dict) -> str:
    data = a["artifact"].read_bytes()
    (tmp / "cut.sbts").write_bytes(data[: len(data) // 2])
    return str(tmp / "cut.sbts")


def existing_output(tmp: Path, a: dict) -> list[str]:
    (tmp / "pred.csv").write_text("keep\n")
    return ["predict", str(a["artifact"]), "--input", str(a["test_ts"]), "-o", str(tmp / "pred.csv")]


def output_onto_the_input(tmp: Path, a: dict) -> list[str]:
    copy = tmp / "cases.ts"
    copy.write_bytes(a["test_ts"].read_bytes())
    return ["predict", str(a["artifact"]), "--input", str(copy), "-o", str(copy), "--force"]


def existing_export(tmp: Path, a: dict) -> list[str]:
    (tmp / "model.sbts").write_text("keep\n")
    return ["export", str(a["run"]), "-o", str(tmp / "model.sbts")]


def truncated_ts(tmp: Path) -> Path:
    """A dataset whose training file ends in the middle of a case (cut at TRUNCATED_AT of its bytes)."""
    folder = tmp / "Cut"
    folder.mkdir()
    write_ts(folder / "Cut_TRAIN.ts", *synthetic_cases(12, seed=1), ["c0", "c1", "c2"], name="Cut")
    full = (folder / "Cut_TRAIN.ts").read_text()
    (folder / "Cut_TRAIN.ts").write_text(full[: int(len(full) * TRUNCATED_AT)])
    (folder / "Cut_TEST.ts").write_text(full)
    return folder


ALIAS_BOMB = "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(7))
ALIAS_BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + ALIAS_BOMB

CASES = {
    # --- data files ---------------------------------------------------------------------------------
    "empty-ts": (train_on(file_with("empty.ts", b"")), "empty.ts"),
    "header-only-csv": (train_on(file_with("h.csv", b"a,b,c\n"), task="forecasting"), "h.csv"),
    "binary-csv": (train_on(file_with("bin.csv", bytes(range(256)) * 40), task="forecasting"), "bin.csv"),
    "utf16-csv": (train_on(file_with("u16.csv", "a,b\n1,2\n3,4\n".encode("utf-16")), task="forecasting"),
                  "u16.csv"),
    "sparse-2-gib-csv": (train_on(sparse_file("big.csv", 2 * 1024**3), task="forecasting"), "over the input limit"),
    "gzip-of-64-mib-of-zeros": (lambda tmp, a: ["train", "forecasting", "--data", str(gzip_bomb(tmp)), "--out",
                                                str(tmp / "out"), *TINY], "bomb.csv.gz:2: expected 3 columns"),
    "truncated-ts": (train_on(truncated_ts), "Cut_TRAIN.ts"),
    "directory-as-config": (lambda tmp, a: ["train", "classification", "--data", str(a["data"]), "--out",
                                            str(tmp / "out"), "--config", str(tmp)], "config"),
    "missing-data-path": (train("./no_such_dir"), "no such file or directory: ./no_such_dir"),
    "missing-data-dir": (lambda tmp, a: ["train", "anomaly", "--data", "SMD/machine-1-1", "--out", str(tmp / "out"),
                                         "--data-dir", str(tmp / "nowhere")], "--data-dir"),
    "non-numeric-cell": (train_on(file_with("t.csv", b"a,b\n1,2\n3,x\n" + b"5,6\n" * 100), task="forecasting"),
                         "t.csv"),
    "infinite-cell": (train_on(file_with("inf.csv", b"a,b\n" + b"1,2\n" * 100 + b"inf,2\n"), task="forecasting"),
                      "inf.csv"),
    # --- option values ------------------------------------------------------------------------------
    "zero-epochs": (train_synth("--epochs", "0"), "epochs must be an integer >= 1"),
    "negative-epochs": (train_synth("--epochs", "-3"), "epochs must be an integer >= 1"),
    "non-numeric-epochs": (train_synth("--epochs", "three"), "--epochs"),
    "huge-d-model": (train_synth("--d-model", "100000"), "d_model must be at most 8,192"),
    "heads-not-dividing-d-model": (train_synth("--n-heads", "3"), "d_model (8) must be divisible by n_heads (3)"),
    "seed-beyond-32-bits": (train_synth("--seed", str(2**32)), "seed must be at most 4,294,967,295"),
    "negative-seed": (train_synth("--seed", "-1"), "seed must be an integer >= 0"),
    "zero-density": (train_synth("--density", "0"), "density"),
    "density-above-one": (train_synth("--density", "1.5"), "density"),
    "nan-learning-rate": (train_synth("--lr", "nan"), "lr must be a finite number > 0"),
    "negative-learning-rate": (train_synth("--lr", "-0.1"), "lr must be a finite number > 0"),
    "zero-batch-size": (train_synth("--batch-size", "0"), "batch_size must be an integer >= 1"),
    "unknown-flag": (train_synth("--colour", "red"), "--colour"),
    # --- config files -------------------------------------------------------------------------------
    "yaml-unknown-key": (with_config("train:\n  epochs: 1\n  colour: red\n"), "colour"),
    "yaml-unknown-section": (with_config("colours: {a: 1}\n"), "colours"),
    "yaml-wrong-type": (with_config("train:\n  epochs: many\n"), "epochs"),
    "yaml-alias-bomb": (with_config(ALIAS_BOMB), "YAML aliases"),
    "yaml-syntax": (with_config("train: [1, 2\n"), "invalid YAML"),
    "json-nested-deep": (with_config("[" * 50_000 + "]" * 50_000, name="deep.json"), "nested too deeply"),
    # --- predict ------------------------------------------------------------------------------------
    "predict-empty-npy": (predict(npy("empty.npy", lambda tmp: np.zeros((0, 3, 10))), "-o", "x.csv"), "no cases"),
    "predict-object-npy": (predict(npy("obj.npy", lambda tmp: np.array([WritesMarker(tmp)], dtype=object),
                                       allow_pickle=True)), "obj.npy"),
    "predict-wrong-channels": (predict(npy("c5.npy", lambda tmp: np.zeros((2, 5, 10)))), "5"),
    "predict-input-directory": (predict(lambda tmp, a: str(tmp)), "input"),
    "predict-existing-output": (existing_output, "exists; pass --force"),
    "predict-output-onto-input": (output_onto_the_input, "is an input of this command"),
    "predict-output-in-missing-folder": (lambda tmp, a: ["predict", str(a["artifact"]), "--input", str(a["test_ts"]),
                                                         "-o", str(tmp / "no" / "such" / "p.csv")],
                                         "does not exist (sbts does not create it)"),
    "predict-pickled-pt-model": (lambda tmp, a: ["predict", pickled("model.pt")(tmp, a), "--input",
                                                 str(a["test_ts"])], "not an sbts artifact"),
    "predict-truncated-artifact": (lambda tmp, a: ["predict", truncated_artifact(tmp, a), "--input",
                                                   str(a["test_ts"])], "cut.sbts"),
    "predict-context-on-a-classifier": (lambda tmp, a: ["predict", str(a["artifact"]), "--input", str(a["test_ts"]),
                                                        "--context", str(a["series"])], "--context"),
    "predict-stream-on-a-classifier": (lambda tmp, a: ["predict", str(a["artifact"]), "--input", str(a["series"]),
                                                       "--stream"], "--stream"),
    # --- export and evaluate ------------------------------------------------------------------------
    "export-existing-output": (existing_export, "exists; pass --force"),
    "export-into-missing-folder": (lambda tmp, a: ["export", str(a["run"]), "-o", str(tmp / "missing" / "m.sbts")],
                                   "does not exist (sbts does not create it)"),
    "export-not-a-run": (lambda tmp, a: ["export", str(tmp), "-o", str(tmp / "m.sbts")], str("")),
    "export-onto-the-run": (lambda tmp, a: ["export", str(a["run"]), "-o", str(a["run"]), "--force"],
                            "is an input of this command"),
    "evaluate-missing-run": (lambda tmp, a: ["evaluate", str(tmp / "nope")], "nope"),
    "existing-run-without-resume": (lambda tmp, a: ["train", "classification", "--data", str(a["data"]), "--out",
                                                    str(a["run"]), *TINY], "--resume"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_input_is_one_line_exit_2_and_leaves_nothing(case, assets, tmp_path, capsys):
    make_argv, fragment = CASES[case]
    work = tmp_path / "work"
    work.mkdir()
    argv = make_argv(work, assets)
    before = sorted(p.relative_to(work) for p in work.rglob("*"))
    assets_before = sorted(p.relative_to(assets["run"].parent) for p in assets["run"].parent.rglob("*"))
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own usage errors end this way (one line: sbts.cli.main._Parser)
        code = exit.code
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("sbts: error: ")]
    assert code == 2, (case, err)
    assert len(errors) == 1 and "Traceback" not in err, err
    assert fragment in errors[0], errors[0]
    assert sorted(p.relative_to(work) for p in work.rglob("*")) == before  # nothing left behind
    assert sorted(p.relative_to(assets["run"].parent) for p in assets["run"].parent.rglob("*")) == assets_before
    assert not (work / MARKER).exists()


def test_the_catalogue_covers_forty_distinct_cases():
    assert len(CASES) >= 40


def test_a_closed_pipe_ends_quietly(assets):
    """``sbts predict ... | head -1``: the reader goes away; no traceback, the exit of a Unix tool."""
    done = subprocess.run(f"{sys.executable} -m sbts predict {assets['artifact']} --input {assets['test_ts']} "
                          "| head -1", shell=True, capture_output=True, text=True)
    assert done.stdout.startswith("case,") and "Traceback" not in done.stderr and "Error" not in done.stderr
