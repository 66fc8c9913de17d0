"""Anomaly detection end to end on small synthetic series: windows and scores (every step once), Step-T
paths, thresholds that never see test data, streaming = batch, runs, CLI, export and the runtime."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from sbts.cli.main import main
from sbts.data.windows import history_for, training_window_starts, windows_ending_at_every_step
from sbts.errors import DataError, SBTSError
from sbts.models import create_model
from sbts.runtime import load
from sbts.tasks import anomaly
from sbts.tasks.anomaly import (AnomalyOptions, AnomalyTask, SBTAnomalyDetector, SplitScores, detection_report,
                                split_and_scale)

train_run = AnomalyTask().train_run

WINDOW = 8
TINY = {"d_model": 8, "n_heads": 2, "n_layers": 2, "d_ff": 16, "max_len": WINDOW}


def synthetic_series(n_train=400, n_test=300, channels=3, seed=0):
    """Sine waves with noise; the test part has two injected anomaly segments (labels 1 there)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_train + n_test)
    phases = rng.uniform(0, 2 * np.pi, channels)
    series = np.sin(2 * np.pi * t[:, None] / 25 + phases) + 0.05 * rng.standard_normal((len(t), channels))
    train, test = series[:n_train], series[n_train:].copy()
    labels = np.zeros(n_test, dtype=np.int8)
    for start, length in ((100, 10), (220, 5)):
        test[start:start + length] += 3.0
        labels[start:start + length] = 1
    return train, test, labels


def write_folder(folder, train, test, labels=None, fmt="%.6f"):
    folder.mkdir(parents=True, exist_ok=True)
    np.savetxt(folder / "train.csv", train, delimiter=",", fmt=fmt)
    np.savetxt(folder / "test.csv", test, delimiter=",", fmt=fmt)
    if labels is not None:
        np.savetxt(folder / "test_label.csv", labels, fmt="%d")
    return folder


def spec(folder, model_name="sbt", epochs=2, **task_options):
    return {"task": "anomaly", "data": str(folder), "model_name": model_name,
            "model": dict(TINY, **({"density": 0.5} if model_name == "sbt" else {})),
            "train": {"epochs": epochs, "batch_size": 32, "stride": 2, "val_fraction": 0.25, "device": "cpu"},
            "task_options": task_options}


@pytest.fixture(scope="module")
def series():
    return synthetic_series()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, series):
    root = tmp_path_factory.mktemp("anomaly")
    folder = write_folder(root / "data", *series)
    metrics = train_run(spec(folder), root / "run", verbose=False)
    return root / "run", folder, metrics


# --- windows ---------------------------------------------------------------------------------

def test_training_windows_cover_the_series_to_its_last_step():
    assert training_window_starts(20, 8, 5).tolist() == [0, 5, 10, 12]
    assert training_window_starts(8, 8, 3).tolist() == [0]
    assert training_window_starts(18, 8, 5).tolist() == [0, 5, 10]


def test_windows_end_at_every_step_with_context_then_repeated_first_row():
    series = np.arange(5, dtype=float)[:, None]
    context = np.array([[-2.0], [-1.0]])
    windows = windows_ending_at_every_step(history_for(series, 4, context), 4)
    assert windows.shape == (5, 4, 1)
    assert windows[0, :, 0].tolist() == [-2, -2, -1, 0]  # two context rows; the earliest one repeated once
    assert windows[4, :, 0].tolist() == [1, 2, 3, 4]
    alone = windows_ending_at_every_step(history_for(series, 4), 4)
    assert alone[0, :, 0].tolist() == [0, 0, 0, 0] and alone[2, :, 0].tolist() == [0, 0, 1, 2]
    assert [w[-1, 0] for w in alone] == series[:, 0].tolist()  # window i ends at step i


