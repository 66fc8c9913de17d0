"""A sweep as an Optuna study: its storage, its sampler, the objective, and the workers that pull trials.

Optuna does the bookkeeping: the study lives in a storage (an SQLite file beside the sweep's output by
default; any Optuna storage URL, PostgreSQL among them, or ``journal:FILE`` for Optuna's journal file), every
worker on every machine pulls the next trial from it, a grid is Optuna's ``GridSampler`` and a search its TPE
sampler. A running trial's heartbeat (RDB storages) lets a later worker fail a trial whose worker was killed;
Optuna's ``RetryFailedTrialCallback`` queues it again with the same parameters, so the next worker resumes its
run directory from the last checkpoint (``sbts.sweep.trials``).

A worker stops when the sweep is finished or nothing is left to start (what remains runs in other workers).
"""

from __future__ import annotations

import functools
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from sbts.atomic import atomic_write_bytes, read_json
from sbts.errors import ConfigError, SBTSError, one_line
from sbts.sweep.spec import DEFAULT_HEARTBEAT_SECONDS, SEED_OPTION, SearchRange, SweepSpec, check_runs, parse_spec
from sbts.sweep.trials import TRIALS_DIR, run_trial_run
from sbts.tasks import get_task

try:
    import optuna
except ImportError:  # the ``sweep`` extra
    optuna = None

STUDY_DB = "study.db"  # the default storage: an SQLite file in the sweep's output directory
SWEEP_RECORD = "sweep.json"  # what the output directory records of its sweep (for sbts report)
JOURNAL_PREFIX = "journal:"
SPEC_ATTR, RUNS_ATTR = "sbts_spec", "runs"  # study and trial user attributes
HEARTBEAT_GRACE = 3  # heartbeats missed before a running trial counts as dead
MAX_RETRIES = 3  # times a trial whose worker died is queued again (a trial that kills its worker stops there)
SQLITE_TIMEOUT_SECONDS = 60  # workers of one machine wait this long for SQLite's write lock
GRID_SAMPLER_SEED = 0
# Two machines opening a new PostgreSQL storage at once race to create its tables (a duplicate-key error for
# the loser); the tables exist once the winner is done, so the loser opens it again.
STORAGE_OPEN_ATTEMPTS = 5
STORAGE_RETRY_SECONDS = 1.0


def require_optuna() -> None:
    if optuna is None:
        raise ConfigError("sweeps need Optuna: pip install 'sbts[sweep]'")


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / STUDY_DB).resolve()}"


def redacted(url: str) -> str:
    """The URL without its password (what files and messages show)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _retry():
    """Optuna's callback that queues a trial again with its parameters (and its grid cell)."""
    return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)


def _quiet(function: Callable) -> Callable:
    """Optuna's heartbeat and stale-trial functions are marked experimental: sbts uses them on purpose."""
    @functools.wraps(function)
    def quiet(*args, **kwargs):
        require_optuna()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return function(*args, **kwargs)
    return quiet


def open_storage(url: str, heartbeat_seconds: int):
    """An Optuna storage for ``url``; an unreachable or malformed one is a one-line error naming it."""
    require_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    shown = redacted(url)
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url[len(JOURNAL_PREFIX):].removeprefix("//"))
        if not path.parent.is_dir():
            raise ConfigError(f"--storage {shown}: the folder {path.parent} does not exist")
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(path)))
    engine = {"connect_args": {"timeout": SQLITE_TIMEOUT_SECONDS}} if url.startswith("sqlite") else {}
    from sqlalchemy.exc import IntegrityError

    try:
        for attempt in range(1, STORAGE_OPEN_ATTEMPTS + 1):
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat_seconds,
                                                  grace_period=HEARTBEAT_GRACE * heartbeat_seconds,
                                                  heartbeat_stale_trial_callback=_retry())
            except IntegrityError:
                if attempt == STORAGE_OPEN_ATTEMPTS:
                    raise
                time.sleep(STORAGE_RETRY_SECONDS)
    except ImportError as exc:
        raise ConfigError(f"--storage {shown}: needs a database driver ({exc.name or exc}); "
                          "pip install 'sbts[sweep]'") from None
    except Exception as exc:  # SQLAlchemy raises many types for a bad URL or an unreachable server
        reason = one_line(getattr(exc, "orig", None) or exc)[:200]
        raise ConfigError(f"--storage {shown}: cannot open the storage ({reason})") from None


