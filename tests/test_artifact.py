"""The .sbts artifact: export then torch-free load reproduces the torch model, the mask codec, every bad
file refused with one line naming it, float16 export, failed exports leave nothing, sizes, and no torch."""

from __future__ import annotations

import itertools
import json
import lzma
import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomise, synthetic_cases, write_ts
from safetensors.numpy import load as load_tensors
from safetensors.numpy import save as save_tensors

import sbts
from sbts.data.preprocessing import ChannelScaler, fill_missing, pad_to_length
from sbts.errors import SBTSError
from sbts.export import artifact as exporter
from sbts.export.artifact import export_model
from sbts.models import TimeSeriesTransformer
from sbts.runtime import artifact as codec
from sbts.runtime import load
from sbts.runtime.artifact import (ALPHAS, MASKS, ArtifactError, artifact_bytes, checksum, decode_mask, encode_mask,
                                   load_artifact_bytes, network_tensors, read_artifact)
from sbts.tasks.classification import ClassificationTask
from sbts.tasks.runs import build_run_spec

CLASSIFICATION = ClassificationTask()

SMALL = dict(in_channels=3, out_dim=4, max_len=9, d_model=16, n_heads=2, n_layers=2, d_ff=32)
CLASSES = ["a", "b", "c", "d"]
# One model of each task's paper configuration, shrunk; every one is exported as "classification"
# (the only task with a runtime so far): the network's forward pass does not depend on the task.
MODEL_KINDS = {
    "classification-sbt": ("sbt", dict(attention="qkv_mask", norm="batch", pos_encoding="sinusoidal", density=0.25)),
    "classification-dense": ("dense", dict(attention="full", norm="batch", pos_encoding="learnable", linear_bias=True)),
    "anomaly-sbt": ("sbt", dict(attention="step_t", norm="none", density=0.25)),
    "anomaly-dense": ("dense", dict(attention="full", norm="layer_time", pos_encoding="learnable", linear_bias=True)),
    "forecasting-sbt": ("sbt", dict(attention="step_t", norm="layer_time", density=0.5, head_activation="none")),
    "forecasting-dense": ("dense", dict(attention="full", norm="layer_time", pos_encoding="sinusoidal",
                                        linear_bias=True)),
    "forecasting-sbt-joint-path": ("sbt", dict(attention="step_t", norm="layer_time", density=0.5,
                                               head_activation="none", linear_path="joint")),
    "forecasting-dense-joint-path": ("dense", dict(attention="step_t", norm="layer", pos_encoding="rope",
                                                   linear_bias=True, linear_path="joint")),
    # a shared path gives every variable the same number of outputs: 2 steps ahead of 2 variables
    "forecasting-sbt-shared-path": ("sbt", dict(attention="full", norm="batch", density=0.25, in_channels=2,
                                                linear_path="shared")),
    "forecasting-dense-shared-path": ("dense", dict(attention="step_t", norm="layer_time", in_channels=2,
                                                    linear_bias=True, linear_path="shared")),
}


def randomised(model_name: str, **overrides) -> TimeSeriesTransformer:
    return randomise(sbts.create_model(model_name, **{**SMALL, **overrides}))


def random_input(batch: int = 4, seed: int = 1, channels: int = SMALL["in_channels"]) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, SMALL["max_len"], channels)).astype(np.float32)


def torch_output(model: TimeSeriesTransformer, x: np.ndarray, padding_mask: np.ndarray | None = None) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x), None if padding_mask is None else torch.from_numpy(padding_mask)).numpy()


def assert_matches(out: np.ndarray, ref: np.ndarray, rtol: float = 1e-5) -> None:
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=rtol, atol=rtol * np.abs(ref).max())


def export(model: TimeSeriesTransformer, path: Path, **kwargs):
    return export_model(model, path, task="classification", inference_state={"classes": CLASSES}, **kwargs)


# --------------------------------------------------------------------------------------------
# Round trip: export, load without torch, same numbers
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_exported_model_reproduces_torch(kind, tmp_path):
    model_name, overrides = MODEL_KINDS[kind]
    model = randomised(model_name, **overrides)
    path = tmp_path / "model.sbts"
    result = export(model, path)
    assert result.size_bytes == path.stat().st_size and result.probe_max_relative_difference <= 1e-5

    runtime = load(path)
    assert runtime.config == model.config and runtime.classes == CLASSES
    x = random_input(channels=model.config.in_channels)
    assert_matches(runtime.forward(x), torch_output(model, x))
    if not model.config.needs_fixed_length:
        padding_mask = np.arange(SMALL["max_len"])[None, :] >= np.array([9, 6, 3, 8])[:, None]
        assert_matches(runtime.forward(x, padding_mask), torch_output(model, x, padding_mask))


