"""The test series' anomaly scores against the threshold, with the labelled anomaly segments shaded.

Reads a run directory's ``test_scores.csv`` and ``metrics.json``; needs matplotlib (``pip install
'sbts[plot]'``), imported only when a plot is drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sbts.atomic import read_json
from sbts.errors import DataError
from sbts.metrics.anomaly import segments
from sbts.report.figure import pyplot, save, step_range


def read_scores(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray | None, float, str]:
    """Scores, labels (or None), the threshold of each step and the method's name, from an anomaly run directory."""
    run_dir = Path(run_dir)
    metrics = read_json(run_dir / "metrics.json", "run metrics")
    if not isinstance(metrics, dict) or metrics.get("task") != "anomaly" or "threshold" not in metrics:
        raise DataError(f"{run_dir}: not a finished anomaly-detection run (metrics.json has no threshold)")
    path = run_dir / metrics.get("scores_file", "test_scores.csv")
    try:
        with open(path, encoding="utf-8") as handle:
            header = handle.readline().strip().split(",")
            table = np.loadtxt(handle, delimiter=",", ndmin=2)
    except FileNotFoundError:
        raise DataError(f"{path}: scores file not found") from None
    except ValueError as exc:
        raise DataError(f"{path}: not a scores table ({exc})") from None
    if header[:2] != ["step", "score"] or table.shape[1] != len(header):
        raise DataError(f"{path}: expected columns step,score[,threshold],predicted[,label], got {','.join(header)}")
    labels = table[:, header.index("label")].astype(np.int8) if "label" in header else None
    # Runs since the relative threshold record the threshold of every step; older ones only the fitted value.
    threshold = (table[:, header.index("threshold")] if "threshold" in header
                 else np.full(len(table), float(metrics["threshold"]["value"])))
    return table[:, 1], labels, threshold, str(metrics["threshold"]["method"])


def plot_scores(run_dir: str | Path, output: str | Path, *, start: int | None = 0, end: int | None = None,
                linear: bool = False) -> Path:
    """Draw steps ``start`` (None: 0) to ``end`` of the test scores to ``output`` (png, pdf or svg, by its suffix)."""
    plt = pyplot(output)
    scores, labels, threshold, method = read_scores(run_dir)
    start, end = step_range(start, end, len(scores))
    steps = np.arange(start, end)
    figure, axes = plt.subplots(figsize=(12, 3.5), constrained_layout=True)
    if labels is not None:
        for first, last in segments(labels[start:end]):
            axes.axvspan(start + first - 0.5, start + last - 0.5, color="tab:red", alpha=0.2, linewidth=0)
    axes.plot(steps, scores[start:end], linewidth=0.7, color="tab:blue", label="anomaly score")
    axes.step(steps, threshold[start:end], where="mid", color="black", linestyle="--", linewidth=1,
              label=f"threshold ({method})")
    if not linear and scores[start:end].min() > 0:  # a log axis shows the spread of small scores
        axes.set_yscale("log")
    if labels is not None:
        axes.fill_between([], [], color="tab:red", alpha=0.2, label="labelled anomalies")
    axes.set_xlabel("test step")
    axes.set_ylabel("score (reconstruction MSE)")
    axes.set_title(f"{Path(run_dir).name}: test scores")
    axes.legend(loc="upper right", fontsize="small")
    return save(figure, output)
