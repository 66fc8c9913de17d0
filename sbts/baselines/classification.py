"""Classification baselines on the same split the Transformer sees: MiniRocket, MultiRocket and 1-NN DTW (aeon).

Each is fitted on the run's own training cases — scaled with the training statistics and zero-padded to the
longest series, the very arrays the Transformer trains on, transposed to aeon's ``(n, C, T)`` — and scored on the
validation and test cases. MiniRocket and MultiRocket convolve with kernels of 9 taps (MultiRocket also over the
first differences, one step shorter), so shorter series are zero-padded on the right to ``MINIROCKET_MIN_LENGTH``
and ``MULTIROCKET_MIN_LENGTH`` steps (PenDigits has 8). 1-NN DTW compares every
evaluated case with every training case; it is skipped when that costs more than ``DTW_COST_BUDGET`` cell
updates of the DTW matrices.

Sizes count what a fitted baseline stores, every number as float32 (``BYTES_PER_VALUE``): for the ROCKET family
every numeric array reachable from the fitted estimator (kernels, dilations, biases, quantiles, the scaler, the
ridge weights); for 1-NN DTW the stored training set.
"""

from __future__ import annotations

import time
import types
from typing import Any

import numpy as np

from sbts.errors import ConfigError

BYTES_PER_VALUE = 4  # every stored number counted as float32
MINIROCKET_MIN_LENGTH = 9  # aeon's MiniRocket refuses series shorter than its 9-tap kernels
MULTIROCKET_MIN_LENGTH = MINIROCKET_MIN_LENGTH + 1  # MultiRocket also convolves the first differences, a step shorter
DTW_WINDOW = 0.1  # Sakoe-Chiba band, as a fraction of the series length
# Cell updates of the DTW matrices (see dtw_cost); aeon 1.6 does about 10 ns per cell on one core (measured on
# random multivariate series), so this budget is about 10 seconds.
DTW_COST_BUDGET = 1e9
INSTALL_HINT = "pip install 'sbts[datasets]'"
ROCKET_SIZE_RULE = (f"every numeric array reachable from the fitted estimator (kernels, dilations, biases, "
                    f"quantiles, scaler, ridge weights), {BYTES_PER_VALUE} bytes (float32) per value")
DTW_SIZE_RULE = f"the stored training set, n_train x channels x steps values of {BYTES_PER_VALUE} bytes (float32)"
NUMERIC_KINDS = "iuf"  # numpy dtype kinds counted as stored numbers (signed, unsigned, float)

Cases = tuple[np.ndarray, np.ndarray]  # X (n, T, C) as the Transformer sees it, y (n,) class indices


def _aeon_classifiers() -> tuple[type, type, type]:
    try:
        from aeon.classification.convolution_based import MiniRocketClassifier, MultiRocketClassifier
        from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier
    except ImportError:
        raise ConfigError(f"the classification baselines need aeon: {INSTALL_HINT}") from None
    return MiniRocketClassifier, MultiRocketClassifier, KNeighborsTimeSeriesClassifier


def to_aeon(X: np.ndarray, min_length: int = 1) -> np.ndarray:
    """``(n, T, C)`` -> aeon's ``(n, C, T)``, zero-padded on the right to at least ``min_length`` steps."""
    X = np.ascontiguousarray(np.transpose(X, (0, 2, 1)), dtype=np.float64)
    short = min_length - X.shape[2]
    return np.pad(X, ((0, 0), (0, 0), (0, short))) if short > 0 else X


def stored_bytes(estimator: Any) -> int:
    """Bytes of every numeric array reachable from ``estimator`` through attributes, dicts, lists and tuples,
    each value counted as float32; an array (or object) reached twice is counted once."""
    seen: set[int] = set()
    total = 0
    pending = [estimator]
    while pending:  # iterative: deep object graphs cannot overflow the stack, and ``seen`` stops cycles
        item = pending.pop()
        if id(item) in seen or isinstance(item, (type, types.ModuleType, types.FunctionType, str, bytes)):
            continue
        seen.add(id(item))
        if isinstance(item, np.ndarray):
            if item.dtype.kind in NUMERIC_KINDS:
                total += item.size * BYTES_PER_VALUE
            elif item.dtype == object:
                pending.extend(item.ravel())
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            pending.extend(item)
        elif hasattr(item, "__dict__"):
            pending.extend(vars(item).values())
    return total


