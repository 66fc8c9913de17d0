"""``sbts summary``: a dense model and its sparse-binary counterpart side by side, layer by layer.

The pair comes from a configuration file or a saved run. The counterpart of a paper configuration
is its shipped partner (``configs/paper/{task}_{dataset}_{dense|sbt}.yaml``) when the structure
matches; otherwise it is derived from the same fields with the other kind of linear. Under the
honest accounting both models are also exported in memory, and the artifact byte sizes are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sbts.compression.accounting import ACCOUNTINGS, ModelCount, honest_count, paper_count
from sbts.config import ModelConfig, check_density, read_config_file, resolve_density
from sbts.configs import preset_path
from sbts.data.preprocessing import ChannelScaler
from sbts.errors import ConfigError
from sbts.export.artifact import artifact_bytes, build_artifact
from sbts.models import create_model, model_config
from sbts.models.transformer import TimeSeriesTransformer
from sbts.registry import runtime_class, task_names
from sbts.runtime.artifact import load_artifact_bytes, network_tensors
from sbts.runtime.network import MacCounter, forward

STRUCTURE = ("in_channels", "out_dim", "max_len", "d_model", "n_heads", "n_layers", "d_ff")
RULES = {
    "paper": "official code's rules (paper-spec §6.1-6.2): 1 bit per sparse-binary weight position, 32 bits per "
             "dense parameter; FLOPs per sample with Q/K/V at every step and other linears at one step",
    "honest": "every stored tensor at its stored bits; FLOPs = multiply-accumulates the sbts numpy runtime executes "
              "(dense ternary matmuls: no saving from zero weights or Q/K/V masks)",
}


@dataclass
class SummarySide:
    """One model of the pair, where its configuration came from, and what its artifact would carry."""

    model: TimeSeriesTransformer
    source: str
    inference_state: dict[str, Any] = field(default_factory=dict)
    scaler: ChannelScaler | None = None  # None: a unit scaler of the right size (the size is what counts)


def _side_name(config: ModelConfig) -> str:
    return "dense" if config.linear == "dense" else "sbt"


def _model_from_spec(spec: dict[str, Any], source: str, sbt_overrides: dict[str, Any]) -> TimeSeriesTransformer:
    name = spec.get("model_name", "sbt")
    if not isinstance(name, str) or not isinstance(spec.get("model"), (dict, type(None))):
        raise ConfigError(f"{source}: model_name must be a name and model a mapping of settings")
    fields = dict(spec.get("model") or {})
    missing = [key for key in ("in_channels", "out_dim", "max_len") if key not in fields]
    if missing:
        raise ConfigError(f"{source}: the model section needs {', '.join(missing)} for a summary (or summarise a "
                          "run directory, whose config has them)")
    if name != "dense":
        if "density" in sbt_overrides:
            fields.pop("sparsity", None)
        fields.update(sbt_overrides)
    return create_model(model_config(name, **fields))


def _counterpart(config: ModelConfig, task: str, data: str | None, sbt_overrides: dict[str, Any]) -> SummarySide:
    """The other model of the pair: the shipped paper partner if its structure matches, else derived."""
    other = "sbt" if config.linear == "dense" else "dense"
    preset = preset_path(task, data, other) if data else None
    if preset is not None:
        model = _model_from_spec(read_config_file(preset), str(preset), sbt_overrides)
        if all(getattr(model.config, key) == getattr(config, key) for key in STRUCTURE):
            return SummarySide(model, f"paper preset {preset.name}")
    fields = {key: value for key, value in config.to_dict().items() if key not in ("linear", "density")}
    if other == "sbt":
        fields.update({"density": 0.5, **sbt_overrides})
    return SummarySide(create_model(model_config(other, **fields)), f"derived: the same structure with {other} linears")


def _count(side: SummarySide, accounting: str, task: str) -> ModelCount:
    model = side.model
    storage = model.storage()
    if accounting == "paper":
        return paper_count(storage, model.config)
    config = model.config
    scaler = side.scaler or ChannelScaler(np.zeros(config.in_channels), np.ones(config.in_channels))
    data = artifact_bytes(*build_artifact(model.eval(), task=task, inference_state=side.inference_state,
                                          scaler=scaler))
    counter = MacCounter()
    forward(config, network_tensors(load_artifact_bytes(data, side.source)),
            np.zeros((1, config.max_len, config.in_channels), dtype=np.float32),
            last_step_only=runtime_class(task).last_step_only, counter=counter)
    count = honest_count(storage, config, counter.by_layer, config.in_channels)
    density = {name: st.kept / st.positions for name, st in storage.items() if st.kind == "sparse_binary_linear"}
    header_bytes = 8 + int.from_bytes(data[:8], "little")  # safetensors: u64 length, then the JSON header
    count.extra = {"artifact_bytes": len(data), "artifact_header_bytes": header_bytes,
                   "flops_nonzero": round(sum(macs * density.get(name, 1.0) for name, macs in counter.by_layer.items()))}
    return count


def summarize(first: SummarySide, second: SummarySide, *, task: str, accounting: str) -> dict[str, Any]:
    """The side-by-side summary of two models (one dense, one sparse-binary) as a JSON-ready dict."""
    if accounting not in ACCOUNTINGS:
        raise ConfigError(f"accounting must be one of {', '.join(ACCOUNTINGS)}, got {accounting!r}")
    sides = {_side_name(s.model.config): s for s in (first, second)}
    if set(sides) != {"dense", "sbt"}:
        raise ConfigError("a summary compares one dense and one sparse-binary model")
    counts = {name: _count(side, accounting, task) for name, side in sides.items()}
    report: dict[str, Any] = {"accounting": accounting, "rules": RULES[accounting], "task": task}
    for name, side in sides.items():
        config = side.model.config
        totals = counts[name].totals()
        report[name] = {"config": side.source, "density": config.density, "sparsity": config.sparsity, **totals}
    ratio_keys = {"storage": "bits", "flops": "flops", "artifact": "artifact_bytes"}
    report["ratio"] = {key: round(report["dense"][field] / report["sbt"][field], 4)
                       for key, field in ratio_keys.items() if field in report["sbt"] and report["sbt"][field]}
    rows_by_name = {name: {row.name: row for row in counts[name].layers} for name in sides}
    names = list(rows_by_name["dense"]) + [n for n in rows_by_name["sbt"] if n not in rows_by_name["dense"]]
    report["layers"] = [{"name": n, **{side: rows_by_name[side][n].to_dict() if n in rows_by_name[side] else None
                                       for side in ("dense", "sbt")}} for n in names]
    return report


def config_pair(path: str | Path, *, density: float | None = None,
                qkv_density: float | None = None) -> tuple[SummarySide, SummarySide, str]:
    """The configuration's model, its counterpart and the task; ``density`` and ``qkv_density``
    override the sparse-binary model's kept fractions. Models are untrained (sizes do not depend on training)."""
    spec = read_config_file(path)
    task = spec.get("task", "classification")
    if task not in task_names():
        raise ConfigError(f"{path}: task must be one of {', '.join(task_names())}, got {task!r}")
    if not isinstance(spec.get("data", ""), str):
        raise ConfigError(f"{path}: data must be a dataset name or path, got {spec['data']!r}")
    sbt_overrides = {key: resolve_density(value) if key == "density" else check_density(value, key)
                     for key, value in (("density", density), ("qkv_density", qkv_density)) if value is not None}
    model = _model_from_spec(spec, str(path), sbt_overrides)
    return SummarySide(model, str(path)), _counterpart(model.config, task, spec.get("data"), sbt_overrides), task


