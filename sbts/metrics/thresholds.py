"""Anomaly-score thresholds: fitted on training/validation scores, plus the leaky paper protocol for comparison.

A time step is predicted anomalous when ``score > threshold`` (strictly greater), everywhere in the project.
``percentile_threshold`` and ``pot_threshold`` (and ``fit_threshold``, which dispatches to them) see only the
reference scores they are given, so they cannot see test scores or labels. ``SPOT`` is a streaming threshold: it
is initialised on reference scores and then updated online, without labels, on the stream it scores.
``relative_threshold`` follows a drifting score level: it flags a score far above the running level of the scores
before it (an exponential moving average of their logarithms), so a test period whose scores sit higher than the
training period's, as on SMD machines 2-8 and 3-4, is not flagged whole (``sbts.heads.anomaly.decision_rule``
applies any fitted threshold step by step, in the task and in the runtime). ``paper_protocol_threshold`` reproduces the official SBT / Anomaly-Transformer protocol, which takes a quantile of
train+val+TEST scores; it is flagged ``uses_test_data=True`` and exists only to compare with published numbers.

Peaks-Over-Threshold (POT) and SPOT follow Siffer et al., "Anomaly detection in streams with extreme value
theory", KDD 2017. The Generalized Pareto Distribution (GPD) is fitted by maximum likelihood with
``scipy.stats.genpareto.fit(peaks, floc=0)`` (scipy's shape ``c`` is the paper's gamma) rather than Grimshaw's
procedure: on exponential, log-normal, chi-square, Student-t, uniform and heavy-tailed samples with 10 to 4,000
peaks, its log-likelihood equalled the maximum of the profile likelihood over a dense grid to within 1e-5
wherever the MLE exists (gamma > -1; for gamma < -1 the likelihood is unbounded and no method has a maximum).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import genpareto

from sbts.errors import SBTSError

THRESHOLD_METHODS = ("percentile", "pot", "relative")

# relative: scores are compared on a log scale (a reconstruction error's level moves by factors, not by offsets);
# the floor keeps log finite for a zero score, far below any score the models give.
RELATIVE_LOG_FLOOR = 1e-12
DEFAULT_DRIFT_SPAN = 1000  # steps the running level averages over (SMD: about 17 hours of minutes)

# Fraction of time steps flagged by the official SBT / Anomaly-Transformer protocol (their scripts pass these as
# percentages: --anormly_ratio 0.5 for SMD, 1 for MSL and SMAP); use with paper_protocol_threshold.
PAPER_ANOMALY_RATIOS = {"SMD": 0.005, "MSL": 0.01, "SMAP": 0.01}

# POT settings of the official SBT code (metrics/pot/constants.py, copied from TranAD's lm_d): ``level`` sets the
# initial threshold, ``risk`` is their q = 1e-5, and ``threshold_multiplier`` scales the final threshold (SMD x1.04).
# ``pot_threshold(scores, **PAPER_POT_SETTINGS["SMD"], fitted_on=...)`` applies them. Two differences remain:
# their initial threshold is the order statistic sorted[int(level * n)] instead of numpy's interpolated quantile,
# and their evaluation replaces the POT threshold by the initial one once a test score exceeds the latter.
PAPER_POT_SETTINGS = {
    "SMD": {"risk": 1e-5, "level": 0.99995, "threshold_multiplier": 1.04},
    "MSL": {"risk": 1e-5, "level": 0.97, "threshold_multiplier": 1.0},
    "SMAP": {"risk": 1e-5, "level": 0.97, "threshold_multiplier": 1.0},
}

# Fewer peaks than this make the two-parameter GPD fit meaningless.
MIN_PEAKS = 10


@dataclass(frozen=True)
class Threshold:
    """A fitted threshold (predict ``score > value``) with a record of what it was fitted on and how."""

    value: float
    method: str
    fitted_on: str
    uses_test_data: bool
    parameters: dict

    def __post_init__(self) -> None:
        value = float(self.value)
        if not math.isfinite(value):
            raise SBTSError(f"threshold value must be finite, got {self.value!r} (method {self.method!r})")
        object.__setattr__(self, "value", value)
        if not isinstance(self.fitted_on, str) or not self.fitted_on.strip():
            raise SBTSError(f"fitted_on must describe the scores the threshold was fitted on, got {self.fitted_on!r}")
        if self.uses_test_data and "test" not in self.fitted_on.lower():
            raise SBTSError(f"a threshold that uses test data must say so in fitted_on, got {self.fitted_on!r}")
        try:
            json.dumps(self.parameters, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise SBTSError(f"threshold parameters must be JSON-safe: {error} in {self.parameters!r}") from None

    def description(self) -> str:
        """One line saying how the threshold was fitted."""
        p = self.parameters
        if self.method == "percentile":
            how = (f"the {p['quantile']:g} quantile ({p['quantile_method']} interpolation), so that a fraction "
                   f"{p['contamination']:g} of the reference exceeds it")
        elif self.method == "pot":
            how = (f"POT (Siffer et al. 2017) at risk {p['risk']:g}: initial threshold {p['initial_threshold']:.6g} "
                   f"(the {p['level']:g} quantile), GPD shape {p['gpd_shape']:.4g} and scale {p['gpd_scale']:.4g} "
                   f"fitted by maximum likelihood to {p['n_peaks']} peaks")
            if p["threshold_multiplier"] != 1.0:
                how += f", times {p['threshold_multiplier']:g}"
        elif self.method == "spot":
            how = (f"SPOT (Siffer et al. 2017) at risk {p['risk']:g}, level {p['level']:g}: threshold in force after "
                   f"{p['n_stream_steps']} stream steps, GPD shape {p['gpd_shape']:.4g} and scale "
                   f"{p['gpd_scale']:.4g} from {p['n_peaks']} peaks")
        elif self.method == "relative":
            how = (f"a score above exp(level + {p['margin']:.4g}) - {p['log_floor']:g}, where level is the moving average "
                   f"(span {p['span']} steps) of log(score + {p['log_floor']:g}) over the steps before; the margin is "
                   f"the {p['quantile']:g} quantile of the reference's excess over its level; shown: the threshold in "
                   "force after the reference")
        elif self.method == "paper_protocol":
            how = (f"the {p['quantile']:g} quantile of train+val+test scores (anomaly ratio {p['anomaly_ratio']:g}), "
                   f"as in the official SBT / Anomaly-Transformer code")
        else:
            how = f"{self.method} with " + ", ".join(f"{name}={value}" for name, value in p.items())
        return f"score > {self.value:.6g}: {how}; fitted on {self.fitted_on}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe record: value, method, fitted_on, uses_test_data, parameters, description."""
        return {
            "value": self.value,
            "method": self.method,
            "fitted_on": self.fitted_on,
            "uses_test_data": bool(self.uses_test_data),
            "parameters": json.loads(json.dumps(self.parameters)),
            "description": self.description(),
        }


