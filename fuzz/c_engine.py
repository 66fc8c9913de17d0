"""Fuzz the generated C engine (``sbts export --format c``) under AddressSanitizer and UndefinedBehaviorSanitizer.

    python fuzz/c_engine.py --seconds 60 --seed 1             # at length: seeded random inputs (gcc), 60 s per kind
    python fuzz/c_engine.py --engine libfuzzer --seconds 60   # coverage-guided (clang's libFuzzer), 60 s per kind
    python fuzz/c_engine.py --seconds 2 --seed 0 --no-save --parallel 2   # briefly, as CI does
                                                              # (tests/test_fuzz_c_engine.py)
    python fuzz/c_engine.py --replay                          # only replay the kept crashers
    python fuzz/c_engine.py --list                            # the model kinds

For each model kind (``KINDS``: a small random model of each task and network, from ``artifact_for`` in
tests/test_c_export.py, in one of the weight forms) the generated ``sbts.h`` and ``sbts.c`` are built into
``fuzz/build/c-engine/KIND/`` with ``fuzz/c_engine_harness.c`` (it includes the engine; its comment lists the
contract it checks and its input format), with ``-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all``
and the export's strict warnings (``sbts.export.c_build.STRICT_FLAGS``). ``--seconds`` is per kind: every
kind runs that long, one after the other. The random engine (the harness's own main: gcc or clang, no libFuzzer
needed) runs seeded random byte strings; ``--engine libfuzzer`` builds with ``-fsanitize=fuzzer`` and grows a
corpus in ``fuzz/corpus/c-engine/KIND/`` (kept out of git). A kind stops at its first crash: a sanitizer report,
a contract violation (the harness aborts), a hang (``--input-seconds`` an input) or a leak. The crasher is
minimised (bytes cut while it still fails the same way; libFuzzer's ``-minimize_crash``) and written to
``fuzz/regressions/c-engine/KIND/`` unless ``--no-save``; every kept crasher of a kind is replayed before that
kind is fuzzed, and one that fails again counts as a crash. The last line printed is a JSON summary: per kind,
inputs (executions), engine calls, seconds, crashes, replayed crashers and the harness's counters; then the
totals. Exit code 1 when anything crashed.

``--sabotage NAME`` builds a deliberately broken engine (``SABOTAGES``), to show that the harness catches it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from run import save_regression  # noqa: E402  # fuzz/run.py: crashers kept as the Python targets' are

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent
HARNESS = FUZZ / "c_engine_harness.c"
REGRESSIONS = FUZZ / "regressions" / "c-engine"
BUILD = FUZZ / "build" / "c-engine"  # kept out of git (.gitignore)
CORPUS = FUZZ / "corpus" / "c-engine"  # libFuzzer's, kept out of git
SANITIZE = ("-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all")
LIBFUZZER = ("-O1", "-g", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all", "-DSBTS_LIBFUZZER")
INPUT_SECONDS = 5  # an input that takes longer is a hang
MINIMISE_SECONDS = 120  # at most this long cutting a crasher down (random engine)
LIBFUZZER_MINIMISE_SECONDS = 30  # libFuzzer's -minimize_crash runs until its time is up
MAX_INPUT_BYTES = 4096  # the harness's FUZZ_MAX_INPUT
SEED_INPUTS = 16  # random byte strings a new libFuzzer corpus starts from


class Kind(NamedTuple):
    task: str
    model_name: str
    form: str  # the weight form (a dense model's linears are floats whatever it is)
    fields: dict
    state: dict | None = None  # the inference state; None: test_c_export.STATES[task]

    @property
    def streams(self) -> bool:
        """Whether the engine has a stream: Step-T detectors and forecasters without a linear path."""
        return self.task != "classification" and self.fields.get("linear_path", "none") == "none"


KINDS = {
    "classification-dense-qkv_mask-batch-learnable": Kind(
        "classification", "dense", "ternary", dict(attention="qkv_mask", norm="batch", pos_encoding="learnable")),
    "classification-sbt-full-batch-sinusoidal-lists": Kind(
        "classification", "sbt", "lists", dict(attention="full", norm="batch", pos_encoding="sinusoidal")),
    "classification-sbt-step_t-layer_time-none-mask": Kind(  # fixed length, and Step-T wants a past step
        "classification", "sbt", "mask", dict(attention="step_t", norm="layer_time", pos_encoding="none")),
    "classification-sbt-full-layer-rope-lists-67": Kind(  # windows of up to three blocks of steps (ROW_BLOCK 32)
        "classification", "sbt", "lists", dict(attention="full", norm="layer", pos_encoding="rope", max_len=67)),
    "anomaly-sbt-step_t-layer-rope-ternary": Kind(
        "anomaly", "sbt", "ternary", dict(attention="step_t", norm="layer", pos_encoding="rope")),
    "anomaly-sbt-step_t-layer-rope-mask": Kind(
        "anomaly", "sbt", "mask", dict(attention="step_t", norm="layer", pos_encoding="rope")),
    "anomaly-sbt-step_t_self-batch-rope-lists": Kind(  # the stream's self slot over the ring's mirror
        "anomaly", "sbt", "lists", dict(attention="step_t", step_t_self=True, norm="batch", pos_encoding="rope")),
    "forecasting-sbt-step_t-none-rope-change-lists": Kind(
        "forecasting", "sbt", "lists", dict(attention="step_t", norm="none", pos_encoding="rope"),
        {"formulation": {"target": "change", "input_norm": "none"}, "columns": ["a", "b", "c"]}),
    "forecasting-sbt-step_t_self-layer-none-value-ternary": Kind(
        "forecasting", "sbt", "ternary", dict(attention="step_t", step_t_self=True, norm="layer", pos_encoding="none",
                                              head_activation="relu"),
        {"formulation": {"target": "value", "input_norm": "none"}, "columns": ["a", "b", "c"]}),
    "forecasting-sbt-step_t-layer-rope-change-h3-mask": Kind(  # 3 steps ahead: out is SBTS_OUT_DIM = 3 x 3 values
        "forecasting", "sbt", "mask", dict(attention="step_t", norm="layer", pos_encoding="rope"),
        {"formulation": {"target": "change", "input_norm": "none", "horizon": 3}, "columns": ["a", "b", "c"]}),
    "forecasting-sbt-step_t-layer_time-joint_path-window-h3-lists": Kind(  # the path reads the whole window: no stream
        "forecasting", "sbt", "lists", dict(attention="step_t", norm="layer_time", linear_path="joint"),
        {"formulation": {"target": "change", "input_norm": "window", "horizon": 3}, "columns": ["a", "b", "c"]}),
    "forecasting-dense-full-batch-shared_path-h3-mask": Kind(
        "forecasting", "dense", "mask", dict(attention="full", norm="batch", linear_path="shared"),
        {"formulation": {"target": "change", "input_norm": "none", "horizon": 3}, "columns": ["a", "b", "c"]}),
}

# Deliberately broken engines: (what the generated sbts.c has, what it gets instead, the kinds it applies to).
SABOTAGES = {
    "over-read": ("const float raw = x[(long)row * IN_CH + c];", "const float raw = x[(long)row * IN_CH + c + 1];",
                  "every value read one float on: the last one past the rows"),
    "write-on-error": ("int sbts_forward(const float *x, int n_steps, float *out)\n{",
                       "int sbts_forward(const float *x, int n_steps, float *out)\n{\n    out[0] = 0.0f;",
                       "out written before the checks"),
    "stale-mirror": ("keys[c * 2 * CACHE + slot] = keys[c * 2 * CACHE + slot + CACHE] = turned[c];",
                     "keys[c * 2 * CACHE + slot] = turned[c];",
                     "the key ring's mirror never written: a window past the wrap-around reads stale keys"),
    "padding-read": ("for (t = 0; t < n_steps; ++t) total += arena.h[c * STRIDE(n_steps) + t];",
                     "for (t = 0; t <= n_steps; ++t) total += arena.h[c * STRIDE(n_steps) + t];",
                     "a classifier's pooling reads one padding step"),
    "first-step-only": ("for (o = 0; o < NET_OUT; ++o) {", "for (o = 0; o < IN_CH; ++o) {",
                        "a forecaster writes the first of its steps ahead only"),
    "step-as-variable": ("const int c = o % IN_CH;", "const int c = o;",
                         "a forecaster's out[k * IN_CH + c] scaled as variable k * IN_CH + c, past its scaling"),
}


def generated_sources(name: str, sabotage: str | None = None) -> tuple[str, str]:
    """The header and source of kind ``name``'s model (the source broken by ``sabotage`` when given)."""
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))
    from test_c_export import artifact_for  # noqa: E402  (a test helper: the small random models of the C tests)

    from sbts.export.c_source import c_sources

    kind = KINDS[name]
    generated = c_sources(artifact_for(kind.task, kind.model_name, kind.state, **kind.fields), kind.form)
    source = generated.source
    if sabotage is not None:
        old, new, _ = SABOTAGES[sabotage]
        if old not in source:
            raise SystemExit(f"sabotage {sabotage}: the engine of {name} has no {old!r}")
        source = source.replace(old, new)
    return generated.header, source


