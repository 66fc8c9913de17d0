"""Sweeps: specs and their checks, Optuna studies in SQLite, a journal file and PostgreSQL, trials as run
directories resumed after kill -9, re-runs that do nothing, the report, and the shipped sweeps."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import real_data_dir

optuna = pytest.importorskip("optuna")

from sbts.cli.main import main  # noqa: E402
from sbts.errors import ConfigError  # noqa: E402
from sbts.report.sweep_report import pareto_front, write_report  # noqa: E402
from sbts.metrics.reported import MAXIMIZE, MINIMIZE, ReportedMetric  # noqa: E402
from sbts.sweep import named_spec_path, named_sweeps, parse_spec, read_spec, run_sweep  # noqa: E402
from sbts.sweep.spec import check_runs  # noqa: E402
from sbts.sweep.study import read_results  # noqa: E402
from sbts.sweep.trials import TRIALS_DIR  # noqa: E402

SMALL = {"d_model": 8, "n_heads": 1, "d_ff": 16, "n_layers": 1, "batch_size": 16, "epochs": 2}


def sbts(capsys, *args: str) -> subprocess.CompletedProcess:
    """The command in this process (what it prints, its exit code), as a finished subprocess would report it."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def write_spec(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def small_spec(data: Path, **extra) -> dict:
    return {"task": "classification", "data": str(data), "fixed": dict(SMALL),
            "grid": {"model": ["sbt"], "density": [0.5, 0.25], "seed": [0, 1]}, **extra}


# --- the spec ---------------------------------------------------------------------------------------------

def test_the_smallest_spec_has_its_four_cells(synthetic_ts):
    spec = parse_spec(small_spec(synthetic_ts), "spec.yaml")
    assert spec.is_grid and len(spec.cells) == 4
    assert spec.cells[0] == {"model": "sbt", "density": 0.5, "seed": 0}
    run = spec.run_spec(spec.cells[3])
    assert run["model"]["density"] == 0.25 and run["train"]["seed"] == 1 and run["model"]["seed"] == 1
    assert run["model"]["d_model"] == 8 and run["train"]["epochs"] == 2


def test_variants_and_datasets_are_axes(synthetic_ts):
    spec = parse_spec({"task": "classification", "data": [str(synthetic_ts), "UEA/JapaneseVowels"],
                       "variants": [{"model": "dense"}, {"model": "sbt", "density": 0.25}],
                       "seeds": [0, 1, 2], "grid": {"epochs": [1]}}, "spec.yaml")
    assert list(spec.grid) == ["data", "variant", "epochs", "seed"] and len(spec.cells) == 12
    cell = {"data": "UEA/JapaneseVowels", "variant": "model=sbt,density=0.25", "epochs": 1, "seed": 2}
    assert spec.varying(cell) == {"data": "UEA/JapaneseVowels", "model": "sbt", "density": 0.25, "epochs": 1,
                                  "seed": 2}
    assert spec.options_of(cell) == ("UEA/JapaneseVowels", {"model": "sbt", "density": 0.25, "epochs": 1, "seed": 2})


def test_per_data_options_override_the_fixed_ones_on_their_dataset_only(synthetic_ts):
    spec = parse_spec({"task": "classification", "data": [str(synthetic_ts), "UEA/JapaneseVowels"],
                       "fixed": {"epochs": 100}, "per_data": {"UEA/JapaneseVowels": {"epochs": 10}},
                       "variants": [{"model": "dense"}, {"model": "sbt"}], "grid": {"seed": [0]}}, "spec.yaml")
    epochs = {cell["data"]: spec.options_of(cell)[1]["epochs"] for cell in spec.cells}
    assert epochs == {str(synthetic_ts): 100, "UEA/JapaneseVowels": 10}
    assert spec.run_spec({"data": "UEA/JapaneseVowels", "variant": "model=sbt", "seed": 0})["train"]["epochs"] == 10


@pytest.mark.parametrize("options, blamed", [
    ({"density": 0.1}, "grid.density: also set in per_data"),
    ({"epocs": 1}, "per_data.DATA.epocs: not an option of classification"),
])
def test_bad_per_data_options_name_their_key(synthetic_ts, options, blamed):
    with pytest.raises(ConfigError, match=re.escape(blamed.replace("DATA", str(synthetic_ts)))):
        parse_spec({**small_spec(synthetic_ts), "per_data": {str(synthetic_ts): options}}, "spec.yaml")