def _check_scores(scores: Any, name: str) -> np.ndarray:
    """One score per time step: a non-empty 1-D array of finite numbers (float64)."""
    try:
        array = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise SBTSError(f"{name} must be a 1-D sequence of numbers, got {type(scores).__name__}") from None
    if array.ndim != 1:
        raise SBTSError(f"{name} must be 1-D (one score per time step), got shape {array.shape}")
    if array.size == 0:
        raise SBTSError(f"{name} is empty; a threshold needs at least one score")
    finite = np.isfinite(array)
    if not finite.all():
        first = int(np.argmin(finite))
        raise SBTSError(f"{name} has {int((~finite).sum())} non-finite scores (first at index {first}: "
                        f"{float(array[first])})")
    return array


def check_fraction(value: Any, name: str, upper: float, upper_inclusive: bool, meaning: str) -> float:
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        raise SBTSError(f"{name} must be a number ({meaning}), got {value!r}") from None
    below_upper = fraction <= upper if upper_inclusive else fraction < upper
    if not (math.isfinite(fraction) and fraction > 0.0 and below_upper):
        interval = f"(0, {upper:g}]" if upper_inclusive else f"(0, {upper:g})"
        raise SBTSError(f"{name} must be in {interval} ({meaning}), got {value!r}")
    return fraction


