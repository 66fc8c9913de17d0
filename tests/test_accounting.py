"""Compression accounting: the paper's table reproduced exactly, the honest counts checked against the runtime."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import sbts
from sbts.compression import paper_count, render_table, summarize_config
from sbts.compression.accounting import honest_count
from sbts.config import ModelConfig
from sbts.errors import ConfigError
from sbts.runtime.network import MacCounter, forward
from sbts.tasks.runs import preset_path

# paper-spec §6.3: (task, dataset) -> dense params, dense bits, dense FLOPs, SBT params, SBT non-zero, SBT bits,
# SBT FLOPs, storage ratio, FLOP ratio (as printed, rounded).
PAPER_TABLE = {
    ("anomaly", "SMD"): (132_794, 4_249_408, 19_513_552, 129_808, 32_452, 129_808, 1_863_484, 32.7, 10.47),
    ("anomaly", "MSL"): (223_717, 7_158_944, 4_949_440, 221_540, 55_384, 221_540, 982_994, 32.3, 5.04),
    ("anomaly", "SMAP"): (75_187, 2_405_984, 1_346_200, 73_700, 18_424, 73_700, 219_674, 32.6, 6.13),
    ("forecasting", "ECL"): (1_569_383, 50_220_256, 204_758_100, 1_563_900, 781_950, 1_563_900, 74_543_450, 32.1,
                             2.75),
    ("forecasting", "WTH"): (188_024, 6_016_768, 28_504_800, 185_600, 92_800, 185_600, 6_242_800, 32.4, 4.57),
    ("forecasting", "ETTm1"): (102_023, 3_264_736, 15_530_624, 100_000, 50_000, 100_000, 2_610_656, 32.6, 5.95),
    ("classification", "SpokenArabicDigits"): (167_050, 5_345_600, 4_621_412, 100_032, 90_048, 107_968, 3_025_330,
                                               49.5, 1.53),
    ("classification", "FaceDetection"): (414_850, 13_275_200, 8_276_752, 281_344, 140_928, 297_216, 3_955_600, 44.7,
                                          2.09),
    ("classification", "Heartbeat"): (169_602, 5_427_264, 52_729_380, 102_592, 92_352, 110_528, 25_585_984, 49.1,
                                      2.06),
    ("classification", "InsectWingbeat"): (1_503_498, 48_111_936, 19_765_344, 1_234_944, 618_240, 1_282_560,
                                           9_797_472, 37.5, 2.02),
    ("classification", "JapaneseVowels"): (75_529, 2_416_928, 326_532, 41_760, 20_944, 45_728, 156_148, 52.9, 2.09),
}

# paper-spec §6.3, "other keep rates": FLOP ratio at densities other than the table's (for classification the
# official evaluation set the Q/K/V activation density to the same value: 4.09 and 9.23 need it).
PAPER_FLOP_RATIOS = [
    (("anomaly", "SMD"), 0.5, 5.39), (("anomaly", "SMD"), 0.1, 24.1),
    (("forecasting", "ETTm1"), 0.25, 11.4), (("forecasting", "ETTm1"), 0.1, 25.3),
    (("classification", "JapaneseVowels"), 0.25, 4.09), (("classification", "JapaneseVowels"), 0.1, 9.23),
]


def paper_config(task: str, dataset: str, model: str = "sbt"):
    path = preset_path(task, dataset, model)
    assert path is not None, f"no shipped config for {task} {dataset} {model}"
    return path


@pytest.mark.parametrize("key", list(PAPER_TABLE), ids=lambda k: f"{k[0]}-{k[1]}")
def test_paper_accounting_reproduces_every_row(key):
    dense_params, dense_bits, dense_flops, sbt_params, sbt_nonzero, sbt_bits, sbt_flops, storage, flops = \
        PAPER_TABLE[key]
    report = summarize_config(paper_config(*key), accounting="paper")
    assert report["dense"]["config"].startswith("paper preset")  # the shipped dense partner, not a derived one
    assert (report["dense"]["params"], report["dense"]["bits"], report["dense"]["flops"]) == (
        dense_params, dense_bits, dense_flops)
    assert (report["sbt"]["params"], report["sbt"]["nonzero"], report["sbt"]["bits"], report["sbt"]["flops"]) == (
        sbt_params, sbt_nonzero, sbt_bits, sbt_flops)
    assert round(report["ratio"]["storage"], 1) == storage
    assert report["ratio"]["flops"] == pytest.approx(flops, abs=0.005)


@pytest.mark.parametrize("key,density,ratio", PAPER_FLOP_RATIOS)
def test_paper_flop_ratio_at_other_densities(key, density, ratio):
    qkv_density = density if key[0] == "classification" else None
    report = summarize_config(paper_config(*key), accounting="paper", density=density, qkv_density=qkv_density)
    assert report["sbt"]["density"] == density
    assert report["ratio"]["flops"] == pytest.approx(ratio, abs=0.006 if ratio < 10 else 0.06)
    # storage does not depend on the density in the paper's accounting (1 bit per position)
    assert report["ratio"]["storage"] == summarize_config(paper_config(*key), accounting="paper")["ratio"]["storage"]


def test_the_headline_numbers():
    jv = summarize_config(paper_config("classification", "JapaneseVowels"), accounting="paper")
    smd = summarize_config(paper_config("anomaly", "SMD"), accounting="paper")
    assert f"{jv['ratio']['storage']:.1f}" == "52.9"
    assert f"{smd['ratio']['flops']:.2f}" == "10.47"


def test_summary_rows_add_up_to_the_totals():
    report = summarize_config(paper_config("classification", "JapaneseVowels"), accounting="paper")
    for side in ("dense", "sbt"):
        rows = [layer[side] for layer in report["layers"] if layer[side]]
        for key in ("params", "bits", "flops"):
            assert sum(row[key] for row in rows) == report[side][key]
    names = [layer["name"] for layer in report["layers"]]
    assert names[0] == "embedding" and names[-1] == "head" and "layers.1.attention.q_proj" in names


def small_model(name: str, **kw) -> sbts.models.TimeSeriesTransformer:
    fields = dict(in_channels=3, out_dim=5, max_len=10, d_model=8, n_heads=2, n_layers=2, d_ff=16)
    return sbts.create_model(name, **{**fields, **kw})


@pytest.mark.parametrize("name", sbts.list_models())
@pytest.mark.parametrize("attention,norm,pos", [("full", "batch", "learnable"), ("qkv_mask", "batch", "sinusoidal"),
                                                ("step_t", "layer_time", "sinusoidal"), ("step_t", "none", "none")])
def test_declarations_cover_every_tensor(name, attention, norm, pos):
    """Every parameter and buffer of the model is declared by exactly one layer, with its size."""
    model = small_model(name, attention=attention, norm=norm, pos_encoding=pos, linear_bias=True)
    declared = {}
    for layer_name, st in model.storage().items():
        if st.positions:
            declared[f"{layer_name}.{'scores' if st.kind == 'sparse_binary_linear' else 'weight'}"] = st.positions
        for t in st.tensors:
            if t.name not in ("alpha", "seed", "mask_seed"):  # derived scalars and seeds, not module tensors
                declared[f"{layer_name}.{t.name}"] = t.count
    actual = {key: value.numel() for key, value in [*model.named_parameters(), *model.named_buffers()]
              if not key.endswith("num_batches_tracked")}
    if name == "sbt":  # the frozen W is regenerated from the seed: declared as 1-bit positions, not a tensor
        actual = {k: v for k, v in actual.items() if not (k.endswith(".weight") and k.rsplit(".", 1)[0] in
                                                          model.linear_layers())}
    assert declared == actual


def test_honest_counts_runtime_work_per_layer():
    model = small_model("sbt", attention="step_t", norm="none", density=0.25)
    tensors = {}
    for layer_name, layer in model.linear_layers().items():
        tensors[f"{layer_name}.weight"] = layer.effective_weight().detach().numpy()
        if layer.bias is not None:
            tensors[f"{layer_name}.bias"] = layer.bias.numpy()
    tensors["positional.table"] = model.positional.table.numpy()
    counter = MacCounter()
    forward(model.config, tensors, torch.zeros(1, 10, 3).numpy(), counter=counter)
    count = honest_count(model.storage(), model.config, counter.by_layer, input_scaler_channels=3)
    assert count.total("flops") == counter.total
    rows = {row.name: row for row in count.layers}
    # Step-T: the query of the last step only, keys of the 9 past steps, values of all 10 steps
    assert rows["layers.0.attention.q_proj"].flops == 1 * 8 * 8
    assert rows["layers.0.attention.k_proj"].flops == 9 * 8 * 8
    assert rows["layers.0.attention.v_proj"].flops == 10 * 8 * 8
    assert rows["layers.0.attention"].flops == 2 * 2 * 1 * 9 * 4  # scores and weighted sum, 2 heads of 4
    # storage: 1 bit per position + alpha (32) + seed (64) per linear; the frozen bias is regenerated
    q = rows["layers.0.attention.q_proj"]
    assert q.bits == 64 + 32 + 64 and q.params == 64 + 2  # positions, alpha, seed
    assert rows["input_scaler"].bits == 2 * 3 * 64
    with pytest.raises(ValueError, match="undeclared"):
        honest_count(model.storage(), model.config, {"nowhere": 1}, input_scaler_channels=3)


def test_honest_summary_reports_artifact_sizes_and_theoretical_flops():
    report = summarize_config(paper_config("anomaly", "SMD"), accounting="honest", density=0.1)
    sbt, dense = report["sbt"], report["dense"]
    assert sbt["artifact_bytes"] * 8 > sbt["bits"] * 0.5  # the real file cannot be far below the bit count
    assert report["ratio"]["artifact"] == pytest.approx(dense["artifact_bytes"] / sbt["artifact_bytes"], rel=1e-3)
    assert sbt["flops_nonzero"] < sbt["flops"]  # zero weights would only save work with a sparse kernel
    # the honest storage ratio is below the paper's: masks, alphas, seeds and the scaler are counted
    paper = summarize_config(paper_config("anomaly", "SMD"), accounting="paper", density=0.1)
    assert report["ratio"]["storage"] < paper["ratio"]["storage"]
    assert report["ratio"]["flops"] < paper["ratio"]["flops"]


def test_paper_rules_apply_per_declared_kind():
    """A dense model with Step-T gets the Step-T attention formula; the learnable table counts 1024 rows."""
    model = small_model("dense", attention="step_t", norm="none", pos_encoding="learnable")
    count = paper_count(model.storage(), model.config)
    rows = {row.name: row for row in count.layers}
    w, d, h, dh = 10, 8, 2, 4
    assert rows["layers.0.attention"].flops == w * d + h * ((w - 1) * dh + w + (w - 1) * dh)
    assert rows["positional"].params == 1024 * d
    assert rows["layers.0.attention.q_proj"].flops == d * d * w and rows["layers.0.ff1"].flops == d * 16


def test_summary_config_needs_data_dimensions(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: classification\nmodel_name: sbt\nmodel:\n  d_model: 8\n")
    with pytest.raises(ConfigError, match="in_channels, out_dim, max_len"):
        summarize_config(path, accounting="paper")
    with pytest.raises(ConfigError, match="accounting"):
        summarize_config(paper_config("anomaly", "SMD"), accounting="exact")


def test_derived_counterpart_for_a_config_without_a_preset(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: classification\nmodel_name: sbt\nmodel: {in_channels: 3, out_dim: 2, max_len: 12, "
                    "d_model: 8, d_ff: 16, attention: qkv_mask}\n")
    report = summarize_config(path, accounting="paper", density=0.25)
    assert report["dense"]["config"].startswith("derived")
    assert report["sbt"]["density"] == 0.25
    # the derived dense model keeps the structure and options, with float linears
    config = ModelConfig.from_dict({k: v for k, v in dict(in_channels=3, out_dim=2, max_len=12, d_model=8, d_ff=16,
                                                          attention="qkv_mask", linear="dense",
                                                          pos_encoding="sinusoidal").items()})
    expected = paper_count(sbts.create_model(config).storage(), config)
    assert report["dense"]["params"] == expected.total("params")


SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"


@pytest.mark.parametrize("accounting", ["paper", "honest"])
def test_summary_table_snapshot(accounting):
    """The printed table of the JapaneseVowels pair, character for character (update the file on purpose only)."""
    path = paper_config("classification", "JapaneseVowels")
    table = render_table(summarize_config(path, accounting=accounting)).replace(str(path), path.name)
    snapshot = SNAPSHOTS / f"summary_JapaneseVowels_{accounting}.txt"
    assert table + "\n" == snapshot.read_text()