def test_yaml_numbers_in_strings_are_numbers(synthetic_ts):
    spec = parse_spec({**small_spec(synthetic_ts), "fixed": {"lr": "1e-3"}}, "spec.yaml")
    assert spec.fixed["lr"] == pytest.approx(1e-3)


@pytest.mark.parametrize("change, blamed", [
    ({"colour": "red"}, "spec.yaml: colour: not a sweep key"),
    ({"grid": {"densty": [0.5]}}, "grid.densty: not an option of classification"),
    ({"grid": {"density": []}}, "grid.density: an empty list: the grid has no cells"),
    ({"grid": {"density": 0.5}}, "grid.density: a grid axis is a list of values"),
    ({"grid": {"density": [0.5, 0.5]}}, "grid.density: repeated values"),
    ({"grid": {}}, "grid: expected a non-empty mapping"),
    ({"search": {"lr": {"low": 1e-4, "high": 1e-2}}}, "give either grid"),
    ({"task": "regression"}, "task: must be one of"),
    ({"data": []}, "data: expected a dataset name"),
    ({"fixed": {"epochs": "three"}}, "fixed.epochs: expected int"),
    ({"n_trials": 3}, "n_trials: a grid runs every cell"),
    ({"seeds": [0, 1]}, "seeds: the seeds are also set as an option"),
    ({"fixed": {"density": 0.5, **SMALL}}, "grid.density: also set in fixed"),
    ({"per_data": {"UEA/Epilepsy": {"epochs": 1}}}, "per_data.UEA/Epilepsy: not one of the spec's datasets"),
    ({"per_data": {"X": 3}}, "per_data.X: not one of the spec's datasets"),
    ({"per_data": [1]}, "per_data: expected a mapping of dataset -> options"),
])
def test_bad_specs_name_their_key(synthetic_ts, change, blamed):
    with pytest.raises(ConfigError, match=blamed.replace("(", r"\(").replace(".", r"\.")):
        parse_spec({**small_spec(synthetic_ts), **change}, "spec.yaml")


@pytest.mark.parametrize("search, blamed", [
    ({"lr": {"low": 1e-2, "high": 1e-4}}, "search.lr: low"),
    ({"lr": {"low": 0, "high": 1e-2, "log": True}}, "search.lr: a log range needs low > 0"),
    ({"lr": {"low": 1e-4}}, "search.lr: a search dimension is a list of choices"),
    ({"norm": {"low": 0, "high": 1}}, "search.norm: a range needs a numeric option"),
    ({"seed": [0, 1]}, "search.seed: seeds are not searched"),
])
def test_bad_search_spaces_name_their_key(synthetic_ts, search, blamed):
    document = {"task": "classification", "data": str(synthetic_ts), "search": search, "n_trials": 2}
    with pytest.raises(ConfigError, match=blamed.replace(".", r"\.")):
        parse_spec(document, "spec.yaml")


def test_search_needs_n_trials_and_one_dataset(synthetic_ts):
    with pytest.raises(ConfigError, match="n_trials: a search needs n_trials"):
        parse_spec({"task": "classification", "data": str(synthetic_ts), "search": {"lr": [1e-3]}}, "s")
    with pytest.raises(ConfigError, match="a search tunes on one dataset"):
        parse_spec({"task": "classification", "data": [str(synthetic_ts), "x"], "search": {"lr": [1e-3]},
                    "n_trials": 2}, "s")