def default_compiler(engine: str) -> str | None:
    if engine == "libfuzzer":
        return shutil.which("clang")
    from sbts.export.c_build import find_compiler

    return find_compiler()


def compile_harness(directory: Path, compiler: str, engine: str, defines: tuple[str, ...] = ()) -> Path:
    """Build the harness against the sbts.h and sbts.c in ``directory``; SystemExit with the compiler's words."""
    from sbts.export.c_build import STRICT_FLAGS

    binary = directory / "harness"
    command = [compiler, *STRICT_FLAGS, *(LIBFUZZER if engine == "libfuzzer" else SANITIZE),
               *(f"-D{d}" for d in defines), "-I", str(directory), "-o", str(binary), str(HARNESS), "-lm"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"building the harness failed: {' '.join(command)}\n{done.stderr[:4000]}")
    return binary


def write_sources(name: str, directory: Path, sabotage: str | None = None) -> None:
    header, source = generated_sources(name, sabotage)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sbts.h").write_text(header)
    (directory / "sbts.c").write_text(source)


def build(name: str, directory: Path, compiler: str, engine: str = "random", sabotage: str | None = None,
          defines: tuple[str, ...] = ()) -> Path:
    """Generate kind ``name``'s engine into ``directory`` and build the harness there."""
    write_sources(name, directory, sabotage)
    return compile_harness(directory, compiler, engine, defines)


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:handle_abort=1:allocator_may_return_null=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    return env