def test_sparse_binary_linears_store_only_masks_and_alphas(tmp_path):
    model = randomised("sbt", **MODEL_KINDS["classification-sbt"][1])
    export(model, tmp_path / "model.sbts")
    stored = read_artifact(tmp_path / "model.sbts")
    linears = model.linear_layers()
    assert not [name for name in stored.tensors if name.rsplit(".", 1)[0] in linears]  # no W, sign or bias
    assert stored.tensors[ALPHAS].dtype == np.float32 and len(stored.tensors[ALPHAS]) == len(linears)
    expected_alphas = [float(layer.alpha()) for layer in linears.values()]
    assert sorted(stored.tensors[ALPHAS].tolist()) == pytest.approx(sorted(expected_alphas), rel=1e-7)
    rebuilt = network_tensors(stored)
    for name, layer in linears.items():
        np.testing.assert_array_equal(rebuilt[f"{name}.weight"], layer.effective_weight().detach().numpy())


# --------------------------------------------------------------------------------------------
# A trained run: export_run, then the runtime predicts as the torch pipeline
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 3-epoch SBT run on unequal-length synthetic data, exported; returns (run dir, artifact, test cases)."""
    root = tmp_path_factory.mktemp("run")
    folder = root / "Synth"
    folder.mkdir()
    train, train_labels = synthetic_cases(60, seed=1)
    test, test_labels = synthetic_cases(30, seed=2, min_len=6)
    write_ts(folder / "Synth_TRAIN.ts", train, train_labels, ["c0", "c1", "c2"])
    write_ts(folder / "Synth_TEST.ts", test, test_labels, ["c0", "c1", "c2"])
    spec = build_run_spec("classification", data=str(folder), model_name="sbt", config_file=None,
                          model_overrides={"d_model": 16, "n_heads": 2, "d_ff": 32, "density": 0.25},
                          train_overrides={"epochs": 3, "batch_size": 8, "seed": 0, "device": "cpu"})
    CLASSIFICATION.train_run(spec, root / "run", verbose=False)
    CLASSIFICATION.export_run(root / "run", root / "run.sbts")
    return root / "run", root / "run.sbts", test, test_labels


def test_exported_run_predicts_as_torch(trained_run):
    run_dir, path, series, labels = trained_run
    trained = CLASSIFICATION.load_trained(run_dir)
    runtime = load(path)
    lengths = [case.shape[1] for case in series]
    assert len(set(lengths)) > 1 and min(lengths) < runtime.config.max_len  # padded batches

    x, padding = pad_to_length(trained.scaler.transform(fill_missing(series, "test")), trained.run.model.max_len)
    with torch.no_grad():
        reference = ClassificationTask.logits(trained.model, torch.from_numpy(x),
                                                             torch.from_numpy(padding)).numpy()
    logits = runtime.decision_function(series)
    assert_matches(logits, reference)
    predicted = runtime.predict(series)
    assert predicted.tolist() == [runtime.classes[i] for i in reference.argmax(1)]
    np.testing.assert_allclose(runtime.predict_proba(series).sum(1), 1.0, rtol=1e-6)
    accuracy = float(np.mean(predicted == np.asarray(labels)))
    assert accuracy == pytest.approx(CLASSIFICATION.evaluate_run(run_dir, device="cpu")["test"]["accuracy"])


def test_exported_run_carries_classes_and_input_scaling(trained_run):
    run_dir, path, _, _ = trained_run
    trained = CLASSIFICATION.load_trained(run_dir)
    stored = read_artifact(path)
    assert stored.document["task"] == "classification"
    assert stored.document["task_state"]["classes"] == load(path).classes == ["c0", "c1", "c2"]
    for statistic in ("mean", "std"):
        saved = stored.tensors[f"input_scaler.{statistic}"]
        assert saved.dtype == np.float64
        np.testing.assert_array_equal(saved, getattr(trained.scaler, statistic))
    assert stored.document["model"] == trained.run.model.to_dict()


# --------------------------------------------------------------------------------------------
# Mask codec
# --------------------------------------------------------------------------------------------

ENCODINGS = ("bits", "bits-lzma", "gaps-lzma")
MASK_SHAPE = (48, 40)


def encoded_as(encoding: str, mask: np.ndarray) -> np.ndarray:
    """``mask`` in one given encoding (``encode_mask`` only returns the smallest)."""
    bits = np.packbits(mask.reshape(-1) != 0).tobytes()
    if encoding == "bits":
        return np.frombuffer(bits, dtype=np.uint8)
    raw = bits if encoding == "bits-lzma" else codec._gap_bytes(mask.reshape(-1) != 0)
    return np.frombuffer(lzma.compress(raw, format=lzma.FORMAT_RAW, filters=codec._LZMA_FILTERS), dtype=np.uint8)


def random_mask(density: float, shape: tuple[int, ...] = MASK_SHAPE, seed: int = 0) -> np.ndarray:
    size = math.prod(shape)
    mask = np.zeros(size, dtype=bool)
    mask[np.random.default_rng(seed).choice(size, math.ceil(density * size), replace=False)] = True
    return mask.reshape(shape)


def mask_with_gaps(gaps: list[int], trailing: int) -> np.ndarray:
    """Kept positions preceded by ``gaps`` zeros each, then ``trailing`` zeros."""
    mask = np.concatenate([np.r_[np.zeros(gap, dtype=bool), True] for gap in gaps] + [np.zeros(trailing, bool)])
    return mask.reshape(1, -1)


def single_kept(position: int) -> np.ndarray:
    mask = np.zeros(math.prod(MASK_SHAPE), dtype=bool)
    mask[position] = True
    return mask.reshape(MASK_SHAPE)


MASKS_UNDER_TEST = {
    "density-1.0": random_mask(1.0),
    "density-0.5": random_mask(0.5),
    "density-0.25": random_mask(0.25),
    "density-0.1": random_mask(0.1),
    "odd-size-0.5": random_mask(0.5, shape=(7, 5)),
    "single-kept-middle": single_kept(1000),
    "single-kept-first": single_kept(0),  # then one long gap at the end
    "single-kept-last": single_kept(math.prod(MASK_SHAPE) - 1),  # 1919 zeros first: seven 255-bytes and a rest
    "gaps-254-255-256-510": mask_with_gaps([254, 255, 0, 256, 510, 1, 765], trailing=300),
    "gaps-then-none-at-end": mask_with_gaps([255, 510, 254], trailing=0),
}


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("name", MASKS_UNDER_TEST)
def test_every_encoding_round_trips(name, encoding):
    mask = MASKS_UNDER_TEST[name]
    decoded = decode_mask(encoding, encoded_as(encoding, mask), mask.shape)
    assert decoded.dtype == np.float32 and decoded.shape == mask.shape
    np.testing.assert_array_equal(decoded, mask.astype(np.float32))


@pytest.mark.parametrize("name", MASKS_UNDER_TEST)
def test_encode_mask_picks_the_smallest_encoding(name):
    mask = MASKS_UNDER_TEST[name]
    chosen, code = encode_mask(mask)
    sizes = {encoding: len(encoded_as(encoding, mask)) for encoding in ENCODINGS}
    assert len(code) == sizes[chosen] == min(sizes.values())
    assert code.dtype == np.uint8
    np.testing.assert_array_equal(decode_mask(chosen, code, mask.shape), mask.astype(np.float32))


def test_each_encoding_wins_somewhere():
    assert encode_mask(random_mask(1.0))[0] == "bits-lzma"  # one repeated byte
    assert encode_mask(random_mask(0.5))[0] == "bits"  # incompressible
    assert encode_mask(random_mask(0.1))[0] == "gaps-lzma"
    name, code = encode_mask(single_kept(1000))
    assert name == "gaps-lzma" and len(code) < 16


def lzma_of(raw: bytes) -> np.ndarray:
    return np.frombuffer(lzma.compress(raw, format=lzma.FORMAT_RAW, filters=codec._LZMA_FILTERS), dtype=np.uint8)


GARBAGE = np.random.default_rng(5).integers(0, 256, 64, dtype=np.uint8)


@pytest.mark.parametrize("encoding,data,shape", [
    pytest.param("bits", encoded_as("bits", random_mask(0.5))[:-1], MASK_SHAPE, id="bits-one-byte-short"),
    pytest.param("bits", encoded_as("bits", random_mask(0.5)), (48, 41), id="bits-for-a-larger-shape"),
    pytest.param("bits", encoded_as("bits", random_mask(0.5)), (48, 39), id="bits-for-a-smaller-shape"),
    pytest.param("bits-lzma", encoded_as("bits-lzma", random_mask(0.25)), (40, 40), id="bits-lzma-wrong-shape"),
    pytest.param("bits-lzma", encoded_as("bits-lzma", random_mask(0.25))[:-3], MASK_SHAPE, id="bits-lzma-truncated"),
    pytest.param("gaps-lzma", encoded_as("gaps-lzma", single_kept(1919)), (40, 40), id="gaps-past-the-end"),
    pytest.param("gaps-lzma", lzma_of(bytes([3, 255])), MASK_SHAPE, id="gaps-ending-inside-a-gap"),
    pytest.param("gaps-lzma", lzma_of(bytes([255])), MASK_SHAPE, id="gaps-only-an-unfinished-gap"),
    pytest.param("bits-lzma", GARBAGE, MASK_SHAPE, id="bits-lzma-garbage"),
    pytest.param("gaps-lzma", GARBAGE, MASK_SHAPE, id="gaps-lzma-garbage"),
    pytest.param("zip", encoded_as("bits", random_mask(0.5)), MASK_SHAPE, id="unknown-encoding"),
])
def test_decode_rejects_wrong_sizes_and_garbage(encoding, data, shape):
    with pytest.raises((ValueError, lzma.LZMAError)):
        decode_mask(encoding, data, shape)


# --------------------------------------------------------------------------------------------
# Bad files: each refused with an ArtifactError naming the file, never a model
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_artifact(tmp_path_factory) -> bytes:
    """A valid artifact's bytes: a randomised SBT classifier with input scaling."""
    model = randomised("sbt", **MODEL_KINDS["classification-sbt"][1])
    path = tmp_path_factory.mktemp("good") / "model.sbts"
    export_model(model, path, task="classification", inference_state={"classes": CLASSES},
                 scaler=ChannelScaler(np.array([0.5, -1.0, 2.0]), np.array([1.5, 0.25, 3.0])))
    return path.read_bytes()