def test_score_of_a_step_depends_on_its_window_only(series):
    train, test, _ = series
    detector = SBTAnomalyDetector(epochs=1, window=WINDOW, d_model=8, d_ff=16, stride=4, device="cpu",
                                  threshold="percentile").fit(train)
    base = detector.decision_function(test[:40], context=train)
    later = test[:40].copy()
    later[30] += 5.0  # changes the scores of steps 30 .. 30 + w - 1 only
    changed = np.flatnonzero(~np.isclose(detector.decision_function(later, context=train), base, rtol=1e-6))
    assert changed.min() == 30 and changed.max() <= 30 + WINDOW - 1 and len(changed) >= 2


# --- Step-T paths ----------------------------------------------------------------------------

@pytest.mark.parametrize("attention,invariant", [("step_t", True), ("full", False)])
def test_step_t_last_output_never_reads_the_last_steps_own_key_or_value(attention, invariant):
    """Perturb the last row of every layer's keys and values: under Step-T the reconstruction of the last
    step is unchanged (it reaches itself only through its query and the residual path)."""
    model = create_model("sbt", in_channels=3, out_dim=3, attention=attention, norm="none", **TINY).eval()
    x = torch.randn(4, WINDOW, 3, generator=torch.Generator().manual_seed(0))

    def perturb_last_row(module, inputs, output):
        output = output.clone()
        output[:, -1] += 10.0
        return output

    with torch.no_grad():
        clean = model(x)[:, -1]
        handles = [proj.register_forward_hook(perturb_last_row) for layer in model.layers
                   for proj in (layer.attention.k_proj, layer.attention.v_proj)]
        perturbed = model(x)[:, -1]
        for handle in handles:
            handle.remove()
    assert torch.allclose(clean, perturbed, atol=1e-6) is invariant


def test_training_loss_is_the_last_step_reconstruction_only():
    model = create_model("sbt", in_channels=3, out_dim=3, attention="step_t", norm="none", **TINY)
    x = torch.randn(5, WINDOW, 3, generator=torch.Generator().manual_seed(1))
    expected = ((model(x)[:, -1] - x[:, -1]) ** 2).mean()
    torch.testing.assert_close(anomaly.AnomalyTask().training_loss(model, (x,)), expected)


# --- runs ------------------------------------------------------------------------------------

def test_run_scores_every_test_step_once_and_reports_everything(trained_run, series):
    run_dir, _, metrics = trained_run
    _, test, labels = series
    table = np.loadtxt(run_dir / "test_scores.csv", delimiter=",", skiprows=1)
    assert table.shape == (len(test), 5)  # step, score, threshold, predicted, label
    assert table[:, 0].tolist() == list(range(len(test)))
    assert np.array_equal(table[:, 4], labels)
    np.testing.assert_allclose(table[:, 2], metrics["threshold"]["value"], rtol=1e-8)  # percentile: fixed
    assert np.array_equal(table[:, 3], table[:, 1] > table[:, 2])
    for key in ("f1", "f1_pa", "f1_pa_k20", "auc_pr", "auc_roc", "vus_pr", "vus_roc", "range_f1", "event_f1",
                "affiliation_precision", "affiliation_recall", "best_f1"):
        assert key in metrics["test"], key
    assert metrics["n_test"] == len(test)
    assert metrics["threshold"]["uses_test_data"] is False and "validation" in metrics["threshold"]["fitted_on"]
    assert metrics["paper_protocol"]["uses_test_data"] is True and "TEST" in metrics["paper_protocol"]["note"]
    assert set(metrics["thresholds_compared"]) == {"pot", "percentile", "relative"}
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk["test"]["f1"] == metrics["test"]["f1"]


def test_threshold_does_not_change_with_test_data_or_labels(tmp_path, series):
    train, test, labels = series
    rng = np.random.default_rng(5)
    other_test = test + rng.normal(0, 2.0, test.shape)
    other_labels = 1 - labels
    first = train_run(spec(write_folder(tmp_path / "a", train, test, labels), epochs=1), tmp_path / "ra",
                      verbose=False)
    second = train_run(spec(write_folder(tmp_path / "b", train, other_test, other_labels), epochs=1), tmp_path / "rb",
                       verbose=False)
    assert first["threshold"] == second["threshold"]
    assert first["test"]["f1"] != second["test"]["f1"]  # the test data did change what was measured
    assert first["paper_protocol"]["value"] != second["paper_protocol"]["value"]  # the leaky one moves with it


