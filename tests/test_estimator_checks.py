"""scikit-learn's estimator checks on the three estimators. Each check that cannot apply to series models is
listed with its reason; every other check must pass."""

from __future__ import annotations

import warnings

from sklearn.utils.estimator_checks import parametrize_with_checks

from sbts import SBTAnomalyDetector, SBTClassifier, SBTForecaster

SMALL = dict(d_model=8, d_ff=16, n_layers=1, epochs=1, batch_size=32, device="cpu")

FEATURES_ARE_CHANNELS = ("n_features_in_ counts channels, as aeon's n_channels_; a 2-D X is (n_cases, n_timepoints), "
                         "one channel")
STEPS_ARE_NOT_SAMPLES = ("the rows of X are the steps of one series: a step's score depends on the window before "
                         "it, so reordering or subsetting rows changes it")
PYOD_LABELS = "predict follows PyOD (0 normal, 1 anomaly), not scikit-learn's -1/+1"
SKTIME_FIT = ("fit(y, X=None) as in sktime and darts: these checks pass their (X, y) as (y, X), and exogenous X is "
              "refused rather than ignored")

EXPECTED = {
    "SBTClassifier": {
        "check_n_features_in_after_fitting": FEATURES_ARE_CHANNELS,
        "check_n_features_in": FEATURES_ARE_CHANNELS,
        "check_classifiers_train": "an accuracy bar for tabular models: 2-feature blobs read as 2-step series, "
                                   "trained 1 epoch here for speed",
    },
    "SBTAnomalyDetector": {
        "check_outliers_fit_predict": PYOD_LABELS,
        "check_outliers_train": PYOD_LABELS,
        "check_methods_sample_order_invariance": STEPS_ARE_NOT_SAMPLES,
        "check_methods_subset_invariance": STEPS_ARE_NOT_SAMPLES,
    },
    "SBTForecaster": {name: SKTIME_FIT for name in (
        "check_estimators_empty_data_messages", "check_pipeline_consistency", "check_estimators_nan_inf",
        "check_estimator_sparse_tag", "check_estimator_sparse_array", "check_estimator_sparse_matrix",
        "check_estimators_pickle", "check_f_contiguous_array_estimator", "check_methods_sample_order_invariance",
        "check_methods_subset_invariance", "check_fit2d_1sample", "check_fit2d_1feature", "check_dict_unchanged",
        "check_fit_idempotent", "check_fit_check_is_fitted", "check_n_features_in", "check_fit2d_predict1d",
        "check_fit_score_takes_y", "check_estimators_overwrite_params", "check_dont_overwrite_parameters",
        "check_estimators_fit_returns_self", "check_readonly_memmap_input", "check_n_features_in_after_fitting",
        "check_positive_only_tag_during_fit", "check_estimators_dtypes", "check_complex_data", "check_dtype_object")},
}


def expected_failures(estimator) -> dict[str, str]:
    return EXPECTED[type(estimator).__name__]


@parametrize_with_checks([SBTClassifier(**SMALL), SBTAnomalyDetector(window=4, **SMALL),
                          SBTForecaster(window=4, **SMALL)], expected_failed_checks=expected_failures)
def test_scikit_learn_conventions(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checks' tiny data: unstratified validation splits and the like
        check(estimator)