PATTERNS = [
    (r"==sbts-fuzz== contract violated: ([\w-]+): ?(.*)", "contract"),
    (r"ERROR: AddressSanitizer: ([\w-]+)", "AddressSanitizer"),
    (r"ERROR: LeakSanitizer: (detected memory leaks)", "LeakSanitizer"),
    (r"(\S+:\d+):\d+: runtime error: (.*)", "UndefinedBehaviorSanitizer"),
    (r"ERROR: libFuzzer: ([\w-]+)", "libFuzzer"),
]


def problem_of(output: str, returncode: int) -> str | None:
    """None for a clean run, else 'WHAT: KIND: detail' from the sanitizer's or the harness's report (for a
    sanitizer's, the access and the innermost frame)."""
    for pattern, what in PATTERNS:
        found = re.search(pattern, output)
        if found:
            if len(found.groups()) > 1:
                detail = found.group(2)
            else:
                access = re.search(r"(READ|WRITE) of size \d+", output)
                frame = re.search(r"#0 0x[0-9a-f]+ in (\S+) (\S+)", output)
                detail = " ".join(filter(None, [access and access.group(0), frame and f"in {frame.group(1)} "
                                                f"{Path(frame.group(2)).name}"]))
            return f"{what}: {found.group(1)}: {detail.strip()[:160]}".rstrip(": ")
    return None if returncode == 0 else f"exit: {returncode}: no report"


def problem_key(problem: str) -> str:
    """What a minimised input must still fail with: the report's kind (the rule, the sanitizer's error)."""
    return ":".join(problem.split(":")[:2])


def stats_of(output: str) -> dict[str, float]:
    stats = {}
    for key, value in re.findall(r"stat::(\w+):\s*([-\d.e+]+)", output):
        stats[key] = float(value) if "." in value or "e" in value else int(value)
    return stats


def replay(binary: Path, files: list[Path], seconds: float = INPUT_SECONDS) -> str | None:
    """The problem replaying ``files`` (None: each meets the contract)."""
    try:
        done = subprocess.run([str(binary), f"-timeout={max(1, int(seconds))}", *map(str, files)], capture_output=True,
                              text=True, env=environment(), timeout=60 + seconds * len(files))
    except subprocess.TimeoutExpired:
        return "hang: replay: past its time limit"
    return problem_of(done.stderr, done.returncode)