def _sampler(spec: SweepSpec):
    if spec.is_grid:
        return optuna.samplers.GridSampler(spec.grid, seed=GRID_SAMPLER_SEED)
    # constant_liar: parallel workers do not all propose the point the running trials are about to score
    return optuna.samplers.TPESampler(constant_liar=True)


def open_study(spec: SweepSpec, storage):
    """The sweep's study (created by the first worker); one created from another spec is refused."""
    study = optuna.create_study(study_name=spec.name, storage=storage, sampler=_sampler(spec),
                                direction=get_task(spec.task).validation_objective.goal, load_if_exists=True)
    recorded = study.user_attrs.get(SPEC_ATTR)
    if recorded is None:
        study.set_user_attr(SPEC_ATTR, spec.document)
    elif recorded != json.loads(json.dumps(spec.document)):
        raise ConfigError(f"{spec.source}: the study {spec.name!r} in this storage was created from another spec; "
                          "give this sweep another name (key name)")
    return study


def suggest(trial, spec: SweepSpec) -> dict[str, Any]:
    """A trial's parameters: a grid cell (GridSampler answers suggest_categorical) or TPE's proposal."""
    params = {axis: trial.suggest_categorical(axis, values) for axis, values in spec.grid.items()}
    for name, dimension in spec.search.items():
        if isinstance(dimension, SearchRange):
            suggest_number = trial.suggest_int if dimension.integer else trial.suggest_float
            params[name] = suggest_number(name, dimension.low, dimension.high, log=dimension.log)
        else:
            params[name] = trial.suggest_categorical(name, dimension)
    return params


@dataclass
class Progress:
    total: int  # cells of a grid, n_trials of a search
    complete: int
    running: int
    waiting: int
    failed_only: list[dict[str, Any]]  # grid cells whose every trial failed (retried when a sweep starts)
    untried: int  # grid cells no trial has taken

    @property
    def finished(self) -> bool:
        return self.complete >= self.total

    @property
    def startable(self) -> bool:
        return self.waiting > 0 or self.untried > 0


def _cell_key(params: dict[str, Any], axes: list[str]) -> tuple:
    return tuple(repr(params.get(axis)) for axis in axes)


def progress(study, spec: SweepSpec) -> Progress:
    states = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    if not spec.is_grid:
        count = {state: sum(t.state == state for t in trials) for state in states}
        untried = max(0, spec.n_trials - count[states.COMPLETE] - count[states.RUNNING] - count[states.WAITING])
        return Progress(spec.n_trials, count[states.COMPLETE], count[states.RUNNING], count[states.WAITING], [],
                        untried)
    axes = list(spec.grid)
    cells = {_cell_key(cell, axes): cell for cell in spec.cells}
    by_state: dict[Any, set[tuple]] = {state: set() for state in states}
    unnamed = 0  # running trials that have not yet drawn all their parameters: each holds a cell we cannot name
    for t in trials:
        key = _cell_key(t.params or t.system_attrs.get("fixed_params") or {}, axes)
        if key in cells:
            by_state[t.state].add(key)
        elif t.state == states.RUNNING:
            unnamed += 1
    complete = by_state[states.COMPLETE] & set(cells)
    waiting = by_state[states.WAITING] - complete
    running = by_state[states.RUNNING] - complete
    taken = complete | waiting | running | by_state[states.FAIL] | by_state[states.PRUNED]
    failed_only = [cells[key] for key in sorted((by_state[states.FAIL] | by_state[states.PRUNED]) & set(cells)
                                                 - complete - waiting - running)]
    return Progress(len(cells), len(complete), len(running) + unnamed, len(waiting), failed_only,
                    max(0, len(set(cells) - taken) - unnamed))


def _refuse_duplicate(trial, params: dict[str, Any], axes: list[str], log: Callable[[str], None]) -> None:
    """GridSampler may hand a cell to two workers at once (it says so); the later trial gives way (pruned)."""
    key = _cell_key(params, axes)
    states = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.COMPLETE)
    for other in trial.study.get_trials(deepcopy=False, states=states):
        if other.number < trial.number and _cell_key(other.params, axes) == key:
            log(f"trial {trial.number}: its cell is trial {other.number}'s; left to it")
            raise optuna.TrialPruned(f"the cell of trial {other.number}")


