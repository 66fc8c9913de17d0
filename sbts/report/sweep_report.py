"""A sweep's results page: the tables a paper prints, a JSON copy, and figures of accuracy against bytes.

Per dataset, one row per model (dense, SBT at each density, and any other option the sweep varied) with
mean ± sample std over its seeds of the validation objective and the task's test metrics, the model's size
in bytes (honest: the .sbts file; and the paper's count), and the baselines the task computes in every run (with
their validation objective and size where they report them). Figures: every run's headline test metric against
its size (log axis) with the Pareto front, baselines that have a size included, and the SBT's metric against
density next to the dense model's. Read from the study, so runs trained on other machines
are included.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sbts.atomic import atomic_write_bytes
from sbts.metrics.reported import ReportedMetric
from sbts.report.figure import pyplot, save
from sbts.errors import ConfigError
from sbts.sweep.spec import DATA_AXIS, SEED_OPTION
from sbts.sweep.study import StudyResults, read_results
from sbts.sweep.trials import SIZE_NOTES
from sbts.tasks import get_task

REPORT_NAME = "report.md"
FIGURE_SUFFIXES = {"pareto": "-pareto.png", "density": "-density.png"}
PANEL_INCHES = (4.6, 3.4)  # one dataset's panel
PANELS_PER_ROW = 3
MISSING = "–"
DECIMALS = 3
BASELINE_MARKER = "x"
BASELINE_SIZE_NOTE = ("baseline size (bytes): what the fitted baseline stores, every number counted as float32 "
                      "(sbts.baselines.classification: ROCKET kernels, biases and ridge weights; 1-NN DTW's training "
                      "set)")
FIT_NOTE = ("fit (s): a Transformer's epochs x s/epoch (training with its per-epoch validation); a baseline's "
            "fit on the same training cases; both in the trial's process, at its torch threads")


@dataclass
class WrittenReport:
    markdown: Path
    json: Path
    figures: list[Path] = field(default_factory=list)
    runs: int = 0


def mean_std(values: list[float | None], decimals: int = DECIMALS) -> str:
    """``mean ± sample std`` (NaN and missing values left out; "–" when none are left)."""
    values = [v for v in values if v is not None and v == v]
    if not values:
        return MISSING
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{decimals}f} ± {std:.{decimals}f}"


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None and v == v]
    return statistics.mean(values) if values else None


def _extras(results: StudyResults, record: dict[str, Any]) -> dict[str, Any]:
    """The options a run varied besides its dataset, seed, model and density (and ``baselines``, which fits
    extra models beside it and changes nothing of its own), and those the task's baselines depend on (which
    give the run its own table: a forecaster's horizon)."""
    varying = results.spec.varying(record["params"])
    return {k: v for k, v in varying.items() if k not in (DATA_AXIS, SEED_OPTION, "model", "density", "baselines")
            and k not in get_task(results.spec.task).baseline_options}


