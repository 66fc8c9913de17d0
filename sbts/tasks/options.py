"""A task's options, declared once: the table the CLI subcommand, the estimator and the presets derive from.

Every user-facing setting of a task is one ``Option``: its flat name (``--d-model`` on the command line,
``d_model=`` in the estimator), the section of the run configuration it lands in (``model``, ``train``,
``task_options``; ``seed`` goes to both model and train), its type, its default and its help text. The
table is derived, not written: model settings come from ``ModelConfig``'s fields, training settings
from ``TrainConfig``'s, task settings from the task's options dataclass, each with its metadata help;
a task's ``defaults`` override the dataclass defaults, and a default of ``None`` means "decided by
the task from the data or the model" (its ``auto_help`` says how).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sbts.config import DEFAULT_MODEL, ModelConfig, TrainConfig
from sbts.errors import ConfigError
from sbts.models import list_models

if TYPE_CHECKING:
    from sbts.tasks.base import Task

MODEL_SECTION, TRAIN_SECTION, TASK_SECTION = "model", "train", "task_options"
CONFIG_FILE_KEYS = ("task", "data", "model_name", MODEL_SECTION, TRAIN_SECTION, TASK_SECTION)  # a run's config.json
SEED_SECTION = "seed"  # the seed of the weights and of the split/shuffle: one value for both
RUN_SECTION = "run"  # the model name
DATA_DERIVED_MODEL_FIELDS = ("in_channels", "out_dim")  # ModelConfig fields that the data decides
FILE_OPTIONS = ("missing_value",)  # how data files are read: not estimator parameters (arrays mark missing with NaN)
# Not options: the data-derived fields, the linear kind (the model name decides it) and the model's copy of the
# seed (the one seed option sets both).
NOT_OPTIONS = {MODEL_SECTION: (*DATA_DERIVED_MODEL_FIELDS, "linear", "seed"), TRAIN_SECTION: ("seed",)}


@dataclass(frozen=True)
class Option:
    name: str  # flat name: the CLI flag (dashes) and the estimator parameter
    section: str
    key: str  # the field in its section
    type: type  # int, float, str, bool or list (of floats)
    default: Any  # None: the task decides (see help)
    help: str
    choices: tuple[str, ...] | None = None
    parameter: str | None = None  # the estimator's name for it, when it differs (seed -> random_state)
    decided: str | None = None  # with default None: how the task decides the value

    @property
    def default_text(self) -> str:
        return self.decided or ("none" if self.default is None else str(self.default))

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def estimator_parameter(self) -> str:
        return self.parameter or self.name


def _base_type(annotation: Any) -> type:
    """int, float, str, bool or list from a field's annotation (``float | None`` -> float)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is list or list in (typing.get_origin(a) for a in args):
        return list
    if args:
        return _base_type(args[0])
    return annotation


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _fields_of(cls: type, section: str, skip: tuple[str, ...], renames: dict[str, str]) -> list[Option]:
    hints = typing.get_type_hints(cls)
    options = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        choices = f.metadata.get("choices")
        options.append(Option(renames.get(f.name, f.name), section, f.name, _base_type(hints[f.name]),
                              _field_default(f), f.metadata.get("help", ""),
                              tuple(choices) if choices else None))
    return options


def task_options(task: type[Task]) -> list[Option]:
    """The option table of a task, in the order the CLI lists it."""
    renames = {"max_len": task.window_option}
    table = [Option("model", RUN_SECTION, "model_name", str, DEFAULT_MODEL,
                    "registered model: sbt (sparse binary) or dense", tuple(list_models()))]
    table += _fields_of(ModelConfig, MODEL_SECTION, (*NOT_OPTIONS[MODEL_SECTION], *task.excluded_model_options),
                        renames)
    table += [o for o in _fields_of(TrainConfig, TRAIN_SECTION, NOT_OPTIONS[TRAIN_SECTION], {})
              if o.key not in task.excluded_train_options]
    seed = next(f for f in dataclasses.fields(TrainConfig) if f.name == "seed")
    table.append(Option("seed", SEED_SECTION, "seed", int, seed.default, seed.metadata["help"],
                        parameter="random_state"))
    table += _fields_of(task.options_class, TASK_SECTION, (), task.option_names)
    known = {o.name for o in table}
    unknown = sorted(set(task.defaults) - known)
    if unknown:
        raise ConfigError(f"task {task.name}: default for unknown option {unknown[0]!r}")
    out = []
    for option in table:
        default = task.defaults.get(option.name, option.default)
        decided = task.auto_help.get(option.name)
        if option.name in task.model_defaults_keys():
            default, decided = None, task.describe_model_default(option.key)
        out.append(dataclasses.replace(option, default=default, decided=decided if default is None else None,
                                       help=task.option_help.get(option.name, option.help)))
    return out


