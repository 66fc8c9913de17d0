"""Dataset reading, resolution and preprocessing."""

from sbts.data.anomaly import (AnomalyData, available_anomaly_datasets, canonical_anomaly_spec, load_anomaly,
                               read_series)
from sbts.data.forecasting import (SPLIT_METHODS, ForecastData, SplitBounds, available_forecasting_datasets,
                                   canonical_forecasting_spec, load_forecasting, split_bounds)
from sbts.data.missing import MissingValueWarning
from sbts.data.preprocessing import ChannelScaler, fill_missing, pad_to_length
from sbts.data.ts_format import TSData, read_ts
from sbts.data.uea import (KNOWN_SHA256, available_uea_datasets, canonical_spec, load_classification,
                           resolve_classification, sha256_file)

__all__ = [
    "KNOWN_SHA256",
    "AnomalyData",
    "available_anomaly_datasets",
    "canonical_anomaly_spec",
    "load_anomaly",
    "read_series",
    "SPLIT_METHODS",
    "ForecastData",
    "SplitBounds",
    "available_forecasting_datasets",
    "canonical_forecasting_spec",
    "load_forecasting",
    "split_bounds",
    "ChannelScaler",
    "MissingValueWarning",
    "TSData",
    "available_uea_datasets",
    "canonical_spec",
    "fill_missing",
    "load_classification",
    "pad_to_length",
    "read_ts",
    "resolve_classification",
    "sha256_file",
]
