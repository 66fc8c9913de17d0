"""Fuzz one of sbts's readers: coverage-guided with atheris when it is installed, else seeded random mutation.

    python fuzz/run.py artifact-semantic --seconds 600          # at length (docs/benchmarks.md, reliability)
    python fuzz/run.py ts --engine atheris --seconds 600        # coverage-guided (pip install 'sbts[fuzz]')
    python fuzz/run.py table --seconds 3 --seed 0               # briefly, as CI does (tests/test_fuzz.py)

Targets (``targets.py``): ts, table, npy, config, artifact (raw bytes of an .sbts file) and artifact-semantic
(invalid edits with the checksum recomputed, ``mutations.py``). Every input runs under a time limit
(``--input-seconds``, 5) and the process under an address-space limit (``--memory-mib``); an input that breaks
the contract is minimised (bytes cut while it still fails the same way) and written to
``fuzz/regressions/TARGET/``, whose files ``tests/test_fuzz.py`` replays. The last line printed is a JSON summary:
inputs tried, crashes, seconds. Exit code 1 when anything crashed.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mutations import mutate, seed_artifacts  # noqa: E402
from targets import TARGETS, Crash, semantic_target  # noqa: E402

REGRESSIONS = Path(__file__).resolve().parent / "regressions"
INPUT_SECONDS = 5  # an input that takes longer is a hang
IMPORT_SECONDS = 60  # the first input of a target also imports its readers (torch for configs)
MEMORY_MIB = 4096  # the process's address-space bound: an input that needs more is a crash (MemoryError)
MAX_MUTATED_BYTES = 1 << 20
SEMANTIC = "artifact-semantic"


class Hang(Exception):
    """An input ran past its time limit."""


def _alarm(signum, frame):
    raise Hang()


def seed_corpus(target: str) -> list[bytes]:
    """Valid inputs of each target: what the mutations start from."""
    if target in ("artifact", SEMANTIC):
        return list(seed_artifacts().values())
    rng = np.random.default_rng(0)
    if target == "ts":
        def case(label: int) -> str:
            return ":".join(",".join(f"{v:.3f}" for v in rng.standard_normal(6)) for _ in range(2)) + f":c{label}"
        cases = "\n".join(case(i % 2) for i in range(6))
        return [("@problemName fuzz\n@timeStamps false\n@missing false\n@univariate false\n@dimensions 2\n"
                 "@equalLength true\n@seriesLength 6\n@classLabel true c0 c1\n@data\n" + cases + "\n").encode(),
                b"@problemName x\n@univariate true\n@classLabel true a b\n@data\n1,2,?,4:a\n5,6:b\n"]
    if target == "table":
        rows = "\n".join(",".join(f"{v:.4f}" for v in row) for row in rng.standard_normal((20, 3)))
        return [("date,a,b,c\n" + "\n".join(f"2020-01-{i + 1:02d}," + line for i, line in enumerate(rows.splitlines()))
                 + "\n").encode(), ("a b c\n" + rows.replace(",", " ") + "\n").encode(), rows.encode()]
    if target == "npy":
        import io

        def saved(array, **kwargs) -> bytes:
            buffer = io.BytesIO()
            np.save(buffer, array, **kwargs)
            return buffer.getvalue()
        return [saved(rng.standard_normal((3, 2, 5))), saved(np.asfortranarray(rng.standard_normal((2, 2, 4)))),
                saved(np.array([[["a"]]], dtype=object), allow_pickle=True), saved(np.zeros((2, 2, 3), np.int16))]
    if target == "config":
        return [b"model:\n  d_model: 16\n  n_heads: 2\ntrain:\n  epochs: 3\n  lr: 1e-3\ntask_options: {}\n",
                b'{"model": {"density": 0.25}, "train": {"batch_size": 4}}',
                b"data: UEA/Fuzz\nmodel_name: dense\nmodel: {norm: layer, attention: qkv_mask}\n"]
    raise SystemExit(f"unknown target {target!r}")


def mutate_bytes(data: bytes, rng: np.random.Generator, corpus: list[bytes]) -> bytes:
    """A few random edits: bit flips, byte runs inserted, deleted or repeated, a truncation, a splice."""
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        kind = int(rng.integers(6))
        at = int(rng.integers(len(out) + 1))
        if kind == 0 and out:
            out[min(at, len(out) - 1)] ^= 1 << int(rng.integers(8))
        elif kind == 1:
            out[at:at] = bytes(rng.choice([0, 9, 10, 32, 44, 45, 46, 58, 63, 64, 101, 255], int(rng.integers(1, 9))))
        elif kind == 2:
            del out[at:at + int(rng.integers(1, 64))]
        elif kind == 3:
            chunk = out[at:at + int(rng.integers(1, 32))]
            out[at:at] = bytes(chunk) * int(rng.integers(2, 200))
        elif kind == 4:
            del out[at:]
        else:
            other = corpus[int(rng.integers(len(corpus)))]
            out = out[:at] + other[int(rng.integers(len(other) + 1)):]
    return bytes(out[:MAX_MUTATED_BYTES])


def check(target: str, data: bytes, seconds: float, original: bytes | None = None, edit: str = "") -> str | None:
    """None when the input's outcome is allowed, else what went wrong (one line)."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        if target == SEMANTIC:
            semantic_target(original, data, edit)
        else:
            TARGETS[target](data)
    except Hang:
        return f"hang: more than {seconds:g} s"
    except Crash as exc:
        return f"contract: {exc}"
    except MemoryError:
        return "memory: beyond the address-space limit"
    except Exception as exc:  # the finding itself: any exception type other than SBTSError
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return None