def _table_context(results: StudyResults, record: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The varied options the task's baselines depend on: runs that differ in them are compared apart."""
    varying = results.spec.varying(record["params"])
    return tuple((k, varying[k]) for k in get_task(results.spec.task).baseline_options if k in varying)


def _table_title(dataset: str, context: tuple[tuple[str, Any], ...]) -> str:
    return ", ".join([dataset] + [f"{k} {v}" for k, v in context])


def model_label(record: dict[str, Any], extras: dict[str, Any]) -> str:
    name = "dense" if record["model"] == "dense" else f"SBT d={record['density']:g}"
    return ", ".join([name] + [f"{k}={v}" for k, v in extras.items()])


def _row_order(record: dict[str, Any], extras: dict[str, Any]) -> tuple:
    return (record["model"] != "dense", -record["density"], sorted(map(str, extras.items())))


def pareto_front(points: list[tuple[float, float, str]], metric: ReportedMetric) -> list[str]:
    """The runs no other run beats on both size (smaller) and the metric, smallest first."""
    front, best = [], None
    for size, value, name in sorted(points, key=lambda p: (p[0], -p[1] if metric.goal == "maximize" else p[1])):
        if value is not None and (best is None or metric.better(value, best)):
            front.append(name)
            best = value
    return front


def baseline_label(name: str, seed: Any) -> str:
    return f"baseline: {name} (seed {seed})"


def baseline_points(runs: list[dict[str, Any]], metric: ReportedMetric) -> list[dict[str, Any]]:
    """One point per baseline with a size and seed: runs of one seed share their split, so their baselines are
    the same fit (each kept once, named after the first run that has it)."""
    points: dict[tuple, dict[str, Any]] = {}
    for record in runs:
        for name, entry in record.get("baselines", {}).items():
            if entry.get("size_bytes") is None:
                continue
            key = (name, record["seed"], entry["size_bytes"], entry.get(metric.key))
            points.setdefault(key, {"point": f"{record['run']}/{name}", "label": baseline_label(name, record["seed"]),
                                    "baseline": name, "size_bytes": entry["size_bytes"],
                                    metric.key: entry.get(metric.key)})
    return list(points.values())


def _tables(results: StudyResults) -> dict[str, Any]:
    task = get_task(results.spec.task)
    objective = task.validation_objective
    datasets: dict[str, Any] = {}
    appearing = list(dict.fromkeys((r["dataset"], _table_context(results, r)) for r in results.records))
    spec_order = results.spec.datasets  # the spec's order; a dataset it names otherwise (canonical) keeps its place

    def place(key: tuple[str, tuple]) -> tuple:
        dataset, context = key
        return (spec_order.index(dataset) if dataset in spec_order else len(spec_order),
                [(k, float(v) if isinstance(v, (int, float)) else str(v)) for k, v in context])
    for dataset, context in sorted(appearing, key=place):
        runs = [r for r in results.records if r["dataset"] == dataset and _table_context(results, r) == context]
        groups: dict[str, list[dict[str, Any]]] = {}
        order: dict[str, tuple] = {}
        for record in runs:
            extras = _extras(results, record)
            label = model_label(record, extras)
            groups.setdefault(label, []).append(record)
            order[label] = _row_order(record, extras)
        rows = []
        for label in sorted(groups, key=order.get):
            members = groups[label]
            rows.append({"model": label, "runs": len(members), "seeds": sorted(r["seed"] for r in members),
                         "run_names": [r["run"] for r in members], "seeds_in_order": [r["seed"] for r in members],
                         "val": {objective.key: [r["val"][objective.key] for r in members]},
                         "test": {m.key: [r["test"].get(m.key) for r in members] for m in task.test_metrics},
                         "size_bytes": _mean([r["size_bytes"] for r in members]),
                         "paper_bytes": _mean([r["paper_bytes"] for r in members]),
                         "epochs": _mean([r["epochs"] for r in members]),
                         "seconds_per_epoch": _mean([r["seconds_per_epoch"] for r in members]),
                         "density": members[0]["density"], "dense": members[0]["model"] == "dense"})
        baselines = {}
        for name in dict.fromkeys(n for r in runs for n in r.get("baselines", {})):
            entries = [r["baselines"][name] for r in runs if name in r.get("baselines", {})]
            baselines[name] = {m.key: [r["baselines"].get(name, {}).get(m.key) for r in runs]
                               for m in task.test_metrics}
            baselines[name].update({
                "runs": len(entries), "val": {objective.key: [e.get("val", {}).get(objective.key) for e in entries]},
                "size_bytes": _mean([e.get("size_bytes") for e in entries]),
                "fit_seconds": _mean([e.get("fit_seconds") for e in entries])})
        headline = task.test_metrics[0]
        sized = baseline_points(runs, headline)
        points = [(r["size_bytes"], r["test"].get(headline.key), r["run"]) for r in runs]
        points += [(p["size_bytes"], p[headline.key], p["point"]) for p in sized]
        datasets[_table_title(dataset, context)] = {"dataset": dataset, "rows": rows, "baselines": baselines,
                                                    "baseline_points": sized,
                                                    "pareto_front": pareto_front(points, headline)}
    return datasets


def _protocol_lines(results: StudyResults) -> list[str]:
    task = get_task(results.spec.task)
    first = results.records[0] if results.records else {}
    lines = [f"- Selection: {first.get('selection') or 'the best epoch on validation data'}; the sweep's objective "
             f"is each run's {task.validation_objective.label} (validation data only; test data never selects)."]
    if first.get("threshold_fitted_on"):
        lines.append(f"- Threshold: fitted on {first['threshold_fitted_on']}.")
    oracle = [m.label for m in task.test_metrics if m.oracle]
    if oracle:
        lines.append(f"- {', '.join(oracle)}: ORACLE, chosen with the test labels; an upper bound, not a deployable "
                     "result.")
    lines += [f"- {key}: {note}." for key, note in SIZE_NOTES.items()]
    if any(entry.get("size_bytes") is not None for r in results.records for entry in r.get("baselines", {}).values()):
        lines.append(f"- {BASELINE_SIZE_NOTE}.")
    lines.append(f"- {FIT_NOTE}.")
    threads = sorted({r.get("torch_threads") for r in results.records if r.get("torch_threads") is not None})
    hosts = sorted({r.get("host") for r in results.records if r.get("host")})
    commits = sorted({r.get("git_commit") for r in results.records if r.get("git_commit")})
    lines.append(f"- Runs: {len(results.records)} on {len(hosts)} machine(s), torch threads per run "
                 f"{', '.join(map(str, threads)) or 'unknown'}; sbts commit {', '.join(commits) or 'unknown'}.")
    return lines


def _seconds(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1f}"


def render_markdown(results: StudyResults, tables: dict[str, Any], figures: dict[str, Path],
                    heading: str = "##") -> str:
    task = get_task(results.spec.task)
    objective = task.validation_objective
    counts = ", ".join(f"{n} {state}" for state, n in results.counts.items() if n)
    lines = [f"{heading} Sweep {results.name}: {task.name}, mean ± std over seeds", ""]
    if results.spec.description:
        lines += [results.spec.description.strip(), ""]
    lines += [f"Study `{results.name}` in `{results.storage}` (trials: {counts or 'none'}). Re-run: "
              f"`sbts sweep SPEC --out DIR` with the spec recorded in the study (or `sbts reproduce NAME`).", ""]
    lines += _protocol_lines(results) + [""]
    header = (["model", "runs", objective.label] + [m.label + (" (oracle)" if m.oracle and "oracle" not in m.label
                                                               else "") for m in task.test_metrics]
              + ["size (bytes)", "paper size (bytes)", "epochs", "s/epoch", "fit (s)"])
    for dataset, table in tables.items():
        lines += [f"{heading}# {dataset}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in table["rows"]:
            cells = [row["model"], str(row["runs"]), mean_std(row["val"][objective.key])]
            cells += [mean_std(row["test"][m.key]) for m in task.test_metrics]
            cells += [f"{row['size_bytes']:,.0f}", f"{row['paper_bytes']:,.0f}",
                      f"{row['epochs']:.1f}" if row["epochs"] is not None else MISSING,
                      f"{row['seconds_per_epoch']:.3f}" if row["seconds_per_epoch"] is not None else MISSING,
                      _seconds(None if None in (row["epochs"], row["seconds_per_epoch"])
                               else row["epochs"] * row["seconds_per_epoch"])]
            lines.append("| " + " | ".join(cells) + " |")
        for name, values in table["baselines"].items():
            cells = [f"baseline: {name}", str(values["runs"]), mean_std(values["val"][objective.key])]
            cells += [mean_std(values[m.key]) for m in task.test_metrics]
            cells += [MISSING if values["size_bytes"] is None else f"{values['size_bytes']:,.0f}"] + [MISSING] * 3
            cells.append(_seconds(values["fit_seconds"]))
            lines.append("| " + " | ".join(cells) + " |")
        label_of = {name: f"{row['model']} (seed {seed})" for row in table["rows"]
                    for name, seed in zip(row["run_names"], row["seeds_in_order"])}
        label_of.update({point["point"]: point["label"] for point in table["baseline_points"]})
        lines += ["", f"Pareto front ({task.test_metrics[0].label} against size, smallest first): "
                      f"{', '.join(label_of[name] for name in table['pareto_front']) or 'none'}.", ""]
    for kind, path in figures.items():
        lines += [f"![{kind}]({path.name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _grid(plt, n: int):
    columns = min(n, PANELS_PER_ROW)
    rows = -(-n // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(PANEL_INCHES[0] * columns, PANEL_INCHES[1] * rows),
                                squeeze=False)
    for extra in axes.flat[n:]:
        extra.set_visible(False)
    return figure, list(axes.flat[:n])


def _log_axis(ax, ticks: list[float] | None = None) -> None:
    """A log x axis labelled at its decades (or at ``ticks``), without the crowded minor labels."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    if ticks:
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])


def _draw_panels(results: StudyResults, tables: dict[str, Any], output: Path, xlabel: str, draw) -> Path:
    """One panel per dataset: ``draw(ax, dataset, table, metric)`` plots it (and may return the x ticks); the
    headline test metric on the y axis, a log x axis."""
    plt = pyplot(output)
    metric = get_task(results.spec.task).test_metrics[0]
    figure, axes = _grid(plt, len(tables))
    for ax, (dataset, table) in zip(axes, tables.items()):
        _log_axis(ax, ticks=draw(ax, dataset, table, metric))
        ax.set_title(dataset)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric.label)
        ax.legend(fontsize="small")
    figure.tight_layout()
    return save(figure, output)


def draw_pareto(results: StudyResults, tables: dict[str, Any], output: Path) -> Path:
    """Every run's headline test metric against its size in bytes (log axis), the Pareto front joined."""
    def panel(ax, dataset: str, table: dict[str, Any], metric: ReportedMetric) -> None:
        runs = {r["run"]: r for r in results.records if r["dataset"] == table["dataset"]}
        for row in table["rows"]:  # one colour per row of the table: dense, SBT at each density, ...
            chosen = [runs[name] for name in row["run_names"]]
            ax.scatter([r["size_bytes"] for r in chosen], [r["test"].get(metric.key) for r in chosen],
                       marker="s" if row["dense"] else "o", color="black" if row["dense"] else None,
                       label=row["model"], alpha=0.8)
        sized = {point["point"]: point for point in table["baseline_points"]}
        for name in dict.fromkeys(point["baseline"] for point in sized.values()):
            chosen = [point for point in sized.values() if point["baseline"] == name]
            ax.scatter([p["size_bytes"] for p in chosen], [p[metric.key] for p in chosen], marker=BASELINE_MARKER,
                       label=f"baseline: {name}")
        front = [(runs[name]["size_bytes"], runs[name]["test"].get(metric.key)) if name in runs
                 else (sized[name]["size_bytes"], sized[name][metric.key]) for name in table["pareto_front"]]
        ax.plot([size for size, _ in front], [value for _, value in front], "k--", lw=1, label="Pareto front")
    with_baselines = any(table["baseline_points"] for table in tables.values())
    xlabel = f"model size, bytes (.sbts file{'; baselines: stored values' if with_baselines else ''}, log scale)"
    return _draw_panels(results, tables, output, xlabel, panel)


def draw_density(results: StudyResults, tables: dict[str, Any], output: Path) -> Path:
    """The SBT's headline test metric (mean ± std over seeds) against density, the dense model's as a line."""
    def panel(ax, dataset: str, table: dict[str, Any], metric: ReportedMetric) -> list[float]:
        sbt = sorted((row for row in table["rows"] if not row["dense"]), key=lambda row: row["density"])
        if sbt:
            values = [[v for v in row["test"][metric.key] if v is not None] for row in sbt]
            ax.errorbar([row["density"] for row in sbt], [statistics.mean(v) for v in values],
                        yerr=[statistics.stdev(v) if len(v) > 1 else 0.0 for v in values], marker="o", capsize=3,
                        label="SBT")
        for row in (row for row in table["rows"] if row["dense"]):
            values = [v for v in row["test"][metric.key] if v is not None]
            mean, std = statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
            ax.axhline(mean, color="black", ls="--", lw=1, label=f"{row['model']} (± std shaded)")
            ax.axhspan(mean - std, mean + std, color="black", alpha=0.1)
        return sorted({row["density"] for row in sbt})
    return _draw_panels(results, tables, output, "density (fraction of weights kept, log scale)", panel)


def build_report(results: StudyResults, markdown: Path, *, heading: str = "##",
                 figures: bool = True) -> tuple[str, dict[str, Any], dict[str, Path]]:
    """The page's Markdown, its JSON document and its figures (drawn beside ``markdown``)."""
    tables = _tables(results)
    drawn: dict[str, Path] = {}
    if figures and tables:
        stem = markdown.with_suffix("")
        drawn["pareto"] = draw_pareto(results, tables, Path(f"{stem}{FIGURE_SUFFIXES['pareto']}"))
        if any(not row["dense"] for table in tables.values() for row in table["rows"]):
            drawn["density"] = draw_density(results, tables, Path(f"{stem}{FIGURE_SUFFIXES['density']}"))
    document = {"study": results.name, "storage": results.storage, "task": results.spec.task,
                "spec": results.spec.document, "trials": results.counts, "size_notes": SIZE_NOTES,
                "datasets": tables, "runs": results.records}
    return render_markdown(results, tables, drawn, heading), document, drawn


def write_report(sweep_dir: str | Path | None, *, output: str | Path | None = None, storage_url: str | None = None,
                 study_name: str | None = None) -> WrittenReport:
    """Write the results page of a sweep (``output``, default SWEEP_DIR/report.md), its JSON beside it and its
    figures (when matplotlib is installed; the page says so otherwise)."""
    if output is None and sweep_dir is None:
        raise ConfigError("report needs -o FILE when it reads a study without a sweep directory")
    markdown = Path(output) if output is not None else Path(sweep_dir) / REPORT_NAME
    if markdown.suffix != ".md":
        raise ConfigError(f"-o {markdown}: the report is Markdown; name it *.md (the JSON and figures go beside it)")
    results = read_results(sweep_dir, storage_url=storage_url, study_name=study_name)
    try:
        text, document, figures = build_report(results, markdown)
    except ConfigError as exc:
        if "matplotlib" not in str(exc):
            raise
        text, document, figures = build_report(results, markdown, figures=False)
        text += "\nFigures left out: matplotlib is not installed (pip install 'sbts[plot]').\n"
    atomic_write_bytes(markdown, text.encode())
    json_path = markdown.with_suffix(".json")
    atomic_write_bytes(json_path, json.dumps(document, indent=1).encode())
    return WrittenReport(markdown, json_path, list(figures.values()), len(results.records))