def _objective(spec: SweepSpec, out: Path, threads: int, log: Callable[[str], None]) -> Callable:
    task = get_task(spec.task)

    def objective(trial) -> float:
        params = suggest(trial, spec)
        if spec.is_grid:
            _refuse_duplicate(trial, params, list(spec.grid), log)
        seeds = [{}] if spec.is_grid else [{SEED_OPTION: seed} for seed in spec.seeds]
        start = time.perf_counter()
        records = [run_trial_run(spec, {**params, **seed}, out, threads, log) for seed in seeds]
        trial.set_user_attr(RUNS_ATTR, records)
        values = [record["val"][task.validation_objective.key] for record in records]
        value = statistics.mean(values)
        log(f"trial {trial.number} ({', '.join(r['run'] for r in records)}): {task.validation_objective.label} "
            f"{value:.4f} ({time.perf_counter() - start:.1f} s)")
        if not math.isfinite(value):
            raise SBTSError(f"trial {trial.number}: its validation {task.validation_objective.key} is {value}")
        return value
    return objective


def _logger(prefix: str) -> Callable[[str], None]:
    def log(message: str) -> None:
        print(f"sbts sweep: {prefix}{message}", file=sys.stderr, flush=True)
    return log


@_quiet
def work(document: dict[str, Any], source: str, name: str, out: str, storage_url: str, threads: int,
         worker: int | None) -> None:
    """One worker: pull trials from the study until the sweep is finished or nothing is left to start."""
    import torch  # the worker's own thread budget (restored after: a worker may run in its caller's process)

    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _pull_trials(parse_spec(document, source, name), Path(out), storage_url, threads,
                     _logger("" if worker is None else f"worker {worker}: "))
    finally:
        torch.set_num_threads(threads_before)


def _pull_trials(spec: SweepSpec, out: Path, storage_url: str, threads: int, log: Callable[[str], None]) -> None:
    study = open_study(spec, open_storage(storage_url, spec.heartbeat_seconds))
    objective = _objective(spec, out, threads, log)

    def report_failure(study, trial) -> None:
        if trial.state == optuna.trial.TrialState.FAIL:
            log(f"trial {trial.number} failed: {trial.system_attrs.get('fail_reason', 'see above')}")

    while True:
        optuna.storages.fail_stale_trials(study)  # a killed worker's trial, queued again with its parameters
        now = progress(study, spec)
        if now.finished or not now.startable:
            return
        study.optimize(objective, n_trials=1, catch=(SBTSError,), callbacks=[report_failure], gc_after_trial=True)


def _worker_entry(*args) -> None:
    try:
        work(*args)
    except SBTSError as exc:
        print(f"sbts: error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def _record(out: Path, spec: SweepSpec, storage_url: str) -> None:
    """``out/sweep.json``: the spec, the study and its storage (password left out), for sbts report."""
    path = out / SWEEP_RECORD
    record = {"study": spec.name, "task": spec.task, "storage": redacted(storage_url), "spec": spec.document,
              "spec_file": spec.source, "trials_dir": TRIALS_DIR}
    if path.is_file():
        existing = _sweep_record(out)
        if existing.get("study") != spec.name or existing.get("spec") != json.loads(json.dumps(spec.document)):
            raise ConfigError(f"{out}: holds another sweep (study {existing.get('study')!r}); choose a new --out")
        return
    atomic_write_bytes(path, json.dumps(record, indent=1).encode())


def retry_running(study) -> int:
    """Fail every running trial and queue it again (its worker is known dead: storages without a heartbeat)."""
    retry = _retry()
    count = 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if study._storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL):
            retry(study, study._storage.get_trial(trial._trial_id))
            count += 1
    return count