def _check_fitted_on(fitted_on: Any) -> str:
    if not isinstance(fitted_on, str) or not fitted_on.strip():
        raise SBTSError(f"fitted_on must describe the reference scores (e.g. 'validation scores'), got {fitted_on!r}")
    return fitted_on


def percentile_threshold(reference_scores: Any, contamination: float, fitted_on: str) -> Threshold:
    """The (1 - contamination) quantile of training/validation scores, so that ``contamination`` of them exceed it.

    The quantile is numpy's default (method "linear": linear interpolation between the two nearest order
    statistics). With many tied scores the fraction above can be below ``contamination``; it is recorded.
    """
    scores = _check_scores(reference_scores, "reference_scores")
    contamination = check_fraction(contamination, "contamination", 0.5, True,
                                         "the fraction of reference scores expected above the threshold")
    quantile = 1.0 - contamination
    value = float(np.quantile(scores, quantile))
    parameters = {
        "contamination": contamination,
        "quantile": quantile,
        "quantile_method": "linear",
        "n_reference_scores": int(scores.size),
        "reference_fraction_above": float(np.mean(scores > value)),
    }
    return Threshold(value, "percentile", _check_fitted_on(fitted_on), False, parameters)


def check_pot_settings(risk: Any, level: Any) -> tuple[float, float]:
    level = check_fraction(level, "level", 1.0, False, "the quantile of the scores used as initial threshold")
    risk = check_fraction(risk, "risk", 1.0, False, "the probability of a normal score above the threshold")
    if risk + level >= 1.0:
        raise SBTSError(f"risk={risk!r} must be below 1 - level = {1.0 - level:g} (the fraction of scores above the "
                        "initial threshold), or the POT threshold falls below the initial threshold")
    return risk, level


def _peaks_over(scores: np.ndarray, level: float) -> tuple[float, np.ndarray]:
    """Initial threshold t (the ``level`` quantile, linear interpolation) and the peaks: scores - t for scores > t."""
    initial_threshold = float(np.quantile(scores, level))
    peaks = scores[scores > initial_threshold] - initial_threshold
    if peaks.size < MIN_PEAKS:
        raise SBTSError(f"only {peaks.size} of {scores.size} scores exceed the initial threshold at level={level!r}; "
                        f"POT needs at least {MIN_PEAKS} peaks: lower level so that (1 - level) x {scores.size} is "
                        f"well above {MIN_PEAKS}, or give more scores")
    return initial_threshold, peaks