def test_detection_report_threshold_ignores_test_scores_and_labels():
    rng = np.random.default_rng(0)
    fit, val = rng.exponential(size=3000), rng.exponential(size=1000)
    splits = split_and_scale(rng.normal(size=(4000, 2)), rng.normal(size=(500, 2)),
                             (rng.random(500) < 0.1).astype(np.int8), window=4, val_fraction=0.25, stride=1)
    for method in ("pot", "percentile"):
        options = AnomalyOptions(threshold=method)
        thresholds = []
        for seed in (1, 2):
            test = np.random.default_rng(seed).exponential(size=500) * seed
            splits.labels = (np.random.default_rng(seed).random(500) < 0.2).astype(np.int8)
            threshold, report = detection_report(SplitScores(fit, val, test, 0.0), splits, options)
            thresholds.append(threshold.value)
            assert report["threshold"]["method"] == method
        assert thresholds[0] == thresholds[1]


def test_resume_gives_the_same_run(tmp_path, series):
    folder = write_folder(tmp_path / "data", *series)
    straight = train_run(spec(folder, epochs=3), tmp_path / "straight", verbose=False)
    train_run(spec(folder, epochs=2), tmp_path / "resumed", verbose=False)
    resumed = train_run({}, tmp_path / "resumed", resume=True, verbose=False, train_overrides={"epochs": 3})
    assert resumed["threshold"] == straight["threshold"]
    assert resumed["test"] == straight["test"]


def test_evaluate_run_reproduces_the_recorded_metrics(trained_run):
    run_dir, _, metrics = trained_run
    again = anomaly.AnomalyTask().evaluate_run(run_dir, device="cpu")
    assert again["threshold"] == metrics["threshold"]
    assert again["test"] == pytest.approx(metrics["test"], nan_ok=True)


# --- estimator, streaming, export ------------------------------------------------------------

@pytest.fixture(scope="module")
def detector(series):
    train, _, _ = series
    return SBTAnomalyDetector(epochs=2, window=WINDOW, d_model=8, d_ff=16, stride=2, device="cpu",
                              threshold="percentile", contamination=0.02).fit(train)


def test_estimator_api(detector, series):
    train, test, labels = series
    scores = detector.decision_function(test, context=train)
    assert scores.shape == (len(test),) and np.isfinite(scores).all()
    np.testing.assert_array_equal(detector.score_samples(test, context=train), -scores)
    np.testing.assert_array_equal(detector.predict(test, context=train), (scores > detector.threshold_).astype(int))
    assert detector.decision_scores_.shape == (len(train),)
    assert 0 < detector.labels_.mean() < 0.05  # about the 2 % contamination of the validation scores
    assert scores[labels == 1].mean() > 3 * scores[labels == 0].mean()  # the injected segments stand out
    with pytest.raises(SBTSError, match="not fitted"):
        SBTAnomalyDetector().decision_function(test)
    with pytest.raises(DataError, match="expected shape"):
        detector.decision_function(test[:, :2])


def test_streaming_scores_equal_batch_scores(detector, series):
    train, test, _ = series
    for context in (train, None, train[-3:]):
        batch = detector.decision_function(test[:60], context=context)
        stream = detector.stream(context=context)
        one_by_one = np.array([stream.update(row) for row in test[:60]])
        np.testing.assert_allclose(one_by_one, batch, rtol=1e-5, atol=1e-9)