@pytest.mark.parametrize("grid, blamed", [
    ({"density": [0.5, 1.5]}, "grid.density=1.5: density must be in (0, 1]"),
    ({"n_heads": [3]}, "grid.n_heads=3: d_model (8) must be divisible by n_heads (3)"),
    ({"model": ["dense"], "density": [0.5]}, "density=0.5 needs sparse_binary linears"),
])
def test_values_out_of_range_are_found_before_anything_starts(synthetic_ts, tmp_path, grid, blamed):
    fixed = {k: v for k, v in SMALL.items() if k not in grid}
    spec = parse_spec({**small_spec(synthetic_ts), "fixed": fixed, "grid": grid}, "spec.yaml")
    with pytest.raises(ConfigError, match=blamed.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        run_sweep(spec, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_cli_refuses_a_bad_spec_with_one_line_and_starts_nothing(synthetic_ts, tmp_path, capsys):
    path = write_spec(tmp_path / "spec.yaml", {**small_spec(synthetic_ts), "grid": {"density": [2.0]}})
    done = sbts(capsys, "sweep", str(path), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "grid.density=2.0" in done.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("url, blamed", [
    ("postgresql://nobody@127.0.0.1:1/none", "cannot open the storage"),
    ("sqlite:////nonexistent-folder/x.db", "cannot open the storage"),
    ("journal:/nonexistent-folder/x.log", "the folder /nonexistent-folder does not exist"),
    ("mystery://x", "cannot open the storage"),
])
def test_an_unreachable_storage_is_one_line(synthetic_ts, tmp_path, url, blamed, capsys):
    path = write_spec(tmp_path / "spec.yaml", small_spec(synthetic_ts))
    done = sbts(capsys, "sweep", str(path), "--out", str(tmp_path / "out"), "--storage", url)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and blamed in done.stderr, done.stderr
    assert not (tmp_path / "out" / TRIALS_DIR).exists()


def test_a_password_is_never_shown(synthetic_ts, tmp_path, capsys):
    path = write_spec(tmp_path / "spec.yaml", small_spec(synthetic_ts))
    done = sbts(capsys, "sweep", str(path), "--out", str(tmp_path / "out"), "--storage",
                "postgresql://user:secret@127.0.0.1:1/none")
    assert done.returncode == 2 and "secret" not in done.stderr and "user:***@" in done.stderr


# --- running sweeps -------------------------------------------------------------------------------------------

def _run_metrics(out: Path) -> dict[str, dict]:
    return {d.name: json.loads((d / "metrics.json").read_text()) for d in (out / TRIALS_DIR).iterdir() if d.is_dir()}


def test_two_workers_run_every_cell_once_and_a_rerun_does_nothing(synthetic_ts, tmp_path, capsys):
    spec = write_spec(tmp_path / "spec.yaml", small_spec(synthetic_ts))
    out = tmp_path / "out"
    done = sbts(capsys, "sweep", str(spec), "--out", str(out), "--workers", "2")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["complete"] == summary["trials"] == 4 and summary["finished"]
    runs = _run_metrics(out)
    assert sorted(runs) == ["model=sbt,density=0.25,seed=0", "model=sbt,density=0.25,seed=1",
                            "model=sbt,density=0.5,seed=0", "model=sbt,density=0.5,seed=1"]
    for name, metrics in runs.items():  # ordinary run directories, their config the cell's
        assert metrics["config"]["model"]["d_model"] == 8 and f"seed={metrics['seed']}" in name
        assert (out / TRIALS_DIR / name / "checkpoints" / "best.pt").is_file()
    assert "2 worker(s), 1 torch thread(s) each" in done.stderr

    storage = f"sqlite:///{out / 'study.db'}"
    trials = optuna.load_study(study_name="spec", storage=storage).trials
    # Two workers may both take the last cell (a race GridSampler has): the later trial gives way, pruned.
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 4
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
    again = sbts(capsys, "sweep", str(spec), "--out", str(out), "--workers", "2")
    assert again.returncode == 0 and "all 4 trials complete" in again.stderr and "nothing to do" in again.stderr
    assert len(optuna.load_study(study_name="spec", storage=storage).trials) == len(trials)
    assert _run_metrics(out) == runs

    # The report's numbers are the runs' own: mean over seeds of each run's metrics.json.
    report = sbts(capsys, "report", str(out))
    assert report.returncode == 0, report.stderr
    page = json.loads((out / "report.json").read_text())
    rows = {row["model"]: row for row in page["datasets"][runs[next(iter(runs))]["dataset"]]["rows"]}
    assert set(rows) == {"SBT d=0.5", "SBT d=0.25"}
    for density in (0.5, 0.25):
        accuracies = sorted(m["test"]["accuracy"] for m in runs.values() if m["density"] == density)
        assert sorted(rows[f"SBT d={density:g}"]["test"]["accuracy"]) == accuracies
    markdown = (out / "report.md").read_text()
    assert "| SBT d=0.5 | 2 |" in markdown and "validation accuracy" in markdown and "size (bytes)" in markdown
    assert {Path(p).name for p in json.loads(report.stdout)["figures"]} == {"report-pareto.png", "report-density.png"}
    assert all(r["size_bytes"] > 0 and r["paper_bytes"] > 0 for r in page["runs"])


def test_another_spec_under_the_same_name_is_refused(synthetic_ts, tmp_path):
    out = tmp_path / "out"
    spec = parse_spec({**small_spec(synthetic_ts), "grid": {"seed": [0]}, "name": "s"}, "a.yaml")
    run_sweep(spec, out)
    other = parse_spec({**small_spec(synthetic_ts), "grid": {"seed": [1]}, "name": "s"}, "b.yaml")
    with pytest.raises(ConfigError, match="holds another sweep"):
        run_sweep(other, out)
    with pytest.raises(ConfigError, match="created from another spec"):
        run_sweep(other, tmp_path / "elsewhere", storage_url=f"sqlite:///{out / 'study.db'}")


def test_a_search_with_seeds_scores_their_mean_in_a_journal_file(synthetic_ts, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    fixed = {k: v for k, v in SMALL.items() if k != "d_ff"}
    spec = parse_spec({"task": "classification", "data": str(synthetic_ts), "fixed": fixed, "seeds": [0, 1],
                       "search": {"lr": {"low": 1e-3, "high": 1e-2, "log": True}, "d_ff": [16, 32]},
                       "n_trials": 3, "name": "tpe"}, "spec.yaml")
    summary = run_sweep(spec, out, storage_url=f"journal:{out / 'study.log'}", workers=2)
    # Two workers may both start the last trial (a known race, in the closing note): n_trials is a floor.
    assert 3 <= summary["complete"] <= 4 and summary["finished"]
    results = read_results(storage_url=f"journal:{out / 'study.log'}", study_name="tpe")
    assert len(results.records) == 2 * summary["complete"]
    study = optuna.load_study(study_name="tpe", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "study.log"))))
    for trial in study.trials:
        runs = trial.user_attrs["runs"]
        assert [r["seed"] for r in runs] == [0, 1]
        assert trial.value == pytest.approx(sum(r["val"]["accuracy"] for r in runs) / 2)
        assert 1e-3 <= trial.params["lr"] <= 1e-2


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)["model"]