def minimise(target: str, data: bytes, problem: str, seconds: float) -> bytes:
    """Cut chunks while the input still fails with the same kind of problem."""
    kind = problem.split(":")[0]
    chunk = max(1, len(data) // 2)
    while chunk >= 1:
        cut = False
        for start in range(0, len(data), chunk):
            candidate = data[:start] + data[start + chunk:]
            found = check(target, candidate, seconds)
            if found is not None and found.split(":")[0] == kind:
                data, cut = candidate, True
                break
        if not cut:
            chunk //= 2
    return data


def save_regression(target: str, data: bytes, regressions: Path = REGRESSIONS) -> Path:
    """Keep a minimised crasher under ``regressions/target``, named by its content (the C engine's too)."""
    import hashlib

    folder = regressions / target
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"crash-{hashlib.sha256(data).hexdigest()[:16]}"
    path.write_bytes(data)
    return path


def run_random(target: str, seconds: float, seed: int, input_seconds: float, save: bool) -> dict:
    corpus = seed_corpus(target)
    rng = np.random.default_rng(seed)
    for data in corpus:  # the seeds meet the contract, and the readers' imports are done before the clock starts
        problem = check(target, data, IMPORT_SECONDS, data, "none") if target == SEMANTIC else check(
            target, data, IMPORT_SECONDS)
        if problem is not None:
            raise SystemExit(f"a seed input of {target} fails: {problem}")
    tried, crashes, start = 0, [], time.perf_counter()
    while time.perf_counter() - start < seconds:
        original = corpus[int(rng.integers(len(corpus)))]
        if target == SEMANTIC:
            data, edit = mutate(original, rng, n_edits=int(rng.integers(1, 3)))
        else:
            data, edit = mutate_bytes(original, rng, corpus), ""
        tried += 1
        problem = check(target, data, input_seconds, original, edit)
        if problem is not None:
            if target != SEMANTIC:
                data = minimise(target, data, problem, input_seconds)
            crashes.append({"problem": problem, "edit": edit,
                            "saved": str(save_regression(target, data)) if save else None})
            print(f"crash: {problem}", file=sys.stderr)
    return {"target": target, "engine": "random", "inputs": tried, "crashes": crashes,
            "seconds": round(time.perf_counter() - start, 1)}


def run_atheris(target: str, seconds: float, input_seconds: float) -> None:
    """libFuzzer through atheris: coverage-guided, over the seed corpus; it stops at the first crash and writes it."""
    import atheris

    if target == SEMANTIC:
        raise SystemExit("artifact-semantic mutates structure, not bytes: run it with --engine random")
    with atheris.instrument_imports():
        import sbts.data.tables  # noqa: F401
        import sbts.data.ts_format  # noqa: F401
        import sbts.runtime  # noqa: F401
    corpus_dir = REGRESSIONS.parent / "corpus" / target  # libFuzzer grows it: kept out of git (.gitignore)
    corpus_dir.mkdir(parents=True, exist_ok=True)
    (REGRESSIONS / target).mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(seed_corpus(target)):
        (corpus_dir / f"seed-{i}").write_bytes(data)

    def one_input(data: bytes) -> None:
        problem = check(target, data, input_seconds)
        if problem is not None:
            raise RuntimeError(problem)

    atheris.Setup([sys.argv[0], str(corpus_dir), f"-max_total_time={int(seconds)}",
                   f"-artifact_prefix={REGRESSIONS / target}/", f"-timeout={int(input_seconds) + 1}"], one_input)
    atheris.Fuzz()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=[*TARGETS, SEMANTIC])
    parser.add_argument("--engine", choices=["random", "atheris"], default="random")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz")
    parser.add_argument("--seed", type=int, default=0, help="random engine: the mutations' seed")
    parser.add_argument("--input-seconds", type=float, default=INPUT_SECONDS, help="an input's time limit")
    parser.add_argument("--memory-mib", type=int, default=MEMORY_MIB, help="the process's address-space limit")
    parser.add_argument("--no-save", action="store_true", help="do not write crashers to fuzz/regressions")
    args = parser.parse_args()
    limit = args.memory_mib * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if args.engine == "atheris":
        run_atheris(args.target, args.seconds, args.input_seconds)
        return
    summary = run_random(args.target, args.seconds, args.seed, args.input_seconds, not args.no_save)
    print(json.dumps({**summary, "crashes": len(summary["crashes"]),
                      "problems": sorted({c["problem"][:120] for c in summary["crashes"]})}))
    sys.exit(1 if summary["crashes"] else 0)


if __name__ == "__main__":
    main()
