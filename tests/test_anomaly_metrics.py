"""Anomaly-detection metrics: hand-computed cases, aeon references (range metrics, VUS), properties, input checks."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

from sbts.errors import SBTSError
from sbts.metrics import (
    METRIC_NOTES,
    affiliation_metrics,
    anomaly_report,
    auc_pr,
    auc_roc,
    best_f1,
    event_metrics,
    point_adjust,
    point_metrics,
    range_metrics,
    segments,
    vus,
)


def markov_binary(rng: np.random.Generator, n: int, p_start: float, p_stop: float) -> np.ndarray:
    """0/1 series with runs: a two-state Markov chain (0 -> 1 with p_start, 1 -> 0 with p_stop)."""
    values = np.zeros(n, dtype=np.int64)
    state = 0
    for i in range(n):
        state = int(rng.random() < p_start) if state == 0 else int(rng.random() >= p_stop)
        values[i] = state
    return values


def random_case(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    labels = markov_binary(rng, n, rng.uniform(0.02, 0.4), rng.uniform(0.05, 0.7))
    predictions = markov_binary(rng, n, rng.uniform(0.02, 0.4), rng.uniform(0.05, 0.7))
    return labels, predictions


# ---------------------------------------------------------------------------------------------------------------
# input checks


@pytest.mark.parametrize(("call", "message"), [
    (lambda: point_metrics([0, 1, 0], [1, 0]), "labels has 3 values but predictions has 2"),
    (lambda: auc_roc(np.zeros(10), np.zeros(9)), "labels has 10 values but scores has 9"),
    (lambda: vus([0, 1, 0], [0.1, 0.2]), "labels has 3 values but scores has 2"),
    (lambda: point_metrics([0, 2, 1], [0, 1, 1]), "labels must contain only 0 and 1, found 2"),
    (lambda: range_metrics([0, 1, 1], [0, 0.5, 1]), "predictions must contain only 0 and 1, found 0.5"),
    (lambda: segments([0.0, math.nan]), "labels must contain only 0 and 1, found nan"),
    (lambda: segments(["a", "b"]), "labels must hold 0/1 numbers, got dtype <U1"),
    (lambda: segments(np.zeros((2, 3))), r"labels must be 1-D, got shape \(2, 3\)"),
    (lambda: segments([]), "labels is empty"),
    (lambda: auc_pr([0, 1, 0], [0.1, math.nan, 0.2]), r"scores contains 1 non-finite value\(s\)"),
    (lambda: best_f1([0, 1, 0], [0.1, math.inf, -math.inf]), r"scores contains 2 non-finite value\(s\)"),
    (lambda: point_adjust([0, 1], [0, 1], k=101), r"PA%K needs k in \[0, 100\], got 101"),
    (lambda: point_adjust([0, 1], [0, 1], k=-1), r"PA%K needs k in \[0, 100\], got -1"),
    (lambda: vus([0, 1, 0], [0.1, 0.2, 0.3], max_buffer=-1), "max_buffer must be an integer >= 0, got -1"),
    (lambda: vus([0, 1, 0], [0.1, 0.2, 0.3], max_buffer=2.5), "max_buffer must be an integer >= 0, got 2.5"),
    (lambda: anomaly_report([0, 1, 0], [0.1, 0.2, 0.3], math.nan), "threshold must be a finite number, got nan"),
])
def test_bad_inputs_raise_one_line_sbts_errors(call, message: str) -> None:
    with pytest.raises(SBTSError, match=message) as raised:
        call()
    assert "\n" not in str(raised.value)


def test_package_module_imports_neither_torch_nor_aeon() -> None:
    code = "import sys, sbts.metrics; print(sorted(m for m in ('torch', 'aeon') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------------------------
# segments, point-wise, point adjustment, event-wise


def test_segments_are_half_open_runs_of_ones() -> None:
    assert segments([1, 1, 0, 0, 1, 0, 1, 1, 1]) == [(0, 2), (4, 5), (6, 9)]
    assert segments(np.array([False, True, True, False])) == [(1, 3)]
    assert segments([0, 0, 0]) == []
    assert segments([1, 1]) == [(0, 2)]


@pytest.mark.filterwarnings("error")
def test_point_metrics_by_hand() -> None:
    # tp = 2 (indices 1, 5), fp = 1 (index 0), fn = 1 (index 2): P = R = F1 = 2/3
    result = point_metrics([0, 1, 1, 0, 0, 1], [1, 1, 0, 0, 0, 1])
    assert result == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3})
    # undefined ratios are 0, without a division warning (the filterwarnings mark turns one into a failure)
    assert point_metrics([0, 1, 1], [0, 0, 0]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert point_metrics([0, 0, 0], [0, 1, 0]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


# labels: events [1, 4) and [6, 8); predictions flag index 2 (inside the first event) and index 5 (a false alarm)
PA_LABELS = [0, 1, 1, 1, 0, 0, 1, 1, 0]
PA_PREDICTIONS = [0, 0, 1, 0, 0, 1, 0, 0, 0]


def test_point_adjust_by_hand() -> None:
    # the first event is hit (1 of 3 points), so all of it counts; the second is missed; index 5 stays flagged
    adjusted = point_adjust(PA_LABELS, PA_PREDICTIONS)
    assert adjusted.tolist() == [0, 1, 1, 1, 0, 1, 0, 0, 0]
    # adjusted: tp = 3, fp = 1, fn = 2 -> P = 3/4, R = 3/5, F1 = 2 * 0.45 / 1.35 = 2/3
    assert point_metrics(PA_LABELS, adjusted) == pytest.approx({"precision": 0.75, "recall": 0.6, "f1": 2 / 3})


def test_pa_percent_k_uses_at_least_k_percent() -> None:
    # the first event has 1 of 3 points flagged = 33.3%: credited for k <= 33.3, not above
    assert point_adjust(PA_LABELS, PA_PREDICTIONS, k=33).tolist() == [0, 1, 1, 1, 0, 1, 0, 0, 0]
    assert point_adjust(PA_LABELS, PA_PREDICTIONS, k=34).tolist() == PA_PREDICTIONS
    # exactly k percent is enough (>=): 1 of 5 points = 20%
    assert point_adjust([1, 1, 1, 1, 1], [0, 0, 1, 0, 0], k=20).tolist() == [1, 1, 1, 1, 1]
    assert point_adjust([1, 1, 1, 1, 1], [0, 0, 1, 0, 0], k=20.5).tolist() == [0, 0, 1, 0, 0]


def test_point_adjust_properties_on_random_cases() -> None:
    rng = np.random.default_rng(1)
    for _ in range(100):
        labels, predictions = random_case(rng, int(rng.integers(1, 120)))
        adjusted = point_adjust(labels, predictions)
        assert np.array_equal(point_adjust(labels, predictions, k=0), adjusted)
        # k = 100 credits only fully flagged events, which are already fully flagged: nothing changes
        assert np.array_equal(point_adjust(labels, predictions, k=100), predictions)
        # PA only ever adds flags, and only inside events
        assert np.all(adjusted >= predictions)
        assert np.array_equal(adjusted[labels == 0], predictions[labels == 0])
        # a larger k credits fewer events
        assert np.all(point_adjust(labels, predictions, k=10) >= point_adjust(labels, predictions, k=60))
        raw, pa = point_metrics(labels, predictions), point_metrics(labels, adjusted)
        assert all(pa[key] >= raw[key] for key in ("precision", "recall", "f1"))


def test_random_scores_reach_a_high_point_adjusted_f1() -> None:
    # SMD-like labels: a few long events; a uniform random score flags 1% of the points at random
    rng = np.random.default_rng(0)
    labels = np.zeros(10_000, dtype=np.int64)
    for start in (1_000, 3_000, 5_000, 7_000, 9_000):
        labels[start:start + 500] = 1
    report = anomaly_report(labels, rng.random(labels.size), threshold=0.99, max_buffer=20)
    assert report["f1"] < 0.1
    assert report["f1_pa"] > 0.8  # every event of 500 points gets hit: recall_pa = 1
    assert report["recall_pa"] == 1.0
    assert report["f1_pa_k20"] < 0.1  # 1% of an event never reaches K = 20%


def test_event_metrics_by_hand() -> None:
    # events [1, 4) hit, [6, 8) missed -> event recall 1/2; point precision: tp 1 (index 2), fp 1 (index 5) = 1/2
    result = event_metrics(PA_LABELS, PA_PREDICTIONS)
    assert result == pytest.approx({"event_recall": 0.5, "event_precision": 0.5, "event_f1": 0.5})
    # composite F1 is not symmetric in the two halves: 1 hit event of 1, precision 1/4 -> F = 2 * 0.25 / 1.25
    result = event_metrics([0, 1, 1, 0, 0, 0], [1, 1, 0, 1, 1, 0])
    assert result == pytest.approx({"event_recall": 1.0, "event_precision": 0.25, "event_f1": 0.4})
    assert event_metrics([0, 0, 0], [0, 1, 0])["event_recall"] == 0.0


# ---------------------------------------------------------------------------------------------------------------
# range-based (Tatbul et al. 2018)


@pytest.mark.parametrize(("labels", "predictions", "expected"), [
    # one true range [2, 6), one predicted [4, 8): each covers 2 of its 4 points
    ([0, 0, 1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1, 0, 0], (0.5, 0.5, 0.5)),
    # true [0, 2), [3, 5); predicted [0, 4) overlaps both (gamma 1/2) and 3 of its 4 points are anomalous:
    # precision 3/4 * 1/2 = 3/8; recall ([0, 2) fully covered, [3, 5) half) = (1 + 1/2) / 2 = 3/4; F1 = 1/2
    ([1, 1, 0, 1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0, 0, 0], (0.375, 0.75, 0.5)),
    # true [1, 5); predicted [1, 2), [4, 5), [7, 8): precision (1 + 1 + 0) / 3; the true range is met by two
    # predicted ranges (gamma 1/2) covering 2 of 4 points: recall 1/4; F1 = 2 * (2/3)(1/4) / (11/12) = 4/11
    ([0, 1, 1, 1, 1, 0, 0, 0], [0, 1, 0, 0, 1, 0, 0, 1], (2 / 3, 0.25, 4 / 11)),
    # nothing predicted: both 0; everything predicted: one range, 2 of 4 points in two true ranges (gamma 1/2)
    ([0, 1, 0, 1], [0, 0, 0, 0], (0.0, 0.0, 0.0)),
    ([0, 1, 0, 1], [1, 1, 1, 1], (0.25, 1.0, 0.4)),
])
def test_range_metrics_by_hand(labels: list[int], predictions: list[int], expected: tuple[float, ...]) -> None:
    result = range_metrics(labels, predictions)
    assert (result["range_precision"], result["range_recall"], result["range_f1"]) == pytest.approx(expected)


def test_range_metrics_match_aeon() -> None:
    aeon_metrics = pytest.importorskip("aeon.benchmarking.metrics.anomaly_detection")
    rng = np.random.default_rng(2)
    compared = 0
    for _ in range(300):
        labels, predictions = random_case(rng, int(rng.integers(2, 150)))
        if predictions.min() == predictions.max():
            continue  # aeon returns 0.0 for a constant prediction instead of scoring it
        result = range_metrics(labels, predictions)
        assert result["range_precision"] == pytest.approx(aeon_metrics.range_precision(labels, predictions),
                                                          abs=1e-9)
        assert result["range_recall"] == pytest.approx(aeon_metrics.range_recall(labels, predictions), abs=1e-9)
        reference_f1 = aeon_metrics.range_f_score(labels, predictions, p_alpha=0, r_alpha=0)
        assert result["range_f1"] == pytest.approx(reference_f1, abs=1e-9)
        compared += 1
    assert compared > 200


# ---------------------------------------------------------------------------------------------------------------
# affiliation (Huet, Navarro, Rossi 2022)


def test_affiliation_single_event_by_hand() -> None:
    # n = 10, event J = [2, 4), prediction [6, 7). One zone E = [0, 10]: |E| = 10, 2 left of J, 6 right of J.
    # For d > 0: P(dist(X, J) >= d) = (max(2 - d, 0) + max(6 - d, 0)) / 10.
    # Precision: x in [6, 7) is at d = x - 4 in [2, 3]: int_2^3 (6 - d) dd / 10 = (13.5 - 10) / 10 = 0.35.
    # Recall: y in [2, 4) is at d = 6 - y; P(|X - y| >= d) = (max(y - d, 0) + max(10 - y - d, 0)) / 10
    #   = (max(2y - 6, 0) + 4) / 10: 0.4 on [2, 3] and (2y - 2) / 10 on [3, 4], whose integral is
    #   [y^2 - 2y]_3^4 / 10 = 0.5; recall = (0.4 + 0.5) / |J| = 0.45. F1 = 2 * 0.35 * 0.45 / 0.8 = 0.39375.
    labels, predictions = np.zeros(10, dtype=int), np.zeros(10, dtype=int)
    labels[2:4], predictions[6] = 1, 1
    assert affiliation_metrics(labels, predictions) == pytest.approx(
        {"affiliation_precision": 0.35, "affiliation_recall": 0.45, "affiliation_f1": 0.39375})


def test_affiliation_two_events_by_hand() -> None:
    # n = 20, events J1 = [2, 4), J2 = [12, 14); cut at (4 + 12) / 2 = 8: E1 = [0, 8), E2 = [8, 20).
    # Predictions [4, 6) (zone 1) and [13, 14) (zone 2, inside J2).
    # Zone 1 precision: x in [4, 6), d = x - 4 in [0, 2], P = (max(2 - d, 0) + max(4 - d, 0)) / 8 = (6 - 2d) / 8,
    #   mean over [0, 2] = (6 - 2) / 8 = 0.5. Zone 2 precision: inside J2 -> 1. Precision = (0.5 + 1) / 2 = 0.75.
    # Zone 1 recall: y in [2, 4), d = 4 - y, P(|X - y| >= d) = (max(2y - 4, 0) + 8 - 4) / 8 = y / 4;
    #   int_2^4 y / 4 dy / 2 = (16 - 4) / 8 / 2 = 0.75.
    # Zone 2 recall: [13, 14) covered -> 1; y in [12, 13), d = 13 - y,
    #   P = (max(y - d - 8, 0) + max(20 - y - d, 0)) / 12 = (2y - 21 + 7) / 12 = (2y - 14) / 12,
    #   int_12^13 = [y^2 - 14y]_12^13 / 12 = 11 / 12; zone recall (1 + 11/12) / 2 = 23/24.
    # Recall = (3/4 + 23/24) / 2 = 41/48; F1 = 2 * (3/4)(41/48) / (3/4 + 41/48) = 61.5 / 77.
    labels, predictions = np.zeros(20, dtype=int), np.zeros(20, dtype=int)
    labels[2:4], labels[12:14] = 1, 1
    predictions[4:6], predictions[13] = 1, 1
    assert affiliation_metrics(labels, predictions) == pytest.approx(
        {"affiliation_precision": 0.75, "affiliation_recall": 41 / 48, "affiliation_f1": 61.5 / 77})


def test_affiliation_example_of_the_paper() -> None:
    # The paper's worked example (also in the authors' test suite): E = [1, 91], J = [21, 41), predictions
    # [11, 31) and [86, 91): precision 0.672222..., recall 0.944444... Shifted by -1 to start the axis at 0.
    # Check of the recall by hand: [21, 31) covered (10); y in [31, 41) at d = y - 31 from the first run:
    #   P = (30 + (60 - 2d)) / 90 = 1 - d / 45, integral 10 - 100/90; recall = (20 - 10/9) / 20 = 0.9444...
    labels, predictions = np.zeros(90, dtype=int), np.zeros(90, dtype=int)
    labels[20:40] = 1
    predictions[10:30], predictions[85:90] = 1, 1
    result = affiliation_metrics(labels, predictions)
    assert result["affiliation_precision"] == pytest.approx(0.6722222222, abs=1e-9)
    assert result["affiliation_recall"] == pytest.approx(17 / 18)


def test_affiliation_known_properties() -> None:
    labels = np.zeros(1000, dtype=int)
    labels[:10] = 1
    # predictions equal to the events: 1 and 1
    assert affiliation_metrics(labels, labels) == pytest.approx(
        {"affiliation_precision": 1.0, "affiliation_recall": 1.0, "affiliation_f1": 1.0})
    # predictions inside the events: precision 1, recall below 1
    inside = np.zeros(1000, dtype=int)
    inside[3] = 1
    result = affiliation_metrics(labels, inside)
    assert result["affiliation_precision"] == 1.0
    assert 0.9 < result["affiliation_recall"] < 1.0
    # one prediction at the far end of the zone: d in [989, 990], P = max(990 - d, 0) / 1000 -> precision 0.0005;
    # recall: every y in J sees P(|X - y| >= 999 - y) = 1 / 1000
    far = np.zeros(1000, dtype=int)
    far[999] = 1
    result = affiliation_metrics(labels, far)
    assert result["affiliation_precision"] == pytest.approx(0.0005)
    assert result["affiliation_recall"] == pytest.approx(0.001)
    # no prediction: precision undefined (NaN), recall 0, F1 0
    result = affiliation_metrics(labels, np.zeros(1000, dtype=int))
    assert math.isnan(result["affiliation_precision"])
    assert (result["affiliation_recall"], result["affiliation_f1"]) == (0.0, 0.0)
    # no true event: all NaN
    assert all(math.isnan(value) for value in affiliation_metrics(np.zeros(5), np.ones(5)).values())


def brute_force_affiliation(labels: np.ndarray, predictions: np.ndarray, per_unit: int) -> tuple[float, float]:
    """Affiliation precision/recall by counting on a fine grid: midpoints of per_unit sub-steps per time step."""
    events = segments(labels)
    grid = (np.arange(labels.size * per_unit) + 0.5) / per_unit
    flagged = predictions[np.floor(grid).astype(int)] == 1
    cuts = [(end + next_start) / 2 for (_, end), (next_start, _) in zip(events[:-1], events[1:], strict=True)]
    bounds = [0.0, *cuts, float(labels.size)]
    precisions, recalls = [], []
    for (start, end), zone_start, zone_end in zip(events, bounds[:-1], bounds[1:], strict=True):
        in_zone = (grid >= zone_start) & (grid < zone_end)
        zone = grid[in_zone]
        to_event = np.maximum(np.maximum(start - zone, zone - end), 0.0)  # distance of each zone point to J
        predicted = zone[flagged[in_zone]]
        if predicted.size:
            predicted_distance = np.maximum(np.maximum(start - predicted, predicted - end), 0.0)
            precisions.append(np.mean((to_event[None, :] >= predicted_distance[:, None]).mean(axis=1)))
            event_points = zone[(zone >= start) & (zone < end)]
            nearest = np.abs(event_points[:, None] - predicted[None, :]).min(axis=1)
            survival = (np.abs(zone[None, :] - event_points[:, None]) >= nearest[:, None]).mean(axis=1)
            recalls.append(np.mean(survival))
        else:
            recalls.append(0.0)
    return float(np.mean(precisions)), float(np.mean(recalls))


def test_affiliation_matches_a_brute_force_count_on_random_cases() -> None:
    rng = np.random.default_rng(3)
    for _ in range(12):
        labels, predictions = random_case(rng, int(rng.integers(8, 30)))
        if not labels.any() or not predictions.any():
            continue
        precision, recall = brute_force_affiliation(labels, predictions, per_unit=40)
        result = affiliation_metrics(labels, predictions)
        assert result["affiliation_precision"] == pytest.approx(precision, abs=0.01)
        assert result["affiliation_recall"] == pytest.approx(recall, abs=0.01)


# ---------------------------------------------------------------------------------------------------------------
# threshold-free scores


def test_auc_by_hand() -> None:
    labels, scores = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    # positive-negative pairs ranked right: 0.35 > 0.1, 0.8 > 0.1, 0.8 > 0.4 (not 0.35 > 0.4): 3/4
    assert auc_roc(labels, scores) == pytest.approx(0.75)
    # by decreasing score: 0.8 (+) precision 1 at recall 1/2, 0.4 (-), 0.35 (+) precision 2/3 at recall 1:
    # average precision = 1/2 * 1 + 1/2 * 2/3
    assert auc_pr(labels, scores) == pytest.approx(5 / 6)


@pytest.mark.filterwarnings("error")
def test_one_class_labels_give_nan() -> None:
    for labels in ([0, 0, 0], [1, 1, 1]):
        assert math.isnan(auc_roc(labels, [0.1, 0.2, 0.3]))
        assert math.isnan(auc_pr(labels, [0.1, 0.2, 0.3]))
        assert all(math.isnan(value) for value in vus(labels, [0.1, 0.2, 0.3], max_buffer=4).values())


def test_vus_by_hand_without_buffer() -> None:
    # labels [0, 1, 0, 0], scores [0.9, 0.5, 0.1, 0.3]; buffer 0: P = 1 anomaly, 3 normal points.
    # Thresholds by decreasing score (each repeated among the 250 samples; repeats add zero-width steps):
    #   0.9: flags {0}:       recall 0, FPR 1/3, precision 0
    #   0.5: flags {0, 1}:    recall 1, FPR 1/3, precision 1/2
    #   0.3: flags {0, 1, 3}: recall 1, FPR 2/3, precision 1/3
    #   0.1: all:             recall 1, FPR 1,   precision 1/4
    # PR from (0, precision 1): only the step 0 -> 1 in recall counts: 1 * (0 + 1/2) / 2 = 1/4.
    # ROC: (0,0) (1/3,0) (1/3,1) (2/3,1) (1,1) (1,1): area 1/3 + 1/3 = 2/3.
    result = vus([0, 1, 0, 0], [0.9, 0.5, 0.1, 0.3], max_buffer=0)
    assert result == pytest.approx({"vus_roc": 2 / 3, "vus_pr": 1 / 4})


def test_vus_by_hand_with_a_slope() -> None:
    # Same case, max_buffer = 2: the mean over buffers 0, 1 (as above) and 2.
    # Buffer 2: slope length 2 // 2 = 1: index 0 gets sqrt(1 - 1/2) = s; nothing after (the after-slope starts at
    # the event's last point). Extended labels [s, 1, 0, 0], one extended event [0, 2).
    # P = (1 + (1 + s)) / 2, negatives N = 4 - P.
    #   0.9: flags {0}:       TP = s,     FP = 1 - s, recall s / P (event hit), precision s
    #   0.5: flags {0, 1}:    TP = 1 + s, FP = 1 - s, recall 1 (capped),      precision (1 + s) / 2
    #   0.3: flags {0, 1, 3}: TP = 1 + s, FP = 2 - s, recall 1,               precision (1 + s) / 3
    #   0.1: all:             TP = 1 + s, FP = 3 - s, recall 1,               precision (1 + s) / 4
    # PR: r1 (1 + s) / 2 + (1 - r1)(s + (1 + s) / 2) / 2; ROC: f1 r1 / 2 + (1 - f1) * 1 with f1 = (1 - s) / N.
    s = math.sqrt(0.5)
    positives = (2 + s) / 2
    negatives = 4 - positives
    r1, f1 = s / positives, (1 - s) / negatives
    pr_2 = r1 * (1 + s) / 2 + (1 - r1) * (s + (1 + s) / 2) / 2
    roc_2 = f1 * r1 / 2 + (1 - f1)
    result = vus([0, 1, 0, 0], [0.9, 0.5, 0.1, 0.3], max_buffer=2)
    assert result == pytest.approx({"vus_roc": (2 / 3 + 2 / 3 + roc_2) / 3, "vus_pr": (1 / 4 + 1 / 4 + pr_2) / 3})


def test_vus_of_constant_scores_is_evaluated() -> None:
    # aeon returns 0.0 here; by the definition everything is flagged at every threshold: ROC (0,0) -> (1,1)
    # gives 1/2, PR from (0, 1) to (1, anomaly rate 1/4) gives (1 + 1/4) / 2
    result = vus([0, 1, 0, 0], [0.3, 0.3, 0.3, 0.3], max_buffer=0)
    assert result == pytest.approx({"vus_roc": 0.5, "vus_pr": 0.625})


def vus_label_cases() -> list[np.ndarray]:
    rng = np.random.default_rng(4)
    shaped = []
    for n in (40, 97):
        single, borders, close, periodic = (np.zeros(n, dtype=np.int64) for _ in range(4))
        single[n // 3:n // 3 + 5] = 1
        borders[:3], borders[-4:], borders[n // 2:n // 2 + 2] = 1, 1, 1
        # slopes of neighbours overlap; odd gaps (3, 3, 15) make extended events touch for some buffer sizes
        close[5:7], close[10], close[14:16], close[31:34] = 1, 1, 1, 1
        periodic[::9] = 1
        shaped += [single, borders, close, periodic]
    markov = [markov_binary(rng, int(rng.integers(30, 120)), 0.05, 0.3) for _ in range(4)]
    return shaped + [labels for labels in markov if 0 < labels.sum() < labels.size]


def test_vus_matches_aeon() -> None:
    aeon_metrics = pytest.importorskip("aeon.benchmarking.metrics.anomaly_detection")
    rng = np.random.default_rng(5)
    for case, labels in enumerate(vus_label_cases()):
        scores = rng.random(labels.size) + 0.6 * labels
        if case % 3 == 0:
            scores = np.round(scores, 1)  # ties among the scores
        # slopes longer than the gaps and, for the short series, than the series itself
        longest = 2 * labels.size + 1 if labels.size <= 40 else 17
        for max_buffer in (0, 1, 2, 3, 8, longest):
            result = vus(labels, scores, max_buffer=max_buffer)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                roc = aeon_metrics.range_roc_vus_score(labels, scores, max_buffer_size=max_buffer)
                pr = aeon_metrics.range_pr_vus_score(labels, scores, max_buffer_size=max_buffer)
            assert result["vus_roc"] == pytest.approx(roc, abs=1e-6), (case, max_buffer)
            assert result["vus_pr"] == pytest.approx(pr, abs=1e-6), (case, max_buffer)


def test_best_f1_by_hand() -> None:
    # labels [0, 1, 1, 0, 1], scores [0.1, 0.9, 0.6, 0.7, 0.2]. Flagging by decreasing score:
    #   >= 0.9: tp 1 fp 0 -> F1 1/2;  >= 0.7: tp 1 fp 1 -> 2/5;  >= 0.6: tp 2 fp 1 -> 2/3;
    #   >= 0.2: tp 3 fp 1 -> P 3/4, R 1, F1 6/7 (best);  >= 0.1: tp 3 fp 2 -> 3/4.
    # scores > 0.1 flags the same points as scores >= 0.2.
    assert best_f1([0, 1, 1, 0, 1], [0.1, 0.9, 0.6, 0.7, 0.2]) == pytest.approx(
        {"best_f1": 6 / 7, "best_f1_threshold": 0.1})
    # best when everything is flagged (F1 2/(3/2 + 1) = 0.8): the threshold lies just below the minimum score
    result = best_f1([1, 0, 1], [0.1, 0.5, 0.9])
    assert result["best_f1"] == pytest.approx(0.8)
    assert result["best_f1_threshold"] < 0.1
    assert np.all(np.array([0.1, 0.5, 0.9]) > result["best_f1_threshold"])
    # no anomaly: every F1 is 0; the threshold flags nothing
    assert best_f1([0, 0, 0], [0.1, 0.5, 0.9]) == {"best_f1": 0.0, "best_f1_threshold": 0.9}


def test_best_f1_threshold_reproduces_best_f1_with_strict_greater() -> None:
    rng = np.random.default_rng(6)
    for case in range(60):
        n = int(rng.integers(2, 80))
        labels = markov_binary(rng, n, 0.1, 0.3)
        if not labels.any():
            continue
        scores = rng.random(n) + 0.5 * labels * rng.random()
        if case % 2:
            scores = np.round(scores, 1)  # ties
        result = best_f1(labels, scores)
        reached = point_metrics(labels, scores > result["best_f1_threshold"])["f1"]
        assert reached == pytest.approx(result["best_f1"], rel=1e-12)
        # nothing beats it: every distinct cut of the scores, plus flagging nothing
        cuts = np.concatenate((np.unique(scores), [scores.min() - 1.0]))
        assert max(point_metrics(labels, scores > cut)["f1"] for cut in cuts) == pytest.approx(reached, rel=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# the report

REPORT_KEYS = [
    "n", "n_anomalies", "n_events", "predicted_rate",
    "precision", "recall", "f1", "precision_pa", "recall_pa", "f1_pa", "f1_pa_k20",
    "event_recall", "event_precision", "event_f1",
    "range_precision", "range_recall", "range_f1",
    "affiliation_precision", "affiliation_recall", "affiliation_f1",
    "auc_roc", "auc_pr", "vus_roc", "vus_pr", "best_f1", "best_f1_threshold",
]


def test_anomaly_report_keys_types_and_values() -> None:
    labels = np.array(PA_LABELS)
    scores = np.array([0.1, 0.2, 0.8, 0.3, 0.1, 0.9, 0.4, 0.2, 0.1])
    report = anomaly_report(labels, scores, threshold=0.5, max_buffer=3)
    assert sorted(report) == sorted(REPORT_KEYS)
    assert sorted(METRIC_NOTES) == sorted(REPORT_KEYS)
    assert all(type(report[key]) is int for key in ("n", "n_anomalies", "n_events"))
    assert all(type(value) is float for key, value in report.items() if key not in ("n", "n_anomalies", "n_events"))
    json.dumps(report)
    # scores > 0.5 flags indices 2 and 5: the PA_PREDICTIONS case
    assert (report["n"], report["n_anomalies"], report["n_events"]) == (9, 5, 2)
    assert report["predicted_rate"] == pytest.approx(2 / 9)
    assert report["f1"] == pytest.approx(point_metrics(PA_LABELS, PA_PREDICTIONS)["f1"])
    assert (report["precision_pa"], report["recall_pa"], report["f1_pa"]) == pytest.approx((0.75, 0.6, 2 / 3))
    assert report["f1_pa_k20"] == pytest.approx(2 / 3)  # 1 of 3 points = 33% >= 20%: credited as in PA
    assert report["event_f1"] == pytest.approx(0.5)
    assert report["range_f1"] == pytest.approx(range_metrics(PA_LABELS, PA_PREDICTIONS)["range_f1"])
    assert report["vus_pr"] == pytest.approx(vus(labels, scores, max_buffer=3)["vus_pr"])
    assert report["best_f1"] >= report["f1"]
    # the PA%K key follows pa_k
    assert "f1_pa_k50" in anomaly_report(labels, scores, threshold=0.5, pa_k=50, max_buffer=0)
