"""A sweep specification: what to train (task, data, fixed options) and over what (a grid or a search space).

The smallest spec::

    task: classification
    data: UEA/JapaneseVowels
    fixed: {epochs: 3, d_model: 16}
    grid: {model: [sbt], density: [0.5, 0.25], seed: [0, 1]}

Keys: ``task``; ``data`` (one dataset, or a list: a grid axis of its own); ``fixed`` (options every trial
gets); ``per_data`` (dataset -> options its trials get over ``fixed``, e.g. fewer epochs on a set whose epoch
is a hundred times longer: the budget stays in the spec, not in anyone's head); either ``grid`` (option ->
list of values; Optuna's GridSampler visits every cell) or ``search`` (option -> ``{low, high[, log]}`` or a
list of choices; TPE) with ``n_trials``; ``variants`` (a list of option mappings, one axis whose values go
together, e.g. ``{model: dense}`` and ``{model: sbt, density: 0.25}``); ``seeds`` (a list: with a grid, an
axis; with a search, every trial trains each seed and scores their mean); ``name`` (the study's; default: the
file's stem); ``description``; ``nproc_per_node`` (processes per trial, run under torchrun: DDP);
``heartbeat_seconds`` (how often a running trial proves it is alive).

Options are the flat names of ``sbts train TASK`` (``d_model``, ``density``, ``epochs``, ``model``, ``seed``,
...). Every value is checked against the task's option table and, before anything starts, every grid cell
(the ends and choices of a search space) is resolved into a complete run configuration on its data.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sbts.config import read_config_file
from sbts.errors import ConfigError, SBTSError
from sbts.registry import task_names
from sbts.tasks import get_task
from sbts.tasks.base import DataSource, Task
from sbts.tasks.options import option_table, spec_from_options
from sbts.tasks.runs import build_run_spec

SPEC_KEYS = ("task", "data", "fixed", "per_data", "grid", "search", "variants", "seeds", "n_trials", "name",
             "description", "nproc_per_node", "heartbeat_seconds")
DATA_AXIS, VARIANT_AXIS, SEED_OPTION = "data", "variant", "seed"
DEFAULT_HEARTBEAT_SECONDS = 30  # a killed worker's trial is taken over after HEARTBEAT_GRACE x this
SEARCH_BOUND_KEYS = {"low", "high", "log"}
GridValue = str | int | float | bool


@dataclass(frozen=True)
class SearchRange:
    low: float
    high: float
    log: bool = False
    integer: bool = False


@dataclass
class SweepSpec:
    """A checked sweep specification (see the module's docstring)."""

    task: str
    datasets: list[str]
    fixed: dict[str, Any]
    per_data: dict[str, dict[str, Any]]  # dataset -> the options its trials get over the fixed ones
    grid: dict[str, list[GridValue]]  # axis -> values; the data and variant axes included when they vary
    search: dict[str, SearchRange | list[GridValue]]
    variants: dict[str, dict[str, Any]]  # label -> the options it sets
    seeds: list[int]  # search only: the seeds every trial trains (a grid has its seeds on the seed axis)
    n_trials: int | None
    name: str
    description: str = ""
    nproc_per_node: int = 1
    heartbeat_seconds: int = DEFAULT_HEARTBEAT_SECONDS
    source: str = "spec"  # the file it was read from, for messages
    document: dict[str, Any] = field(default_factory=dict)  # as written (recorded in the study)

    @property
    def is_grid(self) -> bool:
        return not self.search

    @property
    def cells(self) -> list[dict[str, GridValue]]:
        """Every grid cell (axis -> value), in the spec's order."""
        axes = list(self.grid)
        return [dict(zip(axes, values)) for values in itertools.product(*(self.grid[a] for a in axes))]

    def options_of(self, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """A trial's dataset and flat options: the fixed ones, its dataset's, its variant's, then its own."""
        params = dict(params)
        data = params.pop(DATA_AXIS, self.datasets[0])
        variant = self.variants.get(params.pop(VARIANT_AXIS, None), {}) if self.variants else {}
        if len(self.variants) == 1:
            variant = next(iter(self.variants.values()))
        return data, {**self.fixed, **self.per_data.get(data, {}), **variant, **params}

    def varying(self, params: dict[str, Any]) -> dict[str, Any]:
        """The options that tell a trial's runs apart (its dataset, its variant's options, its own), in order:
        what its run directories are named by."""
        params = dict(params)
        named = {DATA_AXIS: params.pop(DATA_AXIS)} if DATA_AXIS in params else {}
        named.update(self.variants.get(params.pop(VARIANT_AXIS, None), {}))
        return {**named, **params}

    def run_spec(self, params: dict[str, Any]) -> dict[str, Any]:
        """The run specification of one trial (as ``sbts train`` builds it: presets, then the options)."""
        data, options = self.options_of(params)
        sections = spec_from_options(type(get_task(self.task)), options)
        return build_run_spec(self.task, data=data, model_name=sections.get("model_name"), config_file=None,
                              model_overrides=sections["model"], train_overrides=sections["train"],
                              task_overrides=sections["task_options"])


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def _coerce(option, value: Any, where: str) -> Any:
    """A YAML value as the option's type (YAML 1.1 reads ``1e-3`` as a string: numbers in strings are numbers)."""
    kind = option.type
    if kind is float and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise _fail(where, f"{value!r} is not a number") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is list:
        if not isinstance(value, list):
            raise _fail(where, f"expected a list of numbers, got {value!r}")
        return value
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise _fail(where, f"expected {kind.__name__}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise _fail(where, f"expected a finite number, got {value!r}")
    return value


def _options(task: Task, mapping: Any, where: str) -> dict[str, Any]:
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise _fail(where, f"expected a mapping of options, got {mapping!r}")
    table = option_table(type(task))
    out = {}
    for name, value in mapping.items():
        if name not in table:
            raise _fail(f"{where}.{name}", f"not an option of {task.name} (known: {', '.join(sorted(table))})")
        out[name] = _coerce(table[name], value, f"{where}.{name}")
    return out


def _axis(task: Task, name: str, values: Any, where: str) -> list[GridValue]:
    if not isinstance(values, list):
        raise _fail(where, f"a grid axis is a list of values, got {values!r}")
    if not values:
        raise _fail(where, "an empty list: the grid has no cells")
    table = option_table(type(task))
    if name not in table:
        raise _fail(where, f"not an option of {task.name} (known: {', '.join(sorted(table))})")
    coerced = [_coerce(table[name], value, f"{where}[{i}]") for i, value in enumerate(values)]
    if table[name].type is list:
        raise _fail(where, "list-valued options cannot be a grid axis (put them in fixed or variants)")
    if len(set(map(repr, coerced))) != len(coerced):
        raise _fail(where, f"repeated values in {values!r}")
    return coerced


def _search_dimension(task: Task, name: str, value: Any, where: str) -> SearchRange | list[GridValue]:
    table = option_table(type(task))
    if name not in table:
        raise _fail(where, f"not an option of {task.name} (known: {', '.join(sorted(table))})")
    option = table[name]
    if isinstance(value, list):
        return _axis(task, name, value, where)
    if not isinstance(value, dict) or not {"low", "high"} <= set(value) or set(value) - SEARCH_BOUND_KEYS:
        raise _fail(where, f"a search dimension is a list of choices or {{low, high[, log]}}, got {value!r}")
    if option.type not in (int, float):
        raise _fail(where, f"a range needs a numeric option; {name} is {option.type.__name__} (give a list)")
    low, high = (_coerce(option, value[key], f"{where}.{key}") for key in ("low", "high"))
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise _fail(f"{where}.log", f"expected true or false, got {log!r}")
    if not low < high:
        raise _fail(where, f"low ({low!r}) must be below high ({high!r})")
    if log and low <= 0:
        raise _fail(where, f"a log range needs low > 0, got {low!r}")
    return SearchRange(low, high, log, integer=option.type is int)


def _variants(task: Task, value: Any, where: str) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    if not isinstance(value, list) or not value:
        raise _fail(where, f"expected a non-empty list of option mappings, got {value!r}")
    variants = {}
    for i, mapping in enumerate(value):
        options = _options(task, mapping, f"{where}[{i}]")
        if not options:
            raise _fail(f"{where}[{i}]", "an empty variant")
        label = ",".join(f"{k}={v}" for k, v in options.items())
        if label in variants:
            raise _fail(f"{where}[{i}]", f"repeats the variant {label}")
        variants[label] = options
    return variants


def _int_list(value: Any, where: str, minimum: int = 0) -> list[int]:
    if not isinstance(value, list) or not value or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum
                                                        for v in value):
        raise _fail(where, f"expected a non-empty list of integers >= {minimum}, got {value!r}")
    if len(set(value)) != len(value):
        raise _fail(where, f"repeated values in {value!r}")
    return value


def _positive_int(document: dict[str, Any], key: str, default: int | None, where: str) -> int | None:
    value = document.get(key, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise _fail(f"{where}: {key}", f"expected an integer >= 1, got {value!r}")
    return value


def _per_data(task: Task, value: Any, datasets: list[str], variants: dict[str, dict[str, Any]],
              where: str) -> dict[str, dict[str, Any]]:
    """``per_data``: a mapping from the spec's datasets to option mappings (none a variant's: each set once)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(where, f"expected a mapping of dataset -> options, got {value!r}")
    per_data = {}
    for data, options in value.items():
        if data not in datasets:
            raise _fail(f"{where}.{data}", f"not one of the spec's datasets ({', '.join(datasets)})")
        per_data[data] = _options(task, options, f"{where}.{data}")
        clash = next((name for name in per_data[data] if any(name in v for v in variants.values())), None)
        if clash:
            raise _fail(f"{where}.{data}.{clash}", "also set in variants; give each option once")
    return per_data


def parse_spec(document: Any, where: str, default_name: str = "sweep") -> SweepSpec:
    """A spec document (a mapping) -> a ``SweepSpec``, with every key and option name checked (not the data)."""
    if not isinstance(document, dict):
        raise _fail(where, "a sweep spec is a mapping at the top level")
    unknown = sorted(set(document) - set(SPEC_KEYS))
    if unknown:
        raise _fail(f"{where}: {unknown[0]}", f"not a sweep key (known: {', '.join(SPEC_KEYS)})")
    if document.get("task") not in task_names():
        raise _fail(f"{where}: task", f"must be one of {', '.join(task_names())}, got {document.get('task')!r}")
    task = get_task(document["task"])
    data = document.get("data")
    datasets = [data] if isinstance(data, str) else data
    if not isinstance(datasets, list) or not datasets or not all(isinstance(d, str) and d for d in datasets):
        raise _fail(f"{where}: data", f"expected a dataset name or a non-empty list of them, got {data!r}")
    if len(set(datasets)) != len(datasets):
        raise _fail(f"{where}: data", f"repeated datasets in {datasets!r}")
    has_grid, has_search = document.get("grid") is not None, document.get("search") is not None
    if has_grid == has_search:
        raise _fail(where, "give either grid (every cell) or search (with n_trials), not " +
                    ("both" if has_grid else "neither"))
    fixed = _options(task, document.get("fixed"), f"{where}: fixed")
    variants = _variants(task, document.get("variants"), f"{where}: variants")
    per_data = _per_data(task, document.get("per_data"), datasets, variants, f"{where}: per_data")
    axes: dict[str, list[GridValue]] = {}
    if len(datasets) > 1:
        axes[DATA_AXIS] = datasets
    if len(variants) > 1:
        axes[VARIANT_AXIS] = list(variants)
    section = "grid" if has_grid else "search"
    space = document[section]
    if not isinstance(space, dict) or not space and not axes:
        raise _fail(f"{where}: {section}", f"expected a non-empty mapping of options, got {space!r}")
    for name in space:
        clash = "fixed" if name in fixed else "per_data" if any(name in o for o in per_data.values()) else \
            "variants" if any(name in v for v in variants.values()) else None
        if clash or name in (DATA_AXIS, VARIANT_AXIS):
            raise _fail(f"{where}: {section}.{name}", f"also set in {clash or 'the spec'}; give each option once")
    seeds = document.get("seeds")
    if seeds is not None:
        seeds = _int_list(seeds, f"{where}: seeds")
        if SEED_OPTION in space or SEED_OPTION in fixed:
            raise _fail(f"{where}: seeds", "the seeds are also set as an option; give them once")
    search: dict[str, SearchRange | list[GridValue]] = {}
    if has_grid:
        axes.update({name: _axis(task, name, values, f"{where}: grid.{name}") for name, values in space.items()})
        if seeds is not None:
            axes[SEED_OPTION] = seeds
        n_trials = document.get("n_trials")
        if n_trials is not None:
            raise _fail(f"{where}: n_trials", "a grid runs every cell; n_trials applies to search")
    else:
        if len(datasets) > 1:
            raise _fail(f"{where}: data", "a search tunes on one dataset (its validation metric); run one sweep per "
                                           "dataset")
        if SEED_OPTION in space:
            raise _fail(f"{where}: search.{SEED_OPTION}", "seeds are not searched: list them under seeds (every trial "
                                                          "trains each)")
        search = {name: _search_dimension(task, name, value, f"{where}: search.{name}")
                  for name, value in space.items()}
        n_trials = _positive_int(document, "n_trials", None, where)
        if n_trials is None:
            raise _fail(f"{where}: n_trials", "a search needs n_trials (how many trials TPE may run)")
    name = document.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise _fail(f"{where}: name", f"expected a study name, got {name!r}")
    description = document.get("description", "")
    if not isinstance(description, str):
        raise _fail(f"{where}: description", f"expected text, got {description!r}")
    return SweepSpec(task=task.name, datasets=datasets, fixed=fixed, per_data=per_data, grid=axes, search=search,
                     variants=variants,
                     seeds=seeds or [fixed.get(SEED_OPTION, 0)] if not has_grid else [],
                     n_trials=n_trials, name=name, description=description,
                     nproc_per_node=_positive_int(document, "nproc_per_node", 1, where),
                     heartbeat_seconds=_positive_int(document, "heartbeat_seconds", DEFAULT_HEARTBEAT_SECONDS, where),
                     source=where, document=document)


def read_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep spec file (YAML or JSON)."""
    path = Path(path)
    return parse_spec(read_config_file(path), str(path), default_name=path.stem)


def _corners(spec: SweepSpec) -> list[tuple[str, dict[str, Any]]]:
    """What to resolve before a sweep starts, each with what an error blames: every grid cell; for a search,
    each dimension's ends and choices with the other dimensions at their first value."""
    if spec.is_grid:
        axes = list(spec.grid)
        first = {axis: spec.grid[axis][0] for axis in axes}
        blamed = [(f"grid.{axis}={value!r}", {**first, axis: value}) for axis in axes for value in spec.grid[axis]]
        return blamed + [(f"grid cell {cell}", cell) for cell in spec.cells]
    points = {name: (dim.low if isinstance(dim, SearchRange) else dim[0]) for name, dim in spec.search.items()}
    points.update({axis: values[0] for axis, values in spec.grid.items()})
    checks = []
    for name, dim in spec.search.items():
        for value in ((dim.low, dim.high) if isinstance(dim, SearchRange) else dim):
            value = int(value) if isinstance(dim, SearchRange) and dim.integer else value
            checks.append((f"search.{name}={value!r}", {**points, name: value}))
    for axis, values in spec.grid.items():
        checks += [(f"{axis}={value!r}", {**points, axis: value}) for value in values]
    return checks


def check_runs(spec: SweepSpec) -> int:
    """Resolve every grid cell (a search's corners) into a complete run configuration on its data, so that a bad
    value fails here, naming its key, before any trial starts. Returns how many configurations were checked."""
    task = get_task(spec.task)
    sources: dict[tuple[str, str], DataSource] = {}  # by data and missing value
    checked = 0
    for blame, params in _corners(spec):
        for seed in spec.seeds or [None]:
            cell = params if seed is None else {**params, SEED_OPTION: seed}
            data, _ = spec.options_of(cell)
            try:
                run_spec = spec.run_spec(cell)
                read_as = (data, repr(run_spec.get("task_options", {}).get("missing_value")))
                if read_as not in sources:
                    sources[read_as] = task.load_for(run_spec)
                task.run_config(run_spec, sources[read_as])
            except SBTSError as exc:
                raise type(exc)(f"{spec.source}: {blame}: {exc}") from None
            checked += 1
    return checked
