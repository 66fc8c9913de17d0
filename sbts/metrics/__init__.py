"""Evaluation metrics (numpy, scipy and scikit-learn only; no torch).

``sbts.metrics.anomaly``: anomaly-detection metrics for labels, binary predictions and anomaly scores.
``sbts.metrics.thresholds``: thresholds fitted on training or validation scores (percentile, POT, SPOT),
and the paper's leaky protocol, labelled as such.
``sbts.metrics.forecasting``: point-forecast errors on the standardised scale and in original units.
``sbts.metrics.reported``: which metric a task reports and optimises, and which way is better.
Each module's public names are re-exported here with one import statement (``name as name`` marks a re-export).
"""

from sbts.metrics.anomaly import (
    DEFAULT_MAX_BUFFER as DEFAULT_MAX_BUFFER,
    METRIC_NOTES as METRIC_NOTES,
    affiliation_metrics as affiliation_metrics,
    anomaly_report as anomaly_report,
    auc_pr as auc_pr,
    auc_roc as auc_roc,
    best_f1 as best_f1,
    event_metrics as event_metrics,
    point_adjust as point_adjust,
    point_metrics as point_metrics,
    range_metrics as range_metrics,
    segments as segments,
    vus as vus,
)
from sbts.metrics.forecasting import (
    FORECAST_METRIC_NOTES as FORECAST_METRIC_NOTES,
    forecast_errors as forecast_errors,
)
from sbts.metrics.reported import (
    MAXIMIZE as MAXIMIZE,
    MINIMIZE as MINIMIZE,
    ReportedMetric as ReportedMetric,
)
from sbts.metrics.thresholds import (
    PAPER_ANOMALY_RATIOS as PAPER_ANOMALY_RATIOS,
    PAPER_POT_SETTINGS as PAPER_POT_SETTINGS,
    SPOT as SPOT,
    THRESHOLD_METHODS as THRESHOLD_METHODS,
    Threshold as Threshold,
    fit_threshold as fit_threshold,
    paper_protocol_threshold as paper_protocol_threshold,
    percentile_threshold as percentile_threshold,
    pot_threshold as pot_threshold,
)