def summarize_config(path: str | Path, *, accounting: str, density: float | None = None,
                     qkv_density: float | None = None) -> dict[str, Any]:
    """Summary of a configuration file and its counterpart."""
    first, second, task = config_pair(path, density=density, qkv_density=qkv_density)
    return summarize(first, second, task=task, accounting=accounting)


def summarize_run(trained: Any, source: str, *, accounting: str) -> dict[str, Any]:
    """Summary of a saved run's trained model (its artifact as ``sbts export`` writes it) and its counterpart.

    ``trained``: the run reloaded (``sbts.tasks.load_trained_run``: its ``run``, ``model``, ``inference_state`` and
    ``scaler``); ``source`` names it in the report."""
    first = SummarySide(trained.model, source, trained.inference_state, trained.scaler)
    config, task = trained.model.config, trained.run.task
    sbt_overrides = {} if config.linear == "dense" else {"density": config.density, "qkv_density": config.qkv_density}
    second = _counterpart(config, task, trained.run.data, sbt_overrides)
    second.inference_state, second.scaler = trained.inference_state, trained.scaler
    return summarize(first, second, task=task, accounting=accounting)


def _number(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.3f}" if value < 1 else f"{value:,.1f}"
    return f"{int(value):,}"


def render_table(report: dict[str, Any]) -> str:
    """The summary as a fixed-width text table (what ``sbts summary`` prints)."""
    header = ["layer", "kind", "shape", "dense params", "dense bits", "dense FLOPs",
              "sbt kept/positions", "density", "sbt bits", "sbt FLOPs"]
    rows = [header]
    for layer in report["layers"]:
        dense, sbt = layer["dense"] or {}, layer["sbt"] or {}
        either = sbt or dense
        # The bits columns tell dense from sparse-binary linears; other kinds are shown per side when they differ.
        kinds = ["linear" if side["kind"].endswith("_linear") else side["kind"] for side in (dense, sbt) if side]
        kind = kinds[0] if len(set(kinds)) == 1 else " / ".join(kinds)
        kept = f"{sbt['kept']:,}/{sbt['positions']:,}" if sbt.get("positions") else ""
        rows.append([layer["name"], kind, "x".join(map(str, either["shape"])),
                     _number(dense.get("params")), _number(dense.get("bits")), _number(dense.get("flops")),
                     kept, _number(sbt.get("density")), _number(sbt.get("bits")), _number(sbt.get("flops"))])
    d, s = report["dense"], report["sbt"]
    rows.append(["total", "", "", _number(d["params"]), _number(d["bits"]), _number(d["flops"]),
                 f"{_number(s['nonzero'])} nonzero", _number(s["density"]), _number(s["bits"]), _number(s["flops"])])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    ratio = report["ratio"]
    out = [f"accounting: {report['accounting']} ({report['rules']})",
           f"dense: {d['config']}", f"sbt:   {s['config']} (density {s['density']:g}, sparsity {s['sparsity']:g})",
           "", *lines, "",
           f"storage reduction {ratio.get('storage', float('nan')):.2f}x, FLOP reduction {ratio.get('flops', float('nan')):.2f}x"
           + (" (theoretical: no kernel skips the zeros)" if report["accounting"] == "paper" else "")]
    if "artifact" in ratio:
        out.append(f"artifact files: dense {d['artifact_bytes']:,} bytes, sbt {s['artifact_bytes']:,} bytes "
                   f"({ratio['artifact']:.2f}x); sbt FLOPs with a sparse kernel (theoretical): {s['flops_nonzero']:,}")
    return "\n".join(out)