def header_length(data: bytes) -> int:
    return struct.unpack("<Q", data[:8])[0]


def stored_parts(data: bytes) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """The safetensors metadata and tensors of an artifact, unverified."""
    return json.loads(data[8:8 + header_length(data)])["__metadata__"], load_tensors(data)


def rewritten(path: Path, source: bytes, *, metadata: dict[str, str] | None = None,
              tensors: dict[str, np.ndarray] | None = None) -> Path:
    """``source`` rewritten at ``path`` with some metadata or tensors replaced (the old checksum kept)."""
    old_metadata, old_tensors = stored_parts(source)
    path.write_bytes(save_tensors({**old_tensors, **(tensors or {})}, metadata={**old_metadata, **(metadata or {})}))
    return path


def assert_refused(path: Path, *fragments: str) -> str:
    with pytest.raises(ArtifactError) as refused:
        load(path)
    message = str(refused.value)
    assert isinstance(refused.value, SBTSError)
    assert str(path) in message and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_good_artifact_loads(good_artifact, tmp_path):
    path = tmp_path / "model.sbts"
    path.write_bytes(good_artifact)
    assert load(path).classes == CLASSES
    assert issubclass(ArtifactError, SBTSError)


@pytest.mark.parametrize("cut", ["4-bytes", "half-the-header", "header-only", "half-the-data", "last-byte-dropped"])
def test_truncated_file(good_artifact, tmp_path, cut):
    header_end = 8 + header_length(good_artifact)
    keep = {"4-bytes": 4, "half-the-header": 8 + header_length(good_artifact) // 2, "header-only": header_end,
            "half-the-data": (header_end + len(good_artifact)) // 2, "last-byte-dropped": len(good_artifact) - 1}[cut]
    path = tmp_path / "model.sbts"
    path.write_bytes(good_artifact[:keep])
    assert_refused(path, "truncated" if keep > 8 else "not an sbts artifact")


def test_flipped_byte_in_tensor_data(good_artifact, tmp_path):
    data = bytearray(good_artifact)
    data[(8 + header_length(good_artifact) + len(data)) // 2] ^= 0x01
    path = tmp_path / "model.sbts"
    path.write_bytes(bytes(data))
    assert_refused(path, "checksum mismatch")


@pytest.mark.parametrize("target,offset,message", [
    ("classification", 3, "checksum mismatch"),  # inside the JSON document
    ('"dtype":"F32"', 9, "truncated or corrupted"),  # an unknown dtype B32
    ('"__metadata__"', 3, "no metadata"),
    ('"format":"sbts-artifact"', 10, "not an sbts artifact"),
    ("{", 0, "unreadable header"),
])
def test_flipped_byte_in_header(good_artifact, tmp_path, target, offset, message):
    position = good_artifact.index(target.encode()) + offset
    assert position < 8 + header_length(good_artifact)
    data = bytearray(good_artifact)
    data[position] ^= 0x04
    path = tmp_path / "model.sbts"
    path.write_bytes(bytes(data))
    assert_refused(path, message)


def test_no_single_bit_flip_gives_a_different_model(good_artifact):
    """Every bit of the file flipped in turn: refused (one line naming the file), or exactly the same model."""
    original = load_artifact_bytes(good_artifact, "good")
    original_tensors = network_tensors(original)
    accepted = []
    for position, bit in itertools.product(range(len(good_artifact)), range(8)):
        data = bytearray(good_artifact)
        data[position] ^= 1 << bit
        try:
            flipped = load_artifact_bytes(bytes(data), "flipped")
            tensors = network_tensors(flipped)
        except ArtifactError as exc:
            assert str(exc).startswith("flipped: ") and "\n" not in str(exc)
            continue
        accepted.append(position)
        assert flipped.document == original.document and tensors.keys() == original_tensors.keys()
        assert all(np.array_equal(tensors[name], original_tensors[name]) for name in tensors)
    assert accepted == []  # every flipped bit is caught (the checksum covers the format version too)


def test_format_version_below_one_is_refused(good_artifact, tmp_path):
    path = rewritten(tmp_path / "model.sbts", good_artifact, metadata={"format_version": "0"})
    assert_refused(path, "format version")


def test_tampered_document(good_artifact, tmp_path):
    document = json.loads(stored_parts(good_artifact)[0]["document"])
    document["task_state"]["classes"] = CLASSES[::-1]  # a swap that would silently mislabel every prediction
    path = rewritten(tmp_path / "model.sbts", good_artifact,
                     metadata={"document": json.dumps(document, sort_keys=True, separators=(",", ":"))})
    assert_refused(path, "checksum mismatch")


def test_tampered_tensor(good_artifact, tmp_path):
    alphas = load_tensors(good_artifact)[ALPHAS]
    path = rewritten(tmp_path / "model.sbts", good_artifact, tensors={ALPHAS: alphas * np.float32(1.5)})
    assert_refused(path, "checksum mismatch")


def test_newer_format_version(good_artifact, tmp_path):
    metadata, tensors = stored_parts(good_artifact)
    path = rewritten(tmp_path / "model.sbts", good_artifact,
                     metadata={"format_version": "2", "checksum": checksum(metadata["document"], tensors)})
    assert_refused(path, "newer", "upgrade")


def test_wrong_format_marker(good_artifact, tmp_path):
    path = rewritten(tmp_path / "model.sbts", good_artifact, metadata={"format": "other-format"})
    assert_refused(path, "not an sbts artifact", "other-format")


def write_random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def write_torch_checkpoint(path: Path) -> None:
    torch.save(sbts.create_model("sbt", **SMALL).state_dict(), path)


def write_plain_safetensors(path: Path) -> None:
    path.write_bytes(save_tensors({"weight": np.ones((2, 2), dtype=np.float32)}))


def write_json_list_header(path: Path) -> None:
    header = b"[1, 2]"
    path.write_bytes(struct.pack("<Q", len(header)) + header)


@pytest.mark.parametrize("write,message", [
    (write_random_bytes, "not an sbts artifact"),
    (lambda path: path.write_bytes(b""), "not an sbts artifact"),
    (lambda path: None, "cannot read"),
    (write_torch_checkpoint, "not an sbts artifact"),
    (write_plain_safetensors, "no metadata"),
    (write_json_list_header, "no metadata"),
], ids=["random-bytes", "empty", "missing", "torch-pt", "plain-safetensors", "json-list-header"])
def test_not_an_artifact(tmp_path, write, message):
    path = tmp_path / "model.sbts"
    write(path)
    assert_refused(path, message)


def first_sparse_binary_layer(document: dict) -> dict:
    return next(entry for entry in document["layers"].values() if entry["kind"] == "sparse_binary_linear")


def wrong_kept(document: dict, tensors: dict) -> None:
    first_sparse_binary_layer(document)["kept"] += 1


def mask_outside_the_stored_masks(document: dict, tensors: dict) -> None:
    first_sparse_binary_layer(document)["mask_offset"] = len(tensors[MASKS])


def wrong_mask_encoding(document: dict, tensors: dict) -> None:
    entry = first_sparse_binary_layer(document)
    entry["mask_encoding"] = "bits-lzma" if entry["mask_encoding"] == "bits" else "bits"


def missing_norm_statistic(document: dict, tensors: dict) -> None:
    del tensors["layers.0.norm1.running_var"]


def invalid_model_config(document: dict, tensors: dict) -> None:
    document["model"]["d_model"] = 15  # not divisible by n_heads


def no_model_config(document: dict, tensors: dict) -> None:
    del document["model"]


def norm_weight_of_the_wrong_shape(document: dict, tensors: dict) -> None:
    tensors["layers.0.norm1.weight"] = np.ones(1, dtype=np.float32)  # would broadcast over the 16 channels


def missing_layer_entry(document: dict, tensors: dict) -> None:
    del document["layers"]["head"]


def task_state_not_a_mapping(document: dict, tensors: dict) -> None:
    document["task_state"] = ["a", "b"]


def missing_qkv_mask_seed(document: dict, tensors: dict) -> None:
    del document["layers"]["layers.0.attention"]["mask_seeds"]["k_mask"]


def class_names_of_the_wrong_count(document: dict, tensors: dict) -> None:
    document["task_state"]["classes"] = ["only one"]


def scaler_without_std(document: dict, tensors: dict) -> None:
    del tensors["input_scaler.std"]


def scaler_of_the_wrong_size(document: dict, tensors: dict) -> None:
    tensors["input_scaler.mean"] = np.zeros(5)
    tensors["input_scaler.std"] = np.ones(5)


def scaler_with_nan(document: dict, tensors: dict) -> None:
    tensors["input_scaler.mean"] = np.array([0.0, np.nan, 1.0])


@pytest.mark.parametrize("tamper,message", [
    (wrong_kept, "declares"),
    (mask_outside_the_stored_masks, "mask_bytes"),
    (wrong_mask_encoding, "layer"),
    (missing_norm_statistic, "missing"),
    (invalid_model_config, "d_model"),
    (no_model_config, "model"),
    (norm_weight_of_the_wrong_shape, "shape"),
    (missing_layer_entry, "head"),
    (task_state_not_a_mapping, "task_state"),
    (missing_qkv_mask_seed, "q_mask, k_mask and v_mask"),
    (class_names_of_the_wrong_count, "class names"),
    (scaler_without_std, "input scaler"),
    (scaler_of_the_wrong_size, "input scaler"),
    (scaler_with_nan, "input_scaler.mean holds non-finite values"),
    # what a fuzzer found loading and changing predictions, or crashing, before the semantic checks
    (lambda d, t: d["model"].update(d_model=100_000), "d_model must be at most 8,192"),
    (lambda d, t: d["model"].update(max_len=100_000), "max_len must be at most 65,536"),
    (lambda d, t: d["model"].update(max_len=20_000), "n_heads x max_len^2"),
    (lambda d, t: d["model"].update(n_layers=1), "layer layers.1.attention is not part of the network"),
    (lambda d, t: d["model"].update(n_layers=3), "layer layers.2.attention is missing"),
    (lambda d, t: d["model"].update(d_model=32, n_heads=2), "the config makes a"),
    (lambda d, t: d["model"].update(seed=2**40), "seed must be at most"),
    (lambda d, t: t.update({ALPHAS: -t[ALPHAS]}), "every alpha > 0"),
    (lambda d, t: t.update({ALPHAS: np.where(np.arange(len(t[ALPHAS])) == 0, 0, t[ALPHAS]).astype(np.float32)}),
     "every alpha > 0"),
    (lambda d, t: t.update({ALPHAS: np.full_like(t[ALPHAS], np.nan)}), "non-finite"),
    (lambda d, t: first_sparse_binary_layer(d).update(alpha_index=-1), "invalid alpha_index -1"),
    (lambda d, t: first_sparse_binary_layer(d).update(alpha_index=1), "each of the"),  # two layers share alpha 1
    (lambda d, t: first_sparse_binary_layer(d).update(mask_offset=-6), "invalid mask_offset -6"),
    (lambda d, t: first_sparse_binary_layer(d).update(mask_bytes=-1), "invalid mask_bytes -1"),
    (lambda d, t: first_sparse_binary_layer(d).update(kept=0), "invalid kept 0"),
    (lambda d, t: first_sparse_binary_layer(d).update(kept=-3), "invalid kept -3"),
    (lambda d, t: first_sparse_binary_layer(d).update(seed="-1"), "invalid seed '-1'"),
    (lambda d, t: first_sparse_binary_layer(d).update(seed=str(2**64)), "invalid seed"),
    (lambda d, t: first_sparse_binary_layer(d).update(bias=not first_sparse_binary_layer(d)["bias"]), "invalid bias"),
    (lambda d, t: first_sparse_binary_layer(d).update(shape=[10**6, 10**6]), "the config makes a"),
    (lambda d, t: t.update({"input_scaler.std": np.array([1.0, 0.0, 2.0])}), "std must be > 0"),
    (lambda d, t: t.update({"input_scaler.std": np.array([1.0, -2.0, 2.0])}), "std must be > 0"),
    (lambda d, t: t.update({ALPHAS: t[ALPHAS].astype(np.int32)}), "sbts stores floats there"),
    (lambda d, t: t.update({"layers.0.norm1.weight": t["layers.0.norm1.weight"].astype(np.int64)}),
     "sbts stores floats there"),
    (lambda d, t: t.update({MASKS: t[MASKS].astype(np.int16)}), "must be 1-D uint8"),
    (lambda d, t: t.update({"layers.0.norm1.weight": np.full_like(t["layers.0.norm1.weight"], np.inf)}),
     "non-finite"),
    (lambda d, t: t.update({"extra.weight": np.ones(3, dtype=np.float32)}), "tensor extra.weight belongs to no layer"),
    (lambda d, t: d["task_state"].update(classes=["a", "b", "a", "d"]), "repeat 'a'"),
    (lambda d, t: d.update(task="anomaly"), "task state of this anomaly model has no 'classes'"),
    (lambda d, t: d.update(task="forecasting"), "forecasting model needs 'columns'"),
    (lambda d, t: d["task_state"].update(threshold={"value": 1.0}), "has no 'threshold'"),
])
def test_checksummed_but_inconsistent_artifact(good_artifact, tmp_path, tamper, message):
    stored = load_artifact_bytes(good_artifact, "good")
    document, tensors = json.loads(json.dumps(stored.document)), dict(stored.tensors)
    tamper(document, tensors)
    path = tmp_path / "model.sbts"
    path.write_bytes(artifact_bytes(document, tensors))
    assert_refused(path, message)


# --------------------------------------------------------------------------------------------
# float16 export
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["classification-dense", "classification-sbt"])
def test_float16_export(kind, tmp_path):
    model_name, overrides = MODEL_KINDS[kind]
    model = randomised(model_name, **overrides)
    full, half = tmp_path / "float32.sbts", tmp_path / "float16.sbts"
    export(model, full)
    result = export(model, half, float_dtype="float16")
    assert result.float_dtype == "float16" and result.probe_max_relative_difference < 1e-2

    stored_full, stored_half = read_artifact(full), read_artifact(half)
    assert stored_half.document["float_dtype"] == "float16"
    floats = {name for name, array in stored_full.tensors.items() if array.dtype == np.float32} - {ALPHAS}
    assert floats and all(stored_half.tensors[name].dtype == np.float16 for name in floats)
    assert sum(stored_half.tensors[name].nbytes for name in floats) * 2 == sum(
        stored_full.tensors[name].nbytes for name in floats)
    if model_name == "dense":
        assert half.stat().st_size < full.stat().st_size
        np.testing.assert_array_equal(stored_half.tensors["head.weight"],
                                      model.head.weight.detach().numpy().astype(np.float16))
    else:
        assert stored_half.tensors[ALPHAS].dtype == np.float32  # one value per layer that scales every weight
        np.testing.assert_array_equal(stored_half.tensors[ALPHAS], stored_full.tensors[ALPHAS])
    x = random_input()
    assert_matches(load(half).forward(x), torch_output(model, x), rtol=1e-2)


# --------------------------------------------------------------------------------------------
# A failed export leaves nothing behind and no half-written file
# --------------------------------------------------------------------------------------------

def failing_probe(model, artifact):
    return 1.0, 1e-7  # the runtime is far off; torch float32 itself is accurate


@pytest.mark.parametrize("runtime_error,torch_error,written", [
    (5e-6, 1e-7, True),  # within the fixed tolerance
    (5e-5, 1e-7, False),  # torch float32 is accurate, the runtime is not
    (5e-5, 2e-5, True),  # an ill-conditioned model: torch float32 itself rounds that much
])
def test_probe_tolerance_follows_torch_rounding(tmp_path, monkeypatch, runtime_error, torch_error, written):
    monkeypatch.setattr(exporter, "probe_difference", lambda model, artifact: (runtime_error, torch_error))
    target = tmp_path / "model.sbts"
    if written:
        export(randomised("sbt"), target)
    else:
        with pytest.raises(SBTSError, match="not written"):
            export(randomised("sbt"), target)
    assert target.exists() == written


def test_failed_probe_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(exporter, "probe_difference", failing_probe)
    model = randomised("sbt").train()
    target = tmp_path / "model.sbts"
    with pytest.raises(SBTSError, match="not written"):
        export(model, target)
    assert list(tmp_path.iterdir()) == []
    assert model.training  # the model's mode is restored

    target.write_bytes(b"an earlier export")
    with pytest.raises(SBTSError, match="not written"):
        export(model, target)
    assert target.read_bytes() == b"an earlier export" and list(tmp_path.iterdir()) == [target]


def test_failed_probe_in_float16_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(exporter, "probe_difference", failing_probe)
    with pytest.raises(SBTSError):
        export(randomised("dense"), tmp_path / "model.sbts", float_dtype="float16")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# Size: what the masks need, and much smaller than dense
# --------------------------------------------------------------------------------------------

WIDER = dict(d_model=64, d_ff=128, attention="full", norm="none")


def test_sparse_binary_artifact_size(tmp_path):
    sizes, mask_bytes = {}, {}
    for name, overrides in [("dense", {}), ("sbt-0.5", {"density": 0.5}), ("sbt-0.1", {"density": 0.1})]:
        model = randomised(name.split("-")[0], **WIDER, **overrides)
        path = tmp_path / f"{name}.sbts"
        sizes[name] = export(model, path).size_bytes
        mask_bytes[name] = read_artifact(path).tensors.get(MASKS, np.zeros(0)).nbytes
    storage = model.storage().values()  # the three models share one structure
    positions = sum(layer.positions for layer in storage)
    assert positions > 60_000

    assert mask_bytes["sbt-0.5"] <= sum(math.ceil(layer.positions / 8) for layer in storage)  # never above 1 bit
    assert mask_bytes["sbt-0.1"] < 0.6 * positions / 8  # ~0.47 bits of entropy per position at density 0.1
    assert sizes["sbt-0.5"] < 1.3 * positions / 8 + 8 * 1024
    assert sizes["dense"] > 4 * positions  # float32 weights
    assert sizes["sbt-0.5"] * 15 < sizes["dense"]


# --------------------------------------------------------------------------------------------
# The runtime needs neither torch nor the training code
# --------------------------------------------------------------------------------------------

def test_runtime_loads_and_predicts_without_torch(good_artifact, tmp_path):
    path = tmp_path / "model.sbts"
    path.write_bytes(good_artifact)
    code = (
        "import sys\n"
        "import numpy as np\n"
        "import sbts.runtime\n"
        "model = sbts.runtime.load(sys.argv[1])\n"
        "print(*model.predict([np.ones((3, 5)), np.zeros((3, 9))]))\n"
        "heavy = ('torch', 'sklearn', 'sbts.training', 'sbts.models', 'sbts.layers', 'sbts.export', 'sbts.tasks')\n"
        "light = ('sbts.layers', 'sbts.layers.kinds', 'sbts.layers.layout',  # the torch-free layer modules\n"
        "         'sbts.layers.storage')\n"
        "print(sorted(m for m in sys.modules if m not in light\n"
        "             and any(m == h or m.startswith(h + '.') for h in heavy)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    predictions, imported = done.stdout.strip().splitlines()
    assert all(label in CLASSES for label in predictions.split()) and len(predictions.split()) == 2
    assert imported == "[]"


def test_a_document_nested_thousands_deep_is_refused_not_a_recursion_error(good_artifact, tmp_path):
    metadata, tensors = stored_parts(good_artifact)
    deep = "[" * 100_000 + "]" * 100_000
    path = tmp_path / "model.sbts"
    path.write_bytes(save_tensors(tensors, metadata={**metadata, "document": deep,
                                                     "checksum": checksum(deep, tensors)}))
    assert_refused(path, "unreadable document")


def test_a_file_beyond_the_artifact_size_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.sbts"
    with path.open("wb") as sparse:  # no disk used: a hole
        sparse.truncate(codec.MAX_ARTIFACT_BYTES + 1)
    assert_refused(path, f"{codec.MAX_ARTIFACT_BYTES + 1:,} bytes; an sbts artifact is at most")


EXPORT_IN_A_FRESH_PROCESS = """
import sys
import numpy as np
import sbts
from conftest import randomise
from sbts.export.artifact import export_model
model = randomise(sbts.create_model("sbt", in_channels=3, out_dim=4, max_len=8, d_model=8, n_heads=2, d_ff=16))
export_model(model, sys.argv[1], task="classification", inference_state={"classes": list("abcd")})
"""


def test_exports_of_one_model_are_byte_identical_across_processes(tmp_path):
    """safetensors writes its header's keys in hash order, new in every process; sbts sorts them."""
    paths = [tmp_path / f"export{i}.sbts" for i in range(3)]
    for path in paths:
        subprocess.run([sys.executable, "-c", EXPORT_IN_A_FRESH_PROCESS, str(path)], check=True,
                       cwd=Path(__file__).parent)
    assert len({path.read_bytes() for path in paths}) == 1


KEY = b"k" * codec.MIN_KEY_BYTES


@pytest.fixture()
def signed(good_artifact, tmp_path) -> Path:
    stored = load_artifact_bytes(good_artifact, "good")
    path = tmp_path / "signed.sbts"
    path.write_bytes(artifact_bytes(stored.document, stored.tensors, key=KEY))
    return path


def test_a_signed_file_verifies_with_its_key_and_predicts_as_the_unsigned_one(signed, good_artifact, tmp_path):
    unsigned = tmp_path / "unsigned.sbts"
    unsigned.write_bytes(good_artifact)
    x = synthetic_cases(5, SMALL["in_channels"], min_len=4, max_len=SMALL["max_len"], seed=3)[0]
    np.testing.assert_array_equal(load(signed, key=KEY, require_signature=True).decision_function(x),
                                  load(unsigned).decision_function(x))


def test_signing_policy(signed, good_artifact, tmp_path, monkeypatch):
    unsigned = tmp_path / "unsigned.sbts"
    unsigned.write_bytes(good_artifact)
    with pytest.raises(ArtifactError, match="signature does not verify with the key in SBTS_SIGNING_KEY"):
        load(signed, key=b"another key, long enough")
    with pytest.raises(ArtifactError, match="not signed, and a signature is required"):
        load(unsigned, key=KEY, require_signature=True)
    with pytest.raises(ArtifactError, match="signed, but there is no key to verify it"):
        load(signed, require_signature=True)
    load(unsigned, key=KEY)  # a key alone verifies the signed files; unsigned ones pass unless required
    load(signed)  # no key: the checksum alone is checked
    monkeypatch.setenv(codec.SIGNING_KEY_ENV, KEY.decode())
    monkeypatch.setenv(codec.REQUIRE_SIGNATURE_ENV, "yes")
    load(signed)
    with pytest.raises(ArtifactError, match="not signed"):
        load(unsigned)
    monkeypatch.setenv(codec.SIGNING_KEY_ENV, "short")
    with pytest.raises(ArtifactError, match="holds 5 bytes; a signing key needs at least 16"):
        load(signed)


def test_an_edit_with_the_checksum_recomputed_fails_the_signature(signed, tmp_path):
    stored = load_artifact_bytes(signed.read_bytes(), "signed")
    metadata, tensors = stored_parts(signed.read_bytes())
    tensors[ALPHAS] = tensors[ALPHAS] * 2  # a valid model, but not the one that was signed
    document_json = metadata["document"]
    edited = tmp_path / "edited.sbts"
    edited.write_bytes(save_tensors(tensors, metadata={**metadata, "checksum": checksum(document_json, tensors)}))
    assert stored.signature == metadata["signature"]
    load(edited)  # the checksum alone cannot tell: it was recomputed
    with pytest.raises(ArtifactError, match="signature does not verify"):
        load(edited, key=KEY)


def test_export_signs_when_a_key_is_set(tmp_path, monkeypatch):
    monkeypatch.setenv(codec.SIGNING_KEY_ENV, KEY.decode())
    path = tmp_path / "model.sbts"
    export_model(randomised("sbt"), path, task="classification", inference_state={"classes": CLASSES})
    assert codec.read_artifact(path, require_signature=True).signature.startswith(codec.SIGNATURE_PREFIX)
