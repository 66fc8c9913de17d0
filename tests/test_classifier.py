"""The scikit-learn style SBTClassifier."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import synthetic_cases
from sklearn.base import clone

from sbts.errors import SBTSError
from sbts.tasks.classification import (DEFAULT_EPOCHS, LENGTH_MARGIN, SPARSE_EPOCHS, ClassificationTask,
                                       SBTClassifier)
from sbts.tasks.runs import build_run_spec

FAST = dict(d_model=32, d_ff=32, epochs=20, batch_size=8, device="cpu", random_state=0)


@pytest.fixture(scope="module")
def equal_length():
    train, train_labels = synthetic_cases(60, min_len=16, max_len=16, seed=1)
    test, test_labels = synthetic_cases(30, min_len=16, max_len=16, seed=2)
    to_int = lambda labels: np.array([int(label[1:]) for label in labels])  # noqa: E731
    return np.stack(train), to_int(train_labels), np.stack(test), to_int(test_labels)


@pytest.mark.parametrize("model", ["sbt", "dense"])
def test_fit_predict_on_separable_data(equal_length, model):
    X, y, X_test, y_test = equal_length
    clf = SBTClassifier(model=model, **FAST).fit(X, y)
    proba = clf.predict_proba(X_test)
    assert proba.shape == (30, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    predictions = clf.predict(X_test)
    assert predictions.dtype.kind == "i" and set(predictions) <= {0, 1, 2}  # labels keep their type
    assert clf.score(X_test, y_test) >= 0.9
    assert clf.n_features_in_ == 3 and list(clf.classes_) == [0, 1, 2]  # np.unique(y): type and order kept


def test_unequal_lengths_as_a_list():
    train, labels = synthetic_cases(45, seed=3)
    test, test_labels = synthetic_cases(15, seed=4, max_len=18)
    clf = SBTClassifier(**FAST).fit(train, labels)
    assert clf.predict(test).shape == (15,)
    assert clf.max_len_ == LENGTH_MARGIN * max(s.shape[1] for s in train)


def test_predicts_series_longer_than_the_training_ones():
    """Fitted on series of 12 to 16 steps, it predicts series of 20 (within max_len) and refuses longer ones
    than max_len with the length and the limit."""
    train, labels = synthetic_cases(45, seed=3, min_len=12, max_len=16)
    longer, longer_labels = synthetic_cases(15, seed=4, min_len=20, max_len=20)
    clf = SBTClassifier(**FAST).fit(train, labels)
    assert clf.score(longer, longer_labels) >= 0.8  # the classes are frequencies: longer series show them too
    too_long, _ = synthetic_cases(2, seed=5, min_len=33, max_len=33)
    with pytest.raises(SBTSError, match="33 steps; this model takes at most 32 .max_len"):
        clf.predict(too_long)


def test_params_follow_scikit_learn():
    clf = SBTClassifier(density=0.25, epochs=3)
    params = clf.get_params()
    assert params["density"] == 0.25 and params["epochs"] == 3
    clf.set_params(density=0.1)
    assert clf.density == 0.1
    copy = clone(clf)
    assert copy.get_params() == clf.get_params() and copy is not clf


def test_bad_inputs(equal_length):
    X, y, X_test, _ = equal_length
    with pytest.raises(SBTSError, match="not fitted"):
        SBTClassifier().predict(X_test)
    with pytest.raises(SBTSError, match="labels"):
        SBTClassifier(**FAST).fit(X, y[:-1])
    with pytest.raises(SBTSError, match="shape"):
        SBTClassifier(**FAST).fit(X[0], y)
    with pytest.raises(SBTSError, match="density"):
        SBTClassifier(**{**FAST, "epochs": 1}, density=0.0).fit(X, y)
    clf = SBTClassifier(**{**FAST, "epochs": 1}).fit(X, y)
    with pytest.raises(SBTSError, match="channels"):
        clf.predict(X_test[:, :2])
    with pytest.raises(SBTSError, match="max_len"):
        clf.predict(np.concatenate([X_test, X_test, X_test], axis=2))


def test_classes_follow_numpy_unique_order():
    train, _ = synthetic_cases(44, min_len=16, max_len=16, seed=7)
    y = np.arange(44) % 11  # labels 0..10: string sorting would put 10 before 2
    clf = SBTClassifier(**{**FAST, "epochs": 1}, val_fraction=0.0).fit(np.stack(train), y)
    assert list(clf.classes_) == list(range(11))
    assert clf.predict_proba(np.stack(train[:3])).shape == (3, 11)


@pytest.mark.parametrize("model, options, epochs", [
    ("sbt", {}, DEFAULT_EPOCHS),  # density 0.5
    ("sbt", {"density": 0.25}, SPARSE_EPOCHS),
    ("sbt", {"sparsity": 0.9}, SPARSE_EPOCHS),
    ("dense", {}, DEFAULT_EPOCHS),
])
def test_the_epoch_budget_follows_the_model(synthetic_ts, model, options, epochs):
    task = ClassificationTask()
    source = task.load(str(synthetic_ts))
    spec = build_run_spec("classification", data=str(synthetic_ts), model_name=model, config_file=None,
                          model_overrides=options, train_overrides={})
    assert task.run_config(spec, source).train.epochs == epochs
    given = build_run_spec("classification", data=str(synthetic_ts), model_name=model, config_file=None,
                           model_overrides=options, train_overrides={"epochs": 7})
    assert task.run_config(given, source).train.epochs == 7  # a given budget is kept whatever the model


def test_the_paper_preset_keeps_its_budget():
    spec = build_run_spec("classification", data="UEA/JapaneseVowels", model_name="sbt", config_file=None,
                          model_overrides={}, train_overrides={})
    assert spec["train"]["epochs"] == 250 and spec["model"]["density"] == 0.5  # the preset, not the default rule