@_quiet
def run_sweep(spec: SweepSpec, out: str | Path, *, storage_url: str | None = None, workers: int = 1,
              threads: int | None = None, take_over_running: bool = False) -> dict[str, Any]:
    """Check the spec on its data, then run its trials in ``workers`` local processes (``threads`` torch threads
    each; default: the cores shared out) against the study in ``storage_url``. Returns the study's progress."""
    require_optuna()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be an integer >= 1, got {workers!r}")
    threads = max(1, (os.cpu_count() or 1) // workers) if threads is None else threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"--threads must be an integer >= 1, got {threads!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    checked = check_runs(spec)
    url = storage_url or default_storage(out)
    if storage_url is None:  # the SQLite file goes into it
        out.mkdir(parents=True, exist_ok=True)
    storage = open_storage(url, spec.heartbeat_seconds)
    out.mkdir(parents=True, exist_ok=True)
    _record(out, spec, url)
    study = open_study(spec, storage)
    log = _logger("")
    if take_over_running:
        log(f"{retry_running(study)} running trial(s) queued again (their workers taken as dead)")
    optuna.storages.fail_stale_trials(study)
    before = progress(study, spec)
    if before.finished:
        log(f"{spec.name}: all {before.total} trials complete in {redacted(url)}; nothing to do")
        return _summary(spec, url, out, before, checked)
    for cell in before.failed_only:
        study.enqueue_trial(cell)
    if before.failed_only:
        log(f"{len(before.failed_only)} failed trial(s) queued again")
    log(f"{spec.name}: {before.complete} of {before.total} trials complete; {workers} worker(s), {threads} torch "
        f"thread(s) each; study in {redacted(url)}")
    arguments = (spec.document, spec.source, spec.name, str(out), url, threads)
    if workers == 1:
        work(*arguments, None)
    else:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter each: no forked torch state
        processes = [context.Process(target=_worker_entry, args=(*arguments, index)) for index in range(workers)]
        for process in processes:
            process.start()
        try:
            for process in processes:
                process.join()
        except KeyboardInterrupt:
            for process in processes:
                process.join()
            raise
        failed = [index for index, process in enumerate(processes) if process.exitcode not in (0, None)]
        if failed:
            raise SBTSError(f"sweep worker(s) {', '.join(map(str, failed))} stopped with an error (see above)")
    return _summary(spec, url, out, progress(study, spec), checked)


def _summary(spec: SweepSpec, url: str, out: Path, now: Progress, checked: int) -> dict[str, Any]:
    return {"study": spec.name, "storage": redacted(url), "out": str(out), "trials": now.total,
            "complete": now.complete, "running_elsewhere": now.running, "waiting": now.waiting,
            "configurations_checked": checked, "finished": now.finished}


@dataclass
class StudyResults:
    """A study's finished runs (one record each, duplicates left out) and how its trials stand."""

    name: str
    storage: str  # redacted
    spec: SweepSpec
    records: list[dict[str, Any]]
    counts: dict[str, int]  # trials per state


def _reading_url(sweep_dir: Path | None, storage_url: str | None) -> str:
    if storage_url is not None:
        return storage_url
    if sweep_dir is None:
        raise ConfigError("report needs a sweep directory or --storage URL")
    if (sweep_dir / STUDY_DB).is_file():  # the default storage, wherever the directory has been moved
        return default_storage(sweep_dir)
    recorded = _sweep_record(sweep_dir).get("storage", "")
    if ":***@" in recorded:
        raise ConfigError(f"{sweep_dir / SWEEP_RECORD}: its storage URL is kept without the password; pass --storage")
    return recorded


def _sweep_record(sweep_dir: Path) -> dict[str, Any]:
    path = sweep_dir / SWEEP_RECORD
    record = read_json(path, "the sweep record", ConfigError,
                       missing=f"{sweep_dir}: not a sweep directory (no {SWEEP_RECORD})")
    if not isinstance(record, dict):
        raise ConfigError(f"{path}: not a sweep record")
    return record


@_quiet
def read_results(sweep_dir: str | Path | None = None, *, storage_url: str | None = None,
                 study_name: str | None = None) -> StudyResults:
    """The records of a sweep's complete trials, from its study (named by ``sweep_dir``'s sweep.json, or given)."""
    sweep_dir = None if sweep_dir is None else Path(sweep_dir)
    url = _reading_url(sweep_dir, storage_url)
    name = study_name or (_sweep_record(sweep_dir).get("study") if sweep_dir is not None else None)
    if not name:
        raise ConfigError("report needs the study's name (--study NAME)")
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        raise ConfigError(f"--storage {url}: no such SQLite file")
    storage = open_storage(url, DEFAULT_HEARTBEAT_SECONDS)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise ConfigError(f"no study {name!r} in {redacted(url)}") from None
    document = study.user_attrs.get(SPEC_ATTR)
    if document is None:
        raise ConfigError(f"study {name!r} in {redacted(url)} was not made by sbts sweep (it records no spec)")
    spec = parse_spec(document, f"study {name}", name)
    trials = study.get_trials(deepcopy=False)
    records, seen = [], set()
    for trial in trials:
        if trial.state == optuna.trial.TrialState.COMPLETE:
            for record in trial.user_attrs.get(RUNS_ATTR, []):
                if record["run"] not in seen:  # a duplicate of a grid cell run twice
                    seen.add(record["run"])
                    records.append(record)
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in optuna.trial.TrialState}
    return StudyResults(name, redacted(url), spec, records, counts)