def option_table(task: type[Task]) -> dict[str, Option]:
    return {option.name: option for option in task_options(task)}


def spec_from_options(task: type[Task], given: dict[str, Any]) -> dict[str, Any]:
    """Flat option values -> a run specification's sections (``model_name``, ``model``, ``train``,
    ``task_options``). Options left at ``None`` are left out, so the task decides them."""
    table = option_table(task)
    spec: dict[str, Any] = {MODEL_SECTION: {}, TRAIN_SECTION: {}, TASK_SECTION: {}}
    for name, value in given.items():
        if name not in table:
            raise ConfigError(f"{task.name} has no option {name!r}")
        if value is None:
            continue
        option = table[name]
        if option.section == RUN_SECTION:
            spec["model_name"] = value
        elif option.section == SEED_SECTION:
            spec[MODEL_SECTION]["seed"] = spec[TRAIN_SECTION]["seed"] = value
        else:
            spec[option.section][option.key] = value
    return spec


def default_values(task: type[Task], section: str) -> dict[str, Any]:
    """The table's non-None defaults of one section, keyed by field (what a run gets when nothing says otherwise)."""
    return {o.key: o.default for o in task_options(task) if o.section == section and o.default is not None}


def check_preset(task: type[Task], spec: dict[str, Any], where: str) -> None:
    """A preset or config file may set only the task's options, the data-derived model fields and the linear
    kind (which the model name decides: checked against it later). A run's own config.json also lists the
    training settings that do not apply to its task; they pass at their inert defaults."""
    unknown_top = sorted(set(spec) - set(CONFIG_FILE_KEYS))
    if unknown_top:
        raise ConfigError(f"{where}: {unknown_top[0]} is not a config key (known: {', '.join(CONFIG_FILE_KEYS)})")
    table = task_options(task)
    inert = {f.name: _field_default(f) for f in dataclasses.fields(TrainConfig)
             if f.name in task.excluded_train_options}
    allowed = {MODEL_SECTION: {o.key for o in table if o.section in (MODEL_SECTION, SEED_SECTION)}
               | set(DATA_DERIVED_MODEL_FIELDS) | {"sparsity", "linear"},
               TRAIN_SECTION: {o.key for o in table if o.section in (TRAIN_SECTION, SEED_SECTION)},
               TASK_SECTION: {o.key for o in table if o.section == TASK_SECTION}}
    for section, keys in allowed.items():
        values = spec.get(section) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: {section} must be a mapping of settings, got {values!r}")
        if section == TRAIN_SECTION:
            values = {key: value for key, value in values.items() if key not in inert or value != inert[key]}
        unknown = sorted(set(values) - keys)
        if unknown:
            raise ConfigError(f"{where}: {section}.{unknown[0]} is not an option of {task.name} (known: "
                              f"{', '.join(sorted(keys))})")


def options_markdown(task: type[Task]) -> str:
    """The task's options as a Markdown table (the README's, kept equal by a test; ``python -m
    sbts.tasks.options`` prints every task's)."""
    rows = ["| option | estimator | default | what it is |", "|---|---|---|---|"]
    for option in task_options(task):
        default = option.decided or f"`{option.default}`"
        parameter = "(files only)" if option.name in FILE_OPTIONS else f"`{option.estimator_parameter}`"
        rows.append(f"| `{option.flag}` | {parameter} | {default} | {option.help} |")
    return "\n".join(rows)


if __name__ == "__main__":
    from sbts.registry import task_class, task_names

    print("\n\n".join(f"### {name}\n\n{options_markdown(task_class(name))}" for name in task_names()))