def minimise(binary: Path, data: bytes, problem: str, seconds: float) -> bytes:
    """Cut chunks of ``data`` while it still fails with the same kind of problem (at most MINIMISE_SECONDS)."""
    key, deadline = problem_key(problem), time.monotonic() + MINIMISE_SECONDS
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "candidate"

        def fails(candidate: bytes) -> bool:
            path.write_bytes(candidate)
            found = replay(binary, [path], seconds)
            return found is not None and problem_key(found) == key

        chunk = max(1, len(data) // 2)
        while chunk >= 1 and time.monotonic() < deadline:
            start, cut = 0, False
            while start < len(data) and time.monotonic() < deadline:
                candidate = data[:start] + data[start + chunk:]
                if fails(candidate):
                    data, cut = candidate, True
                else:
                    start += chunk
            if not cut:
                chunk //= 2
    return data


def run_random(binary: Path, seconds: float, seed: int, input_seconds: float, workdir: Path) -> dict:
    crash_file = workdir / "crash"
    crash_file.unlink(missing_ok=True)
    start = time.perf_counter()
    command = [str(binary), f"-seed={seed}", f"-seconds={seconds}", f"-timeout={max(1, int(input_seconds))}",
               f"-crash_file={crash_file}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=environment(),
                              timeout=seconds + 60 + input_seconds)
        output, problem = done.stderr, problem_of(done.stderr, done.returncode)
    except subprocess.TimeoutExpired as exc:
        output = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        problem = "hang: the harness ran past its time limit"
    data = crash_file.read_bytes() if problem and crash_file.exists() else None
    return {"output": output, "problem": problem, "data": data, "seconds": time.perf_counter() - start}


def run_libfuzzer(binary: Path, seconds: float, seed: int, input_seconds: float, workdir: Path, corpus: Path,
                  extra_corpora: list[Path]) -> dict:
    artifacts = workdir / "artifacts"
    shutil.rmtree(artifacts, ignore_errors=True)
    artifacts.mkdir(parents=True)
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):  # a new corpus starts from a few random byte strings
        rng = random.Random(seed)
        for i in range(SEED_INPUTS):
            (corpus / f"seed-{i}").write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(8, 512))))
    command = [str(binary), str(corpus), *map(str, extra_corpora), f"-max_total_time={max(1, int(seconds))}",
               f"-timeout={max(1, int(input_seconds))}", f"-artifact_prefix={artifacts}/", "-print_final_stats=1",
               f"-max_len={MAX_INPUT_BYTES}", "-rss_limit_mb=2048", *([f"-seed={seed}"] if seed > 0 else [])]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=environment(),
                              timeout=seconds + 120 + input_seconds)
        output = done.stderr
        problem = problem_of(output, done.returncode)
    except subprocess.TimeoutExpired as exc:
        output = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        problem = "hang: libFuzzer ran past its time limit"
    written = re.findall(r"Test unit written to (\S+)", output)
    data = Path(written[-1]).read_bytes() if problem and written and Path(written[-1]).exists() else None
    return {"output": output, "problem": problem, "data": data, "seconds": time.perf_counter() - start}


def minimise_libfuzzer(binary: Path, data: bytes, input_seconds: float) -> bytes:
    with tempfile.TemporaryDirectory() as scratch:
        crash, smaller = Path(scratch) / "crash", Path(scratch) / "minimised"
        crash.write_bytes(data)
        subprocess.run([str(binary), "-minimize_crash=1", f"-max_total_time={LIBFUZZER_MINIMISE_SECONDS}",
                        f"-timeout={max(1, int(input_seconds))}", f"-exact_artifact_path={smaller}", str(crash)],
                       capture_output=True, env=environment(), timeout=LIBFUZZER_MINIMISE_SECONDS + 120)
        return smaller.read_bytes() if smaller.exists() else data


