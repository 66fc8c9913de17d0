"""The fuzz harness, briefly (its long runs are ``python fuzz/run.py TARGET --seconds N``, docs/benchmarks.md):
every target for a few seconds of seeded mutations under the harness's time and memory limits, and every
minimised crasher kept in ``fuzz/regressions`` replayed against its target's contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
sys.path.insert(0, str(FUZZ))

from run import REGRESSIONS, SEMANTIC, check  # noqa: E402
from targets import TARGETS  # noqa: E402

CI_SECONDS = 2  # per target: a smoke run; the documented runs take minutes
MIN_INPUTS = 20  # fewer inputs than this in CI_SECONDS would mean the harness is stuck, not fuzzing


@pytest.mark.parametrize("target", [*TARGETS, SEMANTIC])
def test_a_short_fuzz_run_finds_nothing(target):
    done = subprocess.run([sys.executable, str(FUZZ / "run.py"), target, "--seconds", str(CI_SECONDS), "--seed", "0",
                           "--no-save"], capture_output=True, text=True, timeout=300)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0 and summary["crashes"] == 0, summary["problems"]
    assert summary["inputs"] >= MIN_INPUTS, summary


C_ENGINE = "c-engine"  # the C engine's crashers: replayed by tests/test_fuzz_c_engine.py
REGRESSION_FILES = sorted(p for p in REGRESSIONS.rglob("*") if p.is_file() and C_ENGINE not in p.parts)


@pytest.mark.parametrize("path", REGRESSION_FILES, ids=[f"{p.parent.name}/{p.name}" for p in REGRESSION_FILES])
def test_every_kept_crasher_now_meets_the_contract(path):
    target = path.parent.name
    if target == SEMANTIC:  # invalid edits that once loaded: each must now be refused, with one line
        from sbts.errors import ArtifactError
        from sbts.registry import runtime_class
        from sbts.runtime.artifact import load_artifact_bytes

        with pytest.raises(ArtifactError) as refused:
            artifact = load_artifact_bytes(path.read_bytes(), path.name)
            runtime_class(artifact.document["task"])(artifact)
        assert "\n" not in str(refused.value) and path.name in str(refused.value)
    else:
        assert check(target, path.read_bytes(), seconds=5) is None


def test_the_corpus_keeps_a_crasher_of_each_kind_found():
    assert {p.parent.name for p in REGRESSION_FILES} >= {SEMANTIC, "npy", "config"}