def test_exported_detector_scores_like_torch_and_streams(detector, series, tmp_path):
    train, test, _ = series
    detector.export(tmp_path / "detector.sbts")
    runtime = load(tmp_path / "detector.sbts")
    assert runtime.task == "anomaly" and runtime.threshold == pytest.approx(detector.threshold_)
    np.testing.assert_allclose(runtime.decision_function(test, context=train),
                               detector.decision_function(test, context=train), rtol=1e-4, atol=1e-7)
    stream = runtime.stream(context=train)
    np.testing.assert_allclose(stream.update_many(test[:30]), runtime.decision_function(test[:30], context=train),
                               rtol=1e-5, atol=1e-9)
    np.testing.assert_array_equal(runtime.predict(test, context=train), detector.predict(test, context=train))


def test_channel_errors_say_which_channel_made_the_score(detector, series, tmp_path):
    from sbts.heads.anomaly import channel_errors

    train, test, _ = series
    detector.export(tmp_path / "detector.sbts")
    runtime = load(tmp_path / "detector.sbts")
    spiked = test[:40].copy()
    spiked[30, 1] += 50 * train[:, 1].std()
    errors = runtime.channel_errors(spiked, context=train)
    assert errors.shape == spiked.shape and np.all(errors >= 0)
    np.testing.assert_array_equal(errors.mean(axis=1), runtime.decision_function(spiked, context=train))
    np.testing.assert_allclose(detector.channel_errors(spiked, context=train), errors, rtol=1e-4, atol=1e-7)
    assert np.argmax(errors[30]) == 1 and errors[30, 1] > 100 * np.median(errors[:, 1])
    window_by_window = channel_errors(runtime.last_step, runtime._scale(spiked), runtime.window,
                                      runtime._scale(train))
    np.testing.assert_allclose(window_by_window, errors, rtol=1e-4, atol=1e-7)
    with pytest.raises(DataError, match="input"):
        runtime.channel_errors(spiked[:, :2])
    with pytest.raises(DataError, match="expected shape"):
        detector.channel_errors(spiked[:, :2])


def test_run_export_carries_the_threshold_and_cli_predict_scores_a_file(trained_run, tmp_path, capsys):
    run_dir, folder, metrics = trained_run
    assert main(["export", str(run_dir), "-o", str(tmp_path / "run.sbts")]) == 0
    runtime = load(tmp_path / "run.sbts")
    assert runtime.threshold == metrics["threshold"]["value"]
    out = tmp_path / "scores.csv"
    assert main(["predict", str(tmp_path / "run.sbts"), "--input", str(folder / "test.csv"), "-o", str(out)]) == 0
    table = np.loadtxt(out, delimiter=",", skiprows=1)
    recorded = np.loadtxt(run_dir / "test_scores.csv", delimiter=",", skiprows=1)
    assert table.shape[0] == recorded.shape[0]
    # Without the training context only the first w - 1 scores can differ from the run's.
    np.testing.assert_allclose(table[WINDOW - 1:, 1], recorded[WINDOW - 1:, 1], rtol=1e-4, atol=1e-7)