def test_a_killed_workers_trial_is_resumed_from_its_checkpoint(synthetic_ts, tmp_path, capsys):
    """kill -9 in the middle of a trial; the next worker takes the trial over once its heartbeat is stale, resumes
    the run from its last checkpoint, and ends with the weights an uninterrupted run has, bit for bit."""
    epochs = 30
    options = {**SMALL, "epochs": epochs}
    spec = write_spec(tmp_path / "spec.yaml", {"task": "classification", "data": str(synthetic_ts), "fixed": options,
                                               "grid": {"seed": [0]}, "heartbeat_seconds": 1})
    out = tmp_path / "out"
    # One torch thread everywhere: the reference run below must add up its floats in the same order.
    worker = subprocess.Popen([sys.executable, "-m", "sbts", "sweep", str(spec), "--out", str(out), "--threads", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / TRIALS_DIR / "seed=0" / "log.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not log.is_file() or len(log.read_text().splitlines()) < 3):
        time.sleep(0.05)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    finished_before = len(log.read_text().splitlines())
    assert 3 <= finished_before < epochs and not (log.parent / "metrics.json").exists()

    time.sleep(4)  # past the grace period: 3 missed heartbeats of 1 s
    done = sbts(capsys, "sweep", str(spec), "--out", str(out), "--threads", "1")
    assert done.returncode == 0, done.stderr
    assert "resumed from its last checkpoint" in done.stderr
    assert json.loads(done.stdout)["complete"] == 1

    reference = tmp_path / "reference"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the sweep's trials (--threads 1): another thread count may round differently
    try:
        straight = sbts(capsys, "train", "classification", "--data", str(synthetic_ts), "--seed", "0", "--out",
                        str(reference), "--quiet", *flags)
    finally:
        torch.set_num_threads(threads)
    assert straight.returncode == 0, straight.stderr
    resumed, uninterrupted = _weights(log.parent), _weights(reference)
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)


def test_a_run_killed_before_its_first_checkpoint_starts_over(synthetic_ts, tmp_path):
    out = tmp_path / "out"
    spec = parse_spec({**small_spec(synthetic_ts), "grid": {"seed": [0]}}, "spec.yaml")
    leftover = out / TRIALS_DIR / "seed=0"
    leftover.mkdir(parents=True)
    (leftover / "config.json").write_text("{}")
    assert run_sweep(spec, out)["complete"] == 1
    assert (leftover / "metrics.json").is_file()


def test_retry_running_takes_over_trials_of_dead_workers_in_a_journal(synthetic_ts, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    url = f"journal:{out / 'study.log'}"
    spec = parse_spec({**small_spec(synthetic_ts), "grid": {"seed": [0]}, "name": "j"}, "spec.yaml")
    from sbts.sweep.study import open_storage, open_study

    study = open_study(spec, open_storage(url, spec.heartbeat_seconds))
    trial = study.ask()  # a worker that died holding it: a journal has no heartbeat to tell
    trial.suggest_categorical("seed", [0])
    assert run_sweep(spec, out, storage_url=url)["complete"] == 0  # nothing startable: the cell is running
    summary = run_sweep(spec, out, storage_url=url, take_over_running=True)
    assert summary["complete"] == 1 and summary["finished"]


@pytest.mark.skipif(not os.environ.get("SBTS_TEST_POSTGRES_URL"),
                    reason="no PostgreSQL server (.ci/run starts one and sets SBTS_TEST_POSTGRES_URL)")
def test_two_machines_share_one_postgresql_study(synthetic_ts, tmp_path, capsys):
    """Two separate sbts sweep invocations (two machines, each its own disk) against one PostgreSQL study: every
    cell runs once between them, and the report read from the study has them all."""
    url = os.environ["SBTS_TEST_POSTGRES_URL"]
    name = f"two-machines-{os.getpid()}-{time.time_ns()}"
    spec = write_spec(tmp_path / "spec.yaml", {**small_spec(synthetic_ts), "name": name})
    machines = [subprocess.Popen([sys.executable, "-m", "sbts", "sweep", str(spec), "--out", str(tmp_path / f"m{i}"),
                                  "--storage", url, "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for i in range(2)]
    outputs = [machine.communicate(timeout=300) for machine in machines]
    assert all(machine.returncode == 0 for machine in machines), outputs
    ran = [sorted(p.name for p in (tmp_path / f"m{i}" / TRIALS_DIR).iterdir() if p.is_dir()) for i in range(2)]
    assert sorted(ran[0] + ran[1]) == sorted(set(ran[0] + ran[1])) and len(ran[0] + ran[1]) == 4, (ran, outputs)
    report = sbts(capsys, "report", "--storage", url, "--study", name, "-o", str(tmp_path / "page.md"))
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["runs"] == 4


# --- the report ---------------------------------------------------------------------------------------------

def test_pareto_front_keeps_what_nothing_beats():
    points = [(100, 0.5, "a"), (200, 0.7, "b"), (150, 0.4, "c"), (300, 0.7, "d"), (400, 0.9, "e")]
    assert pareto_front(points, ReportedMetric("accuracy", MAXIMIZE, "")) == ["a", "b", "e"]
    assert pareto_front(points, ReportedMetric("mse", MINIMIZE, "")) == ["a", "c"]


def test_report_errors_are_one_line(tmp_path, capsys):
    assert "not a sweep directory" in sbts(capsys, "report", str(tmp_path)).stderr
    done = sbts(capsys, "report", "--storage", f"sqlite:///{tmp_path / 'none.db'}", "--study", "x", "-o",
                str(tmp_path / "r.md"))
    assert done.returncode == 2 and "no such SQLite file" in done.stderr
    with pytest.raises(ConfigError, match="name it"):
        write_report(tmp_path, output=tmp_path / "r.txt")


# --- the shipped sweeps ---------------------------------------------------------------------------------------

def test_reproduce_lists_the_shipped_sweeps(capsys):
    done = sbts(capsys, "reproduce", "--list")
    assert done.returncode == 0
    for name in ("paper-classification", "paper-anomaly", "paper-forecasting", "benchmark-classification"):
        assert name in named_sweeps() and f"{name}: " in done.stdout
        assert named_spec_path(name, quick=True).is_file()
    assert "no shipped sweep named" in sbts(capsys, "reproduce", "paper-regression").stderr
    assert json.loads(sbts(capsys, "reproduce", "--list", "--json").stdout) == named_sweeps()
    assert json.loads(sbts(capsys, "models", "--json").stdout) == ["dense", "sbt"]


@pytest.mark.data
@pytest.mark.parametrize("name", sorted(named_sweeps()))
@pytest.mark.parametrize("quick", [False, True])
def test_every_shipped_sweep_resolves_on_the_real_data(name, quick):
    real_data_dir()
    spec = read_spec(named_spec_path(name, quick=quick))
    assert check_runs(spec) >= len(spec.cells)


@pytest.mark.data
def test_the_readme_sweep_runs(tmp_path, monkeypatch, capsys):
    """The README's smallest spec and its two commands, as written (on JapaneseVowels)."""
    real_data_dir()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    spec = next(block for block in re.findall(r"```yaml\n(.*?)```", readme, flags=re.S) if "grid:" in block)
    wanted = ("sbts sweep spec.yaml --out sweeps/jv --workers 2", "sbts report sweeps/jv ")
    commands = [line.split("#")[0].split() for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
                for line in block.splitlines() if line.startswith(wanted) and "--storage" not in line]
    assert [argv[1] for argv in commands] == ["sweep", "report"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(spec)
    for argv in commands:
        done = sbts(capsys, *argv[1:])
        assert done.returncode == 0, done.stderr
    page = json.loads((tmp_path / "sweeps" / "jv" / "report.json").read_text())
    assert len(page["runs"]) == 4 and {r["density"] for r in page["runs"]} == {0.5, 0.25}
    assert (tmp_path / "sweeps" / "jv" / "report.md").read_text().count("| SBT d=") == 2


def test_a_trial_can_train_under_torchrun(synthetic_ts, tmp_path):
    """nproc_per_node: 2 trains each trial's run with DDP (gloo, 2 CPU processes), rank 0 its only writer."""
    fixed = {**SMALL, "norm": "layer", "device": "cpu"}
    spec = parse_spec({**small_spec(synthetic_ts), "fixed": fixed, "grid": {"seed": [0]}, "nproc_per_node": 2},
                      "spec.yaml")
    summary = run_sweep(spec, tmp_path / "out", threads=2)
    assert summary["complete"] == 1
    run_dir = tmp_path / "out" / TRIALS_DIR / "seed=0"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["environment"]["processes"] == 2
    assert len((run_dir / "log.jsonl").read_text().splitlines()) == SMALL["epochs"]


def test_a_forecasting_report_shows_the_baselines_of_every_run(tmp_path):
    """The report's baseline rows are the runs' own baselines (forecasting: persistence, window mean, ridge), and
    its metric columns are the task's (test MSE first, lower is better on the Pareto front)."""
    from test_forecasting_task import synthetic_series, write_csv

    data = write_csv(tmp_path / "series.csv", synthetic_series())
    spec = parse_spec({"task": "forecasting", "data": str(data), "variants": [{"model": "dense"}, {"model": "sbt"}],
                       "fixed": {"d_model": 8, "n_heads": 2, "d_ff": 16, "window": 12, "epochs": 1, "stride": 3,
                                 "batch_size": 32}, "grid": {"seed": [0]}}, "f.yaml")
    out = tmp_path / "out"
    run_sweep(spec, out)
    written = write_report(out)
    page = json.loads(written.json.read_text())
    table = page["datasets"][next(iter(page["datasets"]))]
    assert [row["model"] for row in table["rows"]] == ["dense", "SBT d=0.5"]
    runs = _run_metrics(out)
    for name in ("persistence", "window_mean", "ridge"):
        assert sorted(table["baselines"][name]["mse"]) == sorted(m["baselines"][name]["test"]["mse"]
                                                                for m in runs.values())
    markdown = written.markdown.read_text()
    assert "| baseline: ridge | 2 |" in markdown and "test MSE (scaled)" in markdown


@pytest.mark.parametrize("flag, value", [("--workers", "0"), ("--threads", "0")])
def test_worker_and_thread_counts_below_one_are_one_line(synthetic_ts, tmp_path, capsys, flag, value):
    path = write_spec(tmp_path / "spec.yaml", small_spec(synthetic_ts))
    done = sbts(capsys, "sweep", str(path), "--out", str(tmp_path / "out"), flag, value)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and f"{flag} must be an integer >= 1" in done.stderr
    assert not (tmp_path / "out").exists()