def _fit_gpd(peaks: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood GPD (location 0) fitted to the peaks: (shape gamma, scale sigma)."""
    if np.ptp(peaks) == 0.0:
        raise SBTSError(f"all {peaks.size} peaks over the initial threshold are equal ({peaks[0]:.6g}); "
                        "a GPD cannot be fitted to a constant tail: use percentile_threshold")
    shape, _, scale = genpareto.fit(peaks, floc=0)
    if not (math.isfinite(shape) and math.isfinite(scale) and scale > 0.0):
        raise SBTSError(f"the GPD fit to {peaks.size} peaks failed (shape={shape!r}, scale={scale!r})")
    return float(shape), float(scale)


def _pot_quantile(initial_threshold: float, shape: float, scale: float, risk: float, n_scores: int,
                  n_peaks: int) -> float:
    """Siffer et al. eq. (1): z_q = t + (sigma/gamma) ((q n / N_t)^-gamma - 1), or t - sigma log(q n / N_t)."""
    ratio = risk * n_scores / n_peaks
    if ratio >= 1.0:
        raise SBTSError(f"risk={risk!r} must be below the fraction of scores above the initial threshold "
                        f"({n_peaks}/{n_scores} = {n_peaks / n_scores:.3g}): lower risk or level")
    if shape == 0.0:
        value = initial_threshold - scale * math.log(ratio)
    else:
        value = initial_threshold + scale / shape * (ratio ** -shape - 1.0)
    if not math.isfinite(value):
        raise SBTSError(f"the POT threshold is not finite (GPD shape={shape!r}, scale={scale!r}, risk={risk!r})")
    return value


def pot_threshold(reference_scores: Any, risk: float = 1e-4, level: float = 0.98, *, fitted_on: str,
                  threshold_multiplier: float = 1.0) -> Threshold:
    """Peaks-Over-Threshold (Siffer et al., KDD 2017): the score exceeded with probability ``risk``, from a GPD tail.

    ``level``: the quantile of the reference scores taken as initial threshold t; the peaks are the excesses
    ``score - t`` of the scores above it, to which a GPD is fitted. ``risk`` (the paper's q): the probability that a
    normal score exceeds the returned threshold; it must be below the fraction of scores above t. The defaults
    (risk 1e-4, level 0.98) are the usual SPOT settings; ``PAPER_POT_SETTINGS`` holds those of the official SBT
    code. ``threshold_multiplier`` scales the final threshold (1.04 for SMD in that code; 1 otherwise).
    """
    scores = _check_scores(reference_scores, "reference_scores")
    risk, level = check_pot_settings(risk, level)
    multiplier = float(threshold_multiplier)
    if not (math.isfinite(multiplier) and multiplier > 0.0):
        raise SBTSError(f"threshold_multiplier must be a positive number, got {threshold_multiplier!r}")
    initial_threshold, peaks = _peaks_over(scores, level)
    shape, scale = _fit_gpd(peaks)
    value = _pot_quantile(initial_threshold, shape, scale, risk, scores.size, peaks.size) * multiplier
    parameters = {
        "risk": risk,
        "level": level,
        "initial_threshold": initial_threshold,
        "quantile_method": "linear",
        "gpd_shape": shape,
        "gpd_scale": scale,
        "gpd_fit": "maximum likelihood, scipy.stats.genpareto.fit(peaks, floc=0)",
        "n_peaks": int(peaks.size),
        "n_reference_scores": int(scores.size),
        "threshold_multiplier": multiplier,
    }
    return Threshold(value, "pot", _check_fitted_on(fitted_on), False, parameters)


class SPOT:
    """Streaming POT (Siffer et al., KDD 2017, Algorithm 1 "SPOT") for high anomaly scores.

    ``fit`` runs POT on an initial batch; ``step`` then classifies each new score against the threshold in force
    and, when the score is a peak (above the initial threshold t) but not an anomaly, adds it to the peaks and
    updates the threshold. Anomalies are not added, so that they do not pull the tail model towards them. Only
    scores are used, never labels: in an offline evaluation SPOT sees the test scores one by one, as it would live.

    Cost: a normal step takes about a microsecond; a peak step (about 1 - level of the normal steps) refits the GPD
    with scipy: about 4 ms with 100 peaks, 6 ms with 4,000, 17 ms with 20,000 (one CPU core). ``refit_every=k``
    refits only every k-th new peak; in between, the threshold still follows the peak count with the last fit.
    """

    def __init__(self, risk: float = 1e-4, level: float = 0.98, refit_every: int = 1) -> None:
        self.risk, self.level = check_pot_settings(risk, level)
        if isinstance(refit_every, bool) or not isinstance(refit_every, int) or refit_every < 1:
            raise SBTSError(f"refit_every must be a positive integer (refit the GPD every k-th peak), got "
                            f"{refit_every!r}")
        self.refit_every = refit_every
        self.threshold: float | None = None

    def fit(self, initial_scores: Any, fitted_on: str = "initial scores") -> SPOT:
        """POT on the initial batch (training or validation scores); resets any stream already seen."""
        scores = _check_scores(initial_scores, "initial_scores")
        self.fitted_on = _check_fitted_on(fitted_on)
        self.initial_threshold, peaks = _peaks_over(scores, self.level)
        self.peaks: list[float] = peaks.tolist()
        self.gpd_shape, self.gpd_scale = _fit_gpd(peaks)
        self.n_initial_scores = int(scores.size)
        self.n_observed = int(scores.size)  # the paper's k: scores seen, anomalies excluded
        self.n_stream_steps = 0
        self.n_stream_anomalies = 0
        self._peaks_since_refit = 0
        self.threshold = _pot_quantile(self.initial_threshold, self.gpd_shape, self.gpd_scale, self.risk,
                                       self.n_observed, len(self.peaks))
        return self

    def step(self, score: float) -> tuple[bool, float]:
        """(is_anomaly, threshold the score was compared with); then update the model if the score is a peak."""
        if self.threshold is None:
            raise SBTSError("SPOT.step called before SPOT.fit(initial_scores)")
        score = float(score)
        if not math.isfinite(score):
            raise SBTSError(f"SPOT received a non-finite score {score!r} at stream step {self.n_stream_steps}")
        self.n_stream_steps += 1
        threshold = self.threshold
        if score > threshold:
            self.n_stream_anomalies += 1
            return True, threshold
        self.n_observed += 1
        if score > self.initial_threshold:
            self.peaks.append(score - self.initial_threshold)
            self._peaks_since_refit += 1
            if self._peaks_since_refit >= self.refit_every:
                self.gpd_shape, self.gpd_scale = _fit_gpd(np.asarray(self.peaks))
                self._peaks_since_refit = 0
            self.threshold = _pot_quantile(self.initial_threshold, self.gpd_shape, self.gpd_scale, self.risk,
                                           self.n_observed, len(self.peaks))
        return False, threshold

    def run(self, scores: Any) -> tuple[np.ndarray, np.ndarray]:
        """``step`` over a sequence: (is_anomaly flags, thresholds used), with ``flags == scores > thresholds``."""
        stream = _check_scores(scores, "scores")
        flags = np.zeros(stream.size, dtype=bool)
        thresholds = np.empty(stream.size, dtype=np.float64)
        for index, score in enumerate(stream):
            flags[index], thresholds[index] = self.step(score)
        return flags, thresholds

    def to_threshold(self) -> Threshold:
        """The threshold in force now, to apply to scores that come after the stream seen so far."""
        if self.threshold is None:
            raise SBTSError("SPOT.to_threshold called before SPOT.fit(initial_scores)")
        parameters = {
            "risk": self.risk,
            "level": self.level,
            "refit_every": self.refit_every,
            "initial_threshold": self.initial_threshold,
            "quantile_method": "linear",
            "gpd_shape": self.gpd_shape,
            "gpd_scale": self.gpd_scale,
            "gpd_fit": "maximum likelihood, scipy.stats.genpareto.fit(peaks, floc=0)",
            "n_peaks": len(self.peaks),
            "n_initial_scores": self.n_initial_scores,
            "n_stream_steps": self.n_stream_steps,
            "n_stream_anomalies": self.n_stream_anomalies,
        }
        fitted_on = (f"initialised on {self.fitted_on}; updated online on the scored stream "
                     f"({self.n_stream_steps:,} steps, without labels)")
        return Threshold(self.threshold, "spot", fitted_on, False, parameters)


def check_span(span: Any) -> int:
    if isinstance(span, bool) or not isinstance(span, int) or span < 1:
        raise SBTSError(f"drift span must be a positive whole number of steps, got {span!r}")
    return span


def relative_threshold(reference_scores: Any, contamination: float, span: int = DEFAULT_DRIFT_SPAN, *,
                       fitted_on: str) -> Threshold:
    """A threshold relative to the running level of the scores, fitted on reference scores: a score is flagged
    above ``exp(level + margin) - log_floor``, where ``level`` is the exponential moving average (weight 1/span)
    of ``log(score + log_floor)`` over the steps before (``sbts.heads.anomaly.RelativeRule`` applies it).

    The level starts at the median log-score of the reference's first ``span`` steps and runs over the whole
    reference; the margin is the (1 - contamination) quantile of each reference step's excess over the level before
    it, so that about ``contamination`` of the reference is flagged. The recorded level is the one at the end of the
    reference: the rule goes on from there on the steps that follow it (the test series continues the training one).
    """
    scores = _check_scores(reference_scores, "reference_scores")
    contamination = check_fraction(contamination, "contamination", 0.5, True,
                                   "the fraction of reference scores above the threshold")
    span = check_span(span)
    log_scores = np.log(np.maximum(scores, 0.0) + RELATIVE_LOG_FLOOR)
    start = float(np.median(log_scores[:span]))
    levels = np.empty_like(log_scores)  # the level before each step
    level, weight = start, 1.0 / span
    for index, log_score in enumerate(log_scores):
        levels[index] = level
        level += weight * (log_score - level)
    quantile = 1.0 - contamination
    margin = float(np.quantile(log_scores - levels, quantile))
    parameters = {
        "contamination": contamination,
        "quantile": quantile,
        "span": span,
        "log_floor": RELATIVE_LOG_FLOOR,
        "margin": margin,
        "initial_level": start,
        "level": float(level),
        "n_reference_scores": int(scores.size),
        "reference_fraction_above": float(np.mean(log_scores - levels > margin)),
    }
    value = math.exp(level + margin) - RELATIVE_LOG_FLOOR
    return Threshold(value, "relative", _check_fitted_on(fitted_on), False, parameters)


def paper_protocol_threshold(train_scores: Any, val_scores: Any, test_scores: Any, anomaly_ratio: float) -> Threshold:
    """The official SBT / Anomaly-Transformer threshold: the (1 - anomaly_ratio) quantile of train+val+TEST scores.

    It leaks the test scores into the threshold (``uses_test_data=True``); use it only to compare with published
    numbers. ``anomaly_ratio`` is a fraction (``PAPER_ANOMALY_RATIOS``), not the percentage of their scripts. The
    quantile is numpy's linear interpolation, as their ``np.percentile``.
    """
    train = _check_scores(train_scores, "train_scores")
    val = _check_scores(val_scores, "val_scores") if np.size(val_scores) else np.zeros(0)  # no validation part
    test = _check_scores(test_scores, "test_scores")
    anomaly_ratio = check_fraction(anomaly_ratio, "anomaly_ratio", 0.5, True,
                                         "a fraction of time steps, e.g. 0.005 for SMD, not a percentage")
    quantile = 1.0 - anomaly_ratio
    value = float(np.quantile(np.concatenate([train, val, test]), quantile))
    parameters = {
        "anomaly_ratio": anomaly_ratio,
        "quantile": quantile,
        "quantile_method": "linear",
        "n_train_scores": int(train.size),
        "n_val_scores": int(val.size),
        "n_test_scores": int(test.size),
    }
    fitted_on = "train+val+TEST scores (leaks test data; for comparison with published numbers only)"
    return Threshold(value, "paper_protocol", fitted_on, True, parameters)


def fit_threshold(method: str, *, reference_scores: Any, fitted_on: str, contamination: float | None = None,
                  risk: float | None = None, level: float | None = None, span: int | None = None) -> Threshold:
    """Fit a non-leaky threshold by name (``THRESHOLD_METHODS``) on training/validation scores only."""
    if method not in THRESHOLD_METHODS:
        raise SBTSError(f"unknown threshold method {method!r}; known: {', '.join(THRESHOLD_METHODS)} "
                        "(the leaky paper protocol is paper_protocol_threshold)")
    given = {"contamination": contamination, "risk": risk, "level": level, "span": span}
    applicable = {"percentile": ("contamination",), "pot": ("risk", "level"),
                  "relative": ("contamination", "span")}[method]
    not_applicable = [name for name, value in given.items() if value is not None and name not in applicable]
    if not_applicable:
        raise SBTSError(f"{', '.join(not_applicable)} does not apply to threshold method {method!r} "
                        f"(it takes {', '.join(applicable)})")
    if method in ("percentile", "relative"):
        if contamination is None:
            raise SBTSError(f"threshold method {method!r} needs contamination (the fraction of reference scores "
                            "above the threshold)")
        if method == "relative":
            return relative_threshold(reference_scores, contamination, DEFAULT_DRIFT_SPAN if span is None else span,
                                      fitted_on=fitted_on)
        return percentile_threshold(reference_scores, contamination, fitted_on)
    return pot_threshold(reference_scores, risk=1e-4 if risk is None else risk, level=0.98 if level is None else level,
                         fitted_on=fitted_on)