def test_cli_export_c_from_a_run_and_from_its_artifact_scores_as_the_runtime(trained_run, tmp_path, capsys):
    from sbts.export.c_build import CModel, compile_library, find_compiler
    from sbts.export.c_source import c_sources
    from sbts.runtime.artifact import read_artifact

    run_dir, folder, metrics = trained_run
    assert main(["export", str(run_dir), "-o", str(tmp_path / "run.sbts")]) == 0
    capsys.readouterr()
    assert main(["export", str(run_dir), "--format", "c", "-o", str(tmp_path / "c")]) == 0
    assert json.loads(capsys.readouterr().out)["footprint"]["flash_bytes"] > 0
    assert main(["export", str(tmp_path / "run.sbts"), "--format", "c", "--c-weights", "mask", "-o",
                 str(tmp_path / "c-mask")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["weights"] == "mask" and report["arena_bytes"] > 0
    header = (tmp_path / "c" / "sbts.h").read_text()
    assert f"#define SBTS_THRESHOLD {metrics['threshold']['value']!r}" in header
    if find_compiler() is None:
        pytest.skip("no C compiler found")
    runtime = load(tmp_path / "run.sbts")
    c = CModel(compile_library(c_sources(read_artifact(tmp_path / "run.sbts")), tmp_path / "lib"),
               runtime.config.in_channels, 2)
    rows = np.loadtxt(folder / "test.csv", delimiter=",", skiprows=1)[:40]
    np.testing.assert_allclose([c.forward(rows[:t + 1])[1][0] for t in range(len(rows))],
                               runtime.decision_function(rows), rtol=1e-5, atol=1e-7)
    assert (tmp_path / "c" / "sbts.c").read_text() == (tmp_path / "lib" / "sbts.c").read_text()  # one source


@pytest.mark.parametrize("extra,message", [
    (["--format", "c", "--float16"], "--float16 applies to the .sbts format only"),
    (["--force"], "is a directory; -o takes a file"),
    (["--c-weights", "mask"], "--c-weights applies to --format c only"),
    (["--format", "c"], "not empty; pass --force")])
def test_cli_export_c_bad_uses_exit_2_and_write_nothing(trained_run, tmp_path, capsys, extra, message):
    run_dir, _, _ = trained_run
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    assert main(["export", str(run_dir), "-o", str(target), *extra]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]


# --- CLI and bad input -----------------------------------------------------------------------

def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_train_anomaly_writes_metrics_and_scores(tmp_path, series, capsys):
    folder = write_folder(tmp_path / "data", *series)
    code, out, err = run_cli(["train", "anomaly", "--data", str(folder), "--model", "dense", "--window", "8",
                              "--d-model", "8", "--epochs", "1", "--stride", "4",
                              "--contamination", "0.01", "--device", "cpu", "--quiet", "--out",
                              str(tmp_path / "run")], capsys)
    assert code == 0, err
    printed = json.loads(out)
    assert printed["task"] == "anomaly" and printed["threshold"]["method"] == "percentile"
    assert {"f1", "f1_pa", "auc_pr", "auc_roc"} <= set(printed["test"])
    assert (tmp_path / "run" / "test_scores.csv").is_file()


@pytest.mark.parametrize("case,message", [
    ("dims", "columns"),
    ("labels", "label"),
    ("window", "window"),
    ("nan", "nan|NaN|finite"),
    ("inf", "inf|finite"),
    ("empty", "empty|no data|no rows"),
])
def test_cli_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, series, capsys, case, message):
    train, test, labels = series
    folder = tmp_path / "data"
    if case == "dims":
        write_folder(folder, train, test[:, :2], labels)
    elif case == "labels":
        write_folder(folder, train, test, labels[:-3])
    elif case == "window":
        write_folder(folder, train[:20], test, labels)
    elif case in ("nan", "inf"):
        bad = train.copy()
        bad[17, 1] = np.nan if case == "nan" else np.inf
        write_folder(folder, bad, test, labels)
    else:
        write_folder(folder, train, test, labels)
        (folder / "train.csv").write_text("")
    window = "40" if case == "window" else "8"
    code, out, err = run_cli(["train", "anomaly", "--data", str(folder), "--window", window, "--d-model", "8",
                              "--epochs", "1", "--device", "cpu", "--quiet", "--out", str(tmp_path / "run")], capsys)
    assert code == 2
    assert err.startswith("sbts: error: ") and err.count("\n") == 1
    assert pytest.importorskip("re").search(message, err), err
    assert not (tmp_path / "run").exists()


def test_constant_channels_are_scaled_without_dividing_by_zero(tmp_path, series):
    train, test, labels = series
    train, test = train.copy(), test.copy()
    train[:, 1] = 7.0
    test[:, 1] = 7.0
    metrics = train_run(spec(write_folder(tmp_path / "data", train, test, labels), epochs=1), tmp_path / "run",
                        verbose=False)
    scores = np.loadtxt(tmp_path / "run" / "test_scores.csv", delimiter=",", skiprows=1)[:, 1]
    assert np.isfinite(scores).all() and np.isfinite(metrics["threshold"]["value"])


def test_bad_task_options_are_rejected(tmp_path, series):
    folder = write_folder(tmp_path / "data", *series)
    with pytest.raises(SBTSError, match="threshold must be one of"):
        train_run(spec(folder, threshold="best_f1"), tmp_path / "run", verbose=False)
    with pytest.raises(SBTSError, match="contamination"):
        train_run(spec(folder, contamination=0.9), tmp_path / "run", verbose=False)
    with pytest.raises(SBTSError, match="unknown key"):
        train_run(spec(folder, thresold="pot"), tmp_path / "run", verbose=False)
    for span in (0, 2.5, True):
        with pytest.raises(SBTSError, match="drift_span"):
            train_run(spec(folder, threshold="relative", drift_span=span), tmp_path / "run", verbose=False)
    assert not (tmp_path / "run").exists()


def test_runtime_import_stays_torch_free_for_anomaly():
    code = ("import sys; from sbts.runtime import load, AnomalyRuntime; import sbts.heads.anomaly; "
            "assert 'torch' not in sys.modules and 'sklearn' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_plot_command_draws_the_scores(trained_run, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    run_dir, _, _ = trained_run
    code, out, err = run_cli(["plot", str(run_dir), "-o", str(tmp_path / "scores.png"), "--start", "50",
                              "--end", "250"], capsys)
    assert code == 0, err
    assert (tmp_path / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run_cli(["plot", str(run_dir), "-o", str(tmp_path / "bad.png"), "--start", "250", "--end", "50"],
                           capsys)
    assert code == 2 and "start" in err and not (tmp_path / "bad.png").exists()
    code, _, err = run_cli(["plot", str(run_dir), "-o", str(tmp_path / "scores.jpgz")], capsys)
    assert code == 2 and ".png" in err and err.count("\n") == 1


def test_pot_threshold_needs_enough_reference_scores(tmp_path, series):
    folder = write_folder(tmp_path / "data", *series)
    with pytest.raises(SBTSError, match="POT at pot_level 0.98 on 100 validation scores"):
        train_run(spec(folder, threshold="pot"), tmp_path / "run", verbose=False)
    assert not (tmp_path / "run").exists()


def test_pot_threshold_run(tmp_path):
    train, test, labels = synthetic_series(n_train=4000, n_test=600, seed=3)
    folder = write_folder(tmp_path / "data", train, test, labels)
    run_spec = spec(folder, epochs=1, threshold="pot")
    run_spec["train"]["stride"] = 8
    metrics = train_run(run_spec, tmp_path / "run", verbose=False)
    parameters = metrics["threshold"]["parameters"]
    assert metrics["threshold"]["method"] == "pot" and parameters["n_reference_scores"] == 1000
    assert parameters["n_peaks"] >= 20 and metrics["threshold"]["value"] > parameters["initial_threshold"]
    assert metrics["test"]["recall"] > 0.5  # the injected shifts are far above a POT threshold on clean data


def test_relative_threshold_run_export_predict_and_stream_agree(tmp_path, capsys):
    """A run with the relative threshold: its recorded per-step thresholds are the rule's over the test series
    (continuing the validation part), and the exported model's predict, predict file and stream decide the same."""
    train, test, labels = synthetic_series(n_train=1200, n_test=400, seed=4)
    folder = write_folder(tmp_path / "data", train, test, labels)
    run_spec = spec(folder, epochs=1, threshold="relative", drift_span=50)
    run_spec["train"]["stride"] = 4
    metrics = train_run(run_spec, tmp_path / "run", verbose=False)
    assert metrics["threshold"]["method"] == "relative" and metrics["threshold"]["parameters"]["span"] == 50
    table = np.loadtxt(tmp_path / "run" / "test_scores.csv", delimiter=",", skiprows=1)
    assert np.ptp(table[:, 2]) > 0  # the threshold moved with the scores
    assert metrics["test"]["predicted_rate"] == pytest.approx(table[:, 3].mean())
    assert main(["export", str(tmp_path / "run"), "-o", str(tmp_path / "run.sbts")]) == 0
    runtime = load(tmp_path / "run.sbts")
    np.testing.assert_array_equal(runtime.predict(test, context=train), table[:, 3])
    out = tmp_path / "predicted.csv"
    assert main(["predict", str(tmp_path / "run.sbts"), "--input", str(folder / "test.csv"), "--context",
                 str(folder / "train.csv"), "-o", str(out)]) == 0
    written = np.loadtxt(out, delimiter=",", skiprows=1)
    np.testing.assert_allclose(written[:, 2], table[:, 2], rtol=1e-5)  # float32 scores move the level slightly
    np.testing.assert_array_equal(written[:, 3], table[:, 3])
    line = runtime.stream_lines()
    stream = runtime.stream(context=train)
    streamed = [line(step, stream.update(row)) for step, row in enumerate(test)]
    assert [int(row[3]) for row in streamed] == table[:, 3].astype(int).tolist()
    capsys.readouterr()
    code, _, err = run_cli(["export", str(tmp_path / "run.sbts"), "--format", "c", "-o", str(tmp_path / "c")],
                           capsys)
    assert code == 2 and "fixed threshold" in err and not (tmp_path / "c").exists()


def test_pooled_members_each_hold_out_their_end_and_windows_never_cross_members():
    # Two members of 30 and 20 steps; the value of a row says where it came from.
    train = np.concatenate([np.arange(30.0), 1000 + np.arange(20.0)])[:, None]
    splits = split_and_scale(train, None, None, window=4, val_fraction=0.2, stride=1, name="pooled",
                             member_lengths=[30, 20])
    unscale = splits.scaler.std[0], splits.scaler.mean[0]

    def raw(rows):
        return np.rint(rows[..., 0] * unscale[0] + unscale[1])

    assert [raw(p).tolist() for p in splits.val_parts] == [list(range(24, 30)), list(range(1016, 1020))]
    assert [len(p) for p in splits.fit_parts] == [24, 16]
    train_windows = raw(np.stack([w for (w,) in splits.train_set()]))
    assert len(train_windows) == (24 - 3) + (16 - 3)
    assert all(np.all(np.diff(w) == 1) for w in train_windows)  # consecutive rows of one member
    val_windows = raw(np.stack([w for (w,) in splits.val_set()]))
    assert sorted(w[-1] for w in val_windows) == list(range(24, 30)) + list(range(1016, 1020))
    assert all(np.all(np.diff(w) == 1) for w in val_windows)  # context from the member's own fit part
    assert raw(splits.train).tolist() == train[:, 0].tolist()  # the test series follows the original order
    with pytest.raises(DataError, match="member lengths add up to 49"):
        split_and_scale(train, None, None, window=4, val_fraction=0.2, stride=1, member_lengths=[30, 19])
    # Each member's test series continues that member's own training series, not the previous member's test.
    test = np.concatenate([500 + np.arange(5.0), 2000 + np.arange(7.0)])[:, None]
    splits = split_and_scale(train, test, None, window=4, val_fraction=0.2, stride=1, member_lengths=[30, 20],
                             member_test_lengths=[5, 7])
    pairs = [(raw(part).tolist(), raw(before)[-3:].tolist()) for part, before in splits.test_parts()]
    assert pairs == [(list(range(500, 505)), [27, 28, 29]), (list(range(2000, 2007)), [1017, 1018, 1019])]


def test_run_without_validation_fits_on_training_scores(tmp_path, series):
    folder = write_folder(tmp_path / "data", *series)
    run_spec = spec(folder, epochs=1)
    run_spec["train"]["val_fraction"] = 0
    metrics = train_run(run_spec, tmp_path / "run", verbose=False)
    assert "training scores" in metrics["threshold"]["fitted_on"] and metrics["n_val"] == 0
    assert metrics["paper_protocol"]["parameters"]["n_val_scores"] == 0


def test_impossible_pot_settings_fail_before_training(tmp_path, series):
    folder = write_folder(tmp_path / "data", *series)
    for options, message in (({"pot_risk": 0.2, "pot_level": 0.9}, "pot_risk and pot_level"),
                             ({"paper_anomaly_ratio": 0.7}, "paper_anomaly_ratio"), ({"pa_k": True}, "pa_k")):
        with pytest.raises(SBTSError, match=message):
            train_run(spec(folder, **options), tmp_path / "run", verbose=False)
    assert not (tmp_path / "run").exists()


def test_a_threshold_is_exported_only_with_the_checkpoint_it_was_fitted_for(tmp_path, series):
    folder = write_folder(tmp_path / "data", *series)
    run = tmp_path / "run"
    first = train_run(spec(folder, epochs=1), run, verbose=False)
    assert anomaly.AnomalyTask().load_trained(run).inference_state["threshold"] == first["threshold"]

    def interrupt_after_second(epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt

    resumed = train_run({}, run, resume=True, verbose=False, train_overrides={"epochs": 4},
                        on_epoch_end=interrupt_after_second)
    assert resumed["interrupted"]
    trained = anomaly.AnomalyTask().load_trained(run)
    assert trained.epoch == 2  # a newer best checkpoint: the first run's threshold does not belong to it
    assert "threshold" not in trained.inference_state
    assert main(["export", str(run), "-o", str(tmp_path / "m.sbts")]) == 0
    runtime = load(tmp_path / "m.sbts")
    assert runtime.threshold is None
    with pytest.raises(DataError, match="carries no threshold"):
        runtime.predict(series[1])


def test_cli_predict_with_context_reproduces_the_run_scores(trained_run, tmp_path, capsys):
    run_dir, folder, _ = trained_run
    assert main(["export", str(run_dir), "-o", str(tmp_path / "run.sbts")]) == 0
    out = tmp_path / "scores.csv"
    assert main(["predict", str(tmp_path / "run.sbts"), "--input", str(folder / "test.csv"), "--context",
                 str(folder / "train.csv"), "-o", str(out)]) == 0
    table = np.loadtxt(out, delimiter=",", skiprows=1)
    recorded = np.loadtxt(run_dir / "test_scores.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(table[:, 1], recorded[:, 1], rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(table[:, 2:4], recorded[:, 2:4])  # the threshold and the decision
    assert "steps of" in capsys.readouterr().err  # the summary: steps above the threshold
    assert main(["predict", str(tmp_path / "run.sbts"), "--input", str(folder / "test.csv"), "--context",
                 str(folder / "train.csv"), "-o", str(tmp_path / "quiet.csv"), "--quiet"]) == 0
    assert capsys.readouterr().err == "" and (tmp_path / "quiet.csv").read_bytes() == out.read_bytes()
    code, _, err = run_cli(["predict", str(tmp_path / "run.sbts"), "--input", str(folder / "test.csv"),
                            "--context", str(folder / "test_label.csv")], capsys)
    assert code == 2 and "test_label.csv" in err and err.count("\n") == 1


def test_window_and_preset_errors():
    from sbts.configs import preset_path
    from sbts.errors import ConfigError
    from sbts.tasks.base import DataSource

    source = DataSource("series", anomaly.AnomalyData("series", np.zeros((50, 3)), None, None, {}))
    with pytest.raises(ConfigError, match="step_t attention needs windows of at least 2"):
        anomaly.AnomalyTask().run_config({"model": {"max_len": 1}}, source)
    assert preset_path("anomaly", "SMD/machine-1-6", "sbt").name == "anomaly_SMD_sbt.yaml"
    assert preset_path("anomaly", "smd/machine-1-6", "sbt").name == "anomaly_SMD_sbt.yaml"  # as the loader: any case
    assert preset_path("forecasting", "ett/ettm1", "dense").name == "forecasting_ETTm1_dense.yaml"
    assert preset_path("anomaly", "SMD/train.csv,SMD/test.csv", "sbt") is None  # files, not a dataset name