def kept_crashers(name: str, regressions: Path = REGRESSIONS) -> list[Path]:
    folder = regressions / name
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def fuzz_kind(name: str, binary: Path, args: argparse.Namespace) -> dict:
    """Replay kind ``name``'s kept crashers, then fuzz it for args.seconds; its part of the summary."""
    workdir = binary.parent
    kept = kept_crashers(name, args.regressions)
    result = {"inputs": 0, "calls": 0, "seconds": 0.0, "crashes": 0, "replayed": len(kept), "problem": None,
              "saved": None, "stats": {}}
    if kept and replay(binary, kept, args.input_seconds) is not None:  # one run for all; then find which
        failing = [(p, found) for p in kept if (found := replay(binary, [p], args.input_seconds)) is not None]
        result.update(crashes=len(failing), problem=f"a kept crasher fails again: {failing[0][0].name}: "
                      f"{failing[0][1]}" if failing else "the kept crashers fail together, none alone")
        result["crashes"] = max(1, result["crashes"])
        return result
    if args.replay:
        return result
    if args.engine == "libfuzzer":
        run = run_libfuzzer(binary, args.seconds, args.seed, args.input_seconds, workdir, CORPUS / name,
                            [args.regressions / name] if kept else [])
    else:
        run = run_random(binary, args.seconds, args.seed, args.input_seconds, workdir)
    stats = stats_of(run["output"])
    result.update(inputs=stats.get("number_of_executed_units", stats.get("sbts_inputs", 0)),
                  calls=stats.get("sbts_calls", 0), seconds=round(run["seconds"], 1),
                  stats={k[5:]: v for k, v in stats.items() if k.startswith("sbts_")})
    coverage = re.findall(r"#\d+\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)", run["output"])
    if coverage:  # libFuzzer's last word: edges and features covered, corpus size
        result["coverage"] = dict(zip(("edges", "features", "corpus"), map(int, coverage[-1])))
    if run["problem"]:
        result.update(crashes=1, problem=run["problem"])
        print(f"crash in {name}: {run['problem']}", file=sys.stderr)
        print("\n".join(run["output"].splitlines()[-40:]), file=sys.stderr)
        if run["data"] is not None and not args.no_save:
            data = (minimise_libfuzzer(binary, run["data"], args.input_seconds) if args.engine == "libfuzzer"
                    else minimise(binary, run["data"], run["problem"], args.input_seconds))
            result["saved"] = str(save_regression(name, data, args.regressions))
    return result


def build_all(names: list[str], build_dir: Path, compiler: str, engine: str, sabotage: str | None, jobs: int,
              defines: tuple[str, ...] = ()) -> dict[str, Path]:
    """Every kind's harness: sources generated here, compiled ``jobs`` at a time."""
    for name in names:
        write_sources(name, build_dir / name, sabotage)
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        return dict(zip(names, pool.map(lambda name: compile_harness(build_dir / name, compiler, engine, defines),
                                        names)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["random", "libfuzzer"], default="random")
    parser.add_argument("--compiler", help="the C compiler (random: gcc, cc or clang, the first found; "
                                           "libfuzzer: clang)")
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS), metavar="KIND",
                        help="the model kinds (default: all; --list names them)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz each kind")
    parser.add_argument("--seed", type=int, default=0, help="the inputs' seed (libFuzzer: 0 lets it choose)")
    parser.add_argument("--input-seconds", type=float, default=INPUT_SECONDS, help="an input's time limit")
    parser.add_argument("--no-save", action="store_true", help="do not write crashers to fuzz/regressions/c-engine")
    parser.add_argument("--replay", action="store_true", help="only replay the kept crashers")
    parser.add_argument("--build-dir", type=Path, default=BUILD, help="where the harnesses are built")
    parser.add_argument("--regressions", type=Path, default=REGRESSIONS, help="where crashers are kept, per kind")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compilers run at once")
    parser.add_argument("--parallel", type=int, default=1, help="kinds fuzzed at once (each for --seconds)")
    parser.add_argument("--define", action="append", default=[], metavar="NAME=VALUE",
                        help="a macro for the harness, e.g. FUZZ_MODERATE=1e6 (the bounds of its rules)")
    parser.add_argument("--sabotage", choices=list(SABOTAGES), help="build a deliberately broken engine")
    parser.add_argument("--list", action="store_true", help="print the model kinds and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, kind in KINDS.items():
            print(name, kind.form, json.dumps(kind.fields))
        return 0
    compiler = args.compiler or default_compiler(args.engine)
    if compiler is None:
        raise SystemExit("no C compiler found" + (" (libFuzzer needs clang)" if args.engine == "libfuzzer" else ""))
    start = time.perf_counter()
    binaries = build_all(args.kinds, args.build_dir, compiler, args.engine, args.sabotage, args.jobs,
                         tuple(args.define))
    built = time.perf_counter() - start
    with ThreadPoolExecutor(max(1, args.parallel)) as pool:  # each kind's run is a subprocess
        kinds = dict(zip(binaries, pool.map(lambda item: fuzz_kind(*item, args), binaries.items())))
    summary = {
        "engine": args.engine, "compiler": Path(compiler).name, "seconds_per_kind": args.seconds, "seed": args.seed,
        "sabotage": args.sabotage, "kinds": kinds, "inputs": sum(k["inputs"] for k in kinds.values()),
        "calls": sum(k["calls"] for k in kinds.values()), "crashes": sum(k["crashes"] for k in kinds.values()),
        "problems": sorted({f"{name}: {k['problem']}" for name, k in kinds.items() if k["problem"]}),
        "replayed": sum(k["replayed"] for k in kinds.values()), "build_seconds": round(built, 1),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(summary))
    return 1 if summary["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