def dtw_cost(n_train: int, n_evaluated: int, length: int, channels: int, window: float = DTW_WINDOW) -> float:
    """Cell updates of 1-NN DTW: every evaluated case against every training case, ``2 window T + 1`` cells of
    the band per step and channel."""
    return n_train * n_evaluated * length * (2 * window * length + 1) * channels


def _fit_and_score(estimator: Any, train: Cases, evaluated: dict[str, Cases], min_length: int) -> dict[str, Any]:
    start = time.perf_counter()
    estimator.fit(to_aeon(train[0], min_length), train[1])
    entry: dict[str, Any] = {"fit_seconds": round(time.perf_counter() - start, 3)}
    predict_seconds = 0.0
    for split, (X, y) in evaluated.items():
        start = time.perf_counter()
        predicted = estimator.predict(to_aeon(X, min_length))
        predict_seconds += time.perf_counter() - start
        entry[split] = {"accuracy": float(np.mean(predicted == y)), "n": int(len(y))}
    entry["predict_seconds"] = round(predict_seconds, 3)
    return entry


def classification_baselines(train: Cases, evaluated: dict[str, Cases], seed: int,
                             n_jobs: int = 1) -> dict[str, dict[str, Any]]:
    """MiniRocket, MultiRocket and 1-NN DTW fitted on ``train`` and scored on each of ``evaluated`` (``val``,
    ``test``: the splits that exist); deterministic given ``seed``."""
    minirocket, multirocket, knn = _aeon_classifiers()
    evaluated = {split: cases for split, cases in evaluated.items() if cases is not None and len(cases[1])}
    report: dict[str, dict[str, Any]] = {}
    rockets = {"minirocket": (minirocket, MINIROCKET_MIN_LENGTH), "multirocket": (multirocket, MULTIROCKET_MIN_LENGTH)}
    for name, (classifier, min_length) in rockets.items():
        estimator = classifier(random_state=seed, n_jobs=n_jobs)
        entry = _fit_and_score(estimator, train, evaluated, min_length)
        report[name] = {**entry, "size_bytes": stored_bytes(estimator), "size_rule": ROCKET_SIZE_RULE}
    n_train, length, channels = train[0].shape
    cost = dtw_cost(n_train, sum(len(cases[1]) for cases in evaluated.values()), length, channels)
    if cost > DTW_COST_BUDGET:
        report["1nn_dtw"] = {"skipped": f"estimated {cost:.3g} DTW cell updates exceed the budget of "
                                        f"{DTW_COST_BUDGET:.3g} (DTW_COST_BUDGET)"}
    else:
        estimator = knn(n_neighbors=1, distance="dtw", distance_params={"window": DTW_WINDOW}, n_jobs=n_jobs)
        entry = _fit_and_score(estimator, train, evaluated, 1)
        report["1nn_dtw"] = {**entry, "size_bytes": n_train * channels * length * BYTES_PER_VALUE,
                             "size_rule": DTW_SIZE_RULE}
    return report


WARM_UP_CASES = (8, 12, 2)  # cases, steps, channels: the smallest fit that reaches every kernel the baselines use


def compile_kernels() -> None:
    """Fit every baseline once on a few random cases: aeon compiles its numba kernels on first use (about two
    minutes on 2 cores) and caches them on disk beside its sources, so that later fits start at once. ``make
    setup`` runs this after installing aeon."""
    n, steps, channels = WARM_UP_CASES
    rng = np.random.default_rng(0)
    cases = (rng.standard_normal((n, steps, channels)), np.arange(n) % 2)
    classification_baselines(cases, {"test": cases}, seed=0)


if __name__ == "__main__":
    compile_kernels()
