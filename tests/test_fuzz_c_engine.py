"""The C engine's fuzz harness, briefly (its long runs are ``python fuzz/c_engine.py --seconds N``): every model
kind for a few seconds of seeded random inputs under AddressSanitizer and UndefinedBehaviorSanitizer finds
nothing, really runs, and replays every crasher kept in ``fuzz/regressions/c-engine``; and a deliberately broken
engine is caught, so that a clean run cannot be a harness that checks nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sbts.export.c_build import find_compiler

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
sys.path.insert(0, str(FUZZ))

import c_engine  # noqa: E402

CI_SECONDS = 2  # per kind: a smoke run; the documented runs take a minute per kind
MIN_INPUTS = 50  # fewer inputs than this in CI_SECONDS (hundreds a second, loaded) would mean a stuck harness
MIN_CALLS = 500  # engine calls
KEPT = sorted(p for p in c_engine.REGRESSIONS.rglob("*") if p.is_file()) if c_engine.REGRESSIONS.is_dir() else []


@pytest.fixture(scope="module")
def compiler(tmp_path_factory):
    """A C compiler with the address and undefined-behaviour sanitizer runtimes (else the tests skip)."""
    path = find_compiler()
    if path is None:
        pytest.skip("no C compiler found (gcc, cc or clang)")
    scratch = tmp_path_factory.mktemp("probe")
    (scratch / "probe.c").write_text("int main(void) { return 0; }\n")
    built = subprocess.run([path, *c_engine.SANITIZE, "-o", str(scratch / "probe"), str(scratch / "probe.c")],
                           capture_output=True, text=True)
    if built.returncode != 0 and any(word in built.stderr for word in ("sanitize", "asan", "ubsan")):
        pytest.skip(f"{path} has no sanitizer runtime here: {built.stderr.splitlines()[0]}")
    assert built.returncode == 0, built.stderr[:2000]
    return path


def test_a_short_run_of_every_kind_finds_nothing_and_replays_the_kept_crashers(compiler, tmp_path):
    done = subprocess.run([sys.executable, str(FUZZ / "c_engine.py"), "--seconds", str(CI_SECONDS), "--seed", "0",
                           "--no-save", "--parallel", "2", "--compiler", compiler, "--build-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0 and summary["crashes"] == 0, (summary["problems"], done.stderr[-4000:])
    assert set(summary["kinds"]) == set(c_engine.KINDS)
    assert summary["replayed"] == len(KEPT)
    for name, kind in summary["kinds"].items():
        stats = kind["stats"]
        assert kind["inputs"] >= MIN_INPUTS and kind["calls"] >= MIN_CALLS, (name, kind)
        # every outcome met, and the rules on them applied: not a harness that checks nothing
        assert min(stats["forward_ok"], stats["forward_bad_length"], stats["forward_not_finite"],
                   stats["finite_checked"], stats["rechecks"]) > 0, (name, stats)
        if c_engine.KINDS[name].streams:
            assert min(stats["stream_ok"], stats["stream_not_finite"], stats["stream_compared"]) > 0, (name, stats)
            assert stats["stream_gap"] < 0.5, (name, stats)  # the stream equals the batch well within the bound


@pytest.mark.parametrize("sabotage,kind,found", [
    ("over-read", "anomaly-sbt-step_t-layer-rope-ternary", "AddressSanitizer: heap-buffer-overflow"),
    ("write-on-error", "classification-dense-qkv_mask-batch-learnable", "contract: out-written-on-error"),
    ("stale-mirror", "anomaly-sbt-step_t-layer-rope-mask", "contract:"),
    ("padding-read", "classification-sbt-full-batch-sinusoidal-lists", "contract:"),
    ("first-step-only", "forecasting-sbt-step_t-layer-rope-change-h3-mask", "contract: out-not-written"),
    ("step-as-variable", "forecasting-sbt-step_t-layer-rope-change-h3-mask", "UndefinedBehaviorSanitizer:"),
])
def test_a_broken_engine_is_caught(compiler, tmp_path, sabotage, kind, found):
    binary = c_engine.build(kind, tmp_path, compiler, sabotage=sabotage)
    run = c_engine.run_random(binary, seconds=10, seed=0, input_seconds=5, workdir=tmp_path)
    assert run["problem"] is not None and run["problem"].startswith(found), run["problem"]
    assert run["seconds"] < 5  # found at once, not by luck at the end
    crasher = tmp_path / "crash"
    assert run["data"] == crasher.read_bytes()  # the harness wrote the input that failed, and it fails again
    assert c_engine.problem_key(c_engine.replay(binary, [crasher])) == c_engine.problem_key(run["problem"])
    if sabotage == "write-on-error":  # the minimiser keeps the failure
        smaller = c_engine.minimise(binary, run["data"], run["problem"], seconds=5)
        assert len(smaller) <= len(run["data"])
        (tmp_path / "smaller").write_bytes(smaller)
        assert c_engine.problem_key(c_engine.replay(binary, [tmp_path / "smaller"])).startswith(found)


def test_every_kept_crasher_belongs_to_a_kind():
    assert {p.parent.name for p in KEPT} <= set(c_engine.KINDS)
    assert all(p.parent.parent == c_engine.REGRESSIONS for p in KEPT)
