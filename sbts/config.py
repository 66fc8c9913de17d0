"""Dataclass configurations: a model, its training, and a whole run.

A ``ModelConfig`` describes a network completely (``create_model(config)`` rebuilds it bit for bit,
including the frozen random weights), and is saved in every checkpoint and run directory.
``density`` is the fraction of weights *kept*; ``sparsity = 1 - density`` is accepted as the other
name wherever a config is read.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sbts.errors import ConfigError, one_line

LINEAR_KINDS = ("sparse_binary", "dense")
ATTENTION_MODES = ("full", "step_t", "qkv_mask")
NORMS = ("batch", "layer_time", "layer", "none")  # layer: LayerNorm over the features of each step
DEFAULT_DENSITY = 0.5  # the kept fraction of a sparse-binary model when none is given
DEFAULT_MODEL = "sbt"  # the registered model (sbts.models.registry) a run trains when none is named
POS_ENCODINGS = ("sinusoidal", "learnable", "rope", "none")  # rope: rotary, relative to the query
HEAD_ACTIVATIONS = ("relu", "none")  # what the head reads: relu(h) (the paper) or h itself
# The linear path beside the Transformer: none; joint (the whole window, every variable, to every output);
# shared (each variable's own window to its own h forecasts, one map for every variable).
LINEAR_PATHS = ("none", "joint", "shared")
# Files written before the path had kinds stored a boolean: true was the joint path.
LEGACY_LINEAR_PATHS = {True: "joint", False: "none"}
MAX_CONFIG_BYTES = 2**20  # a run or sweep config is a few hundred bytes; beyond a MiB it is not one
MAX_SEED = 2**32 - 1  # numpy's and scikit-learn's seeds are 32-bit
# Upper bounds of a model's sizes: far above any model sbts is made for (the paper's largest has d_model 128),
# low enough that a config, typed or read from a file, cannot make sbts allocate beyond about a GiB.
MODEL_SIZE_LIMITS = {"in_channels": 2**16, "out_dim": 2**16, "max_len": 2**16, "d_model": 2**13, "n_heads": 2**8,
                     "n_layers": 2**6, "d_ff": 2**15}
MAX_WEIGHT_POSITIONS = 2**26  # weights of all linears together: 256 MiB as float32
MAX_ATTENTION_SCORES = 2**28  # n_heads x max_len^2, one case's attention scores: 1 GiB as float32
# ModelConfig fields added after models were saved: written only when not at their defaults, so that a model
# without them keeps the bytes of its files (the artifact's size is a reported number) and reads back the same.
LATER_MODEL_FIELDS = ("linear_path", "dropout")


def check_density(value: Any, name: str = "density", of: str = "weights") -> float:
    """Validate a kept fraction (of weights, or of ``of``): a finite number in (0, 1]."""
    try:
        density = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number in (0, 1], got {value!r}") from None
    if not (math.isfinite(density) and 0.0 < density <= 1.0):
        raise ConfigError(f"{name} must be in (0, 1] (the fraction of {of} kept), got {value!r}")
    return density


def resolve_density(density: Any = None, sparsity: Any = None, default: float = DEFAULT_DENSITY) -> float:
    """Accept either name; both given must agree (sparsity = 1 - density)."""
    if sparsity is not None:
        try:
            sparsity_value = float(sparsity)
        except (TypeError, ValueError):
            raise ConfigError(f"sparsity must be a number in [0, 1), got {sparsity!r}") from None
        if not (math.isfinite(sparsity_value) and 0.0 <= sparsity_value < 1.0):
            raise ConfigError(f"sparsity must be in [0, 1) (the fraction of weights pruned), got {sparsity!r}")
        from_sparsity = 1.0 - sparsity_value
        if density is not None and abs(check_density(density) - from_sparsity) > 1e-12:
            raise ConfigError(f"density={density!r} and sparsity={sparsity!r} disagree (sparsity = 1 - density)")
        return check_density(from_sparsity)
    return check_density(default if density is None else density)


def needs_fixed_length(attention: str, norm: str) -> bool:
    """Whether an attention mode and a norm take windows of exactly one length (no padding)."""
    return attention == "step_t" or norm == "layer_time"


def _check_choice(value: str, choices: tuple[str, ...], name: str) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def check_positive_int(value: Any, name: str, minimum: int = 1, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum:,}, got {value:,}")


def dataclass_from_dict(cls, data: dict[str, Any], where: str):
    """Build a config dataclass from a mapping; unknown or missing keys are one-line ConfigErrors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})")
    try:
        return cls(**data)
    except TypeError as exc:  # a missing required field
        raise ConfigError(f"{where}: {exc}") from None


def check_missing_value(missing_value: float | None) -> float | None:
    """The user's missing value as a float; a finite number or None."""
    if missing_value is None:
        return None
    try:
        if isinstance(missing_value, (bool, str)):
            raise TypeError
        value = float(missing_value)
    except (TypeError, ValueError):
        raise ConfigError(f"missing_value must be a number, not {missing_value!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"missing_value must be a finite number, not {missing_value!r} (NaN is missing anyway)")
    return value


@dataclass
class TaskOptions:
    """Base of a task's options dataclass (a run's ``task_options``): saved as a plain mapping, read back with
    one-line errors for unknown or missing keys. ``missing_value``, how every task's loader reads its files, is
    the run's, so that a resumed or re-run run reads the same data."""

    missing_value: float | None = field(default=None, metadata={
        "help": "a number that marks a missing cell in the data files (interpolated, as NaN and the codes found "
                "by sbts.data.missing are)"})

    def __post_init__(self) -> None:
        check_missing_value(self.missing_value)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "task_options"):
        return dataclass_from_dict(cls, data, where)


@dataclass
class ModelConfig:
    """Everything needed to build one encoder-only Transformer, dense or sparse-binary."""

    in_channels: int
    out_dim: int
    max_len: int = field(metadata={"help": "steps per window (the model's max_len)"})
    d_model: int = field(default=64, metadata={"help": "width of the encoder"})
    n_heads: int = field(default=2, metadata={"help": "attention heads (must divide d_model)"})
    n_layers: int = field(default=2, metadata={"help": "encoder layers"})
    d_ff: int = field(default=256, metadata={"help": "width of the feed-forward block"})
    linear: str = "sparse_binary"  # set by the model name (sbts.models.registry), not an option of its own
    density: float | None = field(default=None, metadata={
        "help": "fraction of weights kept, in (0, 1] (--sparsity = 1 - density); sparse-binary models only"})
    attention: str = field(default="full", metadata={"help": "attention mode", "choices": ATTENTION_MODES})
    step_t_self: bool = field(default=False, metadata={"help": "under step_t, the last step also attends to itself"})
    qkv_density: float = field(default=0.5, metadata={
        "help": "qkv_mask attention: fraction of Q/K/V activations kept per step"})
    norm: str = field(default="batch", metadata={"help": "normalisation after attention and feed-forward (layer: "
                                                         "LayerNorm over features, per step)",
                                                 "choices": NORMS})
    pos_encoding: str = field(default="sinusoidal", metadata={
        "help": "positional encoding (rope: rotary on queries and keys, relative to the query)",
        "choices": POS_ENCODINGS})
    attention_bias: bool = field(default=True, metadata={"help": "biases on the Q/K/V and output projections"})
    head_activation: str = field(default="relu", metadata={
        "help": "before the head: relu (the paper) or none, a linear read-out that cannot die (a forecaster of "
                "changes whose last-step features all fall below zero outputs exactly persistence and stops "
                "learning)", "choices": HEAD_ACTIVATIONS})
    linear_bias: bool = field(default=False, metadata={
        "help": "biases on the embedding, feed-forward and head linears (the paper's dense models have them)"})
    linear_path: str = field(default="none", metadata={
        "help": "a linear map of the window added to the last step's output beside the Transformer, made by the same "
                "layer factory (sparse-binary in an SBT): joint maps the whole window (max_len x in_channels values) "
                "to every output; shared maps each variable's max_len values to its own outputs, one map for every "
                "variable (max_len x h weights); forecasting only", "choices": LINEAR_PATHS})
    dropout: float = field(default=0.0, metadata={
        "help": "in training, the fraction of the embedded input and of each attention and feed-forward output "
                "(before its residual add) zeroed at random; inference, exports and the stored weights do not change"})
    seed: int = 0  # of the frozen random weights, scores and masks (set with TrainConfig.seed by the seed option)

    def __post_init__(self) -> None:
        for name, limit in MODEL_SIZE_LIMITS.items():
            check_positive_int(getattr(self, name), name, maximum=limit)
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        _check_choice(self.linear, LINEAR_KINDS, "linear")
        _check_choice(self.attention, ATTENTION_MODES, "attention")
        _check_choice(self.norm, NORMS, "norm")
        _check_choice(self.pos_encoding, POS_ENCODINGS, "pos_encoding")
        _check_choice(self.head_activation, HEAD_ACTIVATIONS, "head_activation")
        _check_choice(self.linear_path, LINEAR_PATHS, "linear_path")
        if self.linear_path == "shared" and self.out_dim % self.in_channels:
            raise ConfigError(f"linear_path shared gives each of the {self.in_channels} variables the same number of "
                              f"outputs; out_dim {self.out_dim} is not a multiple of in_channels")
        if self.density is None:
            self.density = 1.0 if self.linear == "dense" else DEFAULT_DENSITY
        self.density = check_density(self.density)
        if self.linear == "dense" and self.density != 1.0:
            raise ConfigError(f"density={self.density:g} needs sparse_binary linears; a dense model keeps every "
                              "weight (density 1)")
        self.qkv_density = check_density(self.qkv_density, "qkv_density", of="Q/K/V activations")
        if self.attention == "step_t" and self.max_len < 2 and not self.step_t_self:
            raise ConfigError(f"step_t attention needs windows of at least 2 steps (the last attends to the past "
                              f"ones); max_len is {self.max_len}")
        for name in ("step_t_self", "attention_bias", "linear_bias"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if (isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float))
                or not 0.0 <= self.dropout < 1.0):
            raise ConfigError(f"dropout must be a number in [0, 1) (the fraction zeroed in training), got "
                              f"{self.dropout!r}")
        check_positive_int(self.seed, "seed", minimum=0, maximum=MAX_SEED)
        if self.weight_positions > MAX_WEIGHT_POSITIONS:
            raise ConfigError(f"the model would have {self.weight_positions:,} weights (limit "
                              f"{MAX_WEIGHT_POSITIONS:,}); lower d_model, d_ff or n_layers")
        scores = self.n_heads * self.max_len ** 2
        if scores > MAX_ATTENTION_SCORES:
            raise ConfigError(f"the attention of one window would hold n_heads x max_len^2 = {scores:,} scores (limit "
                              f"{MAX_ATTENTION_SCORES:,}); lower max_len or n_heads")

    @property
    def weight_positions(self) -> int:
        """Weights of all linears: the embedding, per layer four d_model^2 projections and the feed-forward pair,
        the head and the linear path."""
        d = self.d_model
        path = math.prod(self.linear_path_shape) if self.has_linear_path else 0
        return d * (self.in_channels + self.out_dim) + self.n_layers * (4 * d * d + 2 * d * self.d_ff) + path

    @property
    def has_linear_path(self) -> bool:
        return self.linear_path != "none"

    @property
    def linear_path_shape(self) -> tuple[int, int]:
        """(out_features, in_features) of the linear path's one linear: joint reads the window variable-major
        (variable c at step t is input c * max_len + t) for every output; shared reads one variable's steps for
        its outputs (out_dim = steps ahead x in_channels, output k * in_channels + c is variable c, k + 1 ahead)."""
        if self.linear_path == "shared":
            return self.out_dim // self.in_channels, self.max_len
        return self.out_dim, self.max_len * self.in_channels

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density

    @property
    def streaming_problem(self) -> str | None:
        """Why a sliding window cannot reuse its past steps' states (None: it can, the model is streamable).

        Under step_t attention a past step attends only to itself, so its state at every layer depends only on
        its own input, provided its position does not change as the window slides and no norm mixes steps."""
        if self.attention != "step_t":
            return f"attention {self.attention}: only step_t attention splits into a past and a query stream"
        if self.pos_encoding in ("sinusoidal", "learnable"):
            return (f"pos_encoding {self.pos_encoding}: absolute window positions change as the window slides "
                    "(use rope or none)")
        if self.norm == "layer_time":
            return "norm layer_time mixes the steps of a window (use layer, batch or none)"
        if self.has_linear_path:
            return f"linear_path {self.linear_path} reads every step of the window at once (no per-step state to cache)"
        return None

    @property
    def streamable(self) -> bool:
        return self.streaming_problem is None

    @property
    def needs_fixed_length(self) -> bool:
        """Step-T attention, LayerNorm over time and the linear path take windows of exactly ``max_len`` steps (no
        padding)."""
        return needs_fixed_length(self.attention, self.norm) or self.has_linear_path

    def to_dict(self) -> dict[str, Any]:
        at_default = {f.name for f in dataclasses.fields(self)
                      if f.name in LATER_MODEL_FIELDS and getattr(self, f.name) == f.default}
        return {key: value for key, value in dataclasses.asdict(self).items() if key not in at_default}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "model config") -> "ModelConfig":
        data = dict(data)
        if "sparsity" in data:
            data["density"] = resolve_density(data.get("density"), data.pop("sparsity"))
        if isinstance(data.get("linear_path"), bool):
            data["linear_path"] = LEGACY_LINEAR_PATHS[data["linear_path"]]
        return dataclass_from_dict(cls, data, where)


@dataclass
class TrainConfig:
    """Optimisation and selection settings (paper-spec §1.2 defaults for classification)."""

    epochs: int = field(default=100, metadata={"help": "training epochs"})
    batch_size: int = field(default=8, metadata={
        "help": "examples per optimiser step (the global batch: torchrun's processes share it out)"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    score_lr_scale: float = field(default=1.0, metadata={
        "help": "the scores' learning rate is lr x this (edge-popup and Biprop train scores faster than weights; "
                "dense weights, norms and positions keep lr)"})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay"})
    grad_clip: float = field(default=4.0, metadata={"help": "gradient norm clipping (0: none)"})
    patience: int = field(default=0, metadata={
        "help": "epochs without validation improvement before stopping (0: never stop early)"})
    lr_decay_on_plateau: bool = field(default=False, metadata={
        "help": "x0.75 learning rate per epoch after more than 2 epochs without validation improvement"})
    val_fraction: float = field(default=0.1, metadata={"help": "fraction of the training data held out for validation"})
    stride: int = field(default=1, metadata={"help": "steps between training windows"})
    seed: int = field(default=0, metadata={"help": "seed of the random weights, the split and the shuffling"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    amp: bool = field(default=False, metadata={
        "help": "bf16 autocast on CUDA (the forward passes of training and validation; the final metrics are "
                "float32)"})

    def __post_init__(self) -> None:
        check_positive_int(self.epochs, "epochs")
        check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.stride, "stride")
        check_positive_int(self.patience, "patience", minimum=0)
        check_positive_int(self.seed, "seed", minimum=0, maximum=MAX_SEED)
        for name in ("lr", "score_lr_scale", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            positive = name in ("lr", "score_lr_scale")
            bound = "> 0" if positive else ">= 0"
            if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0
                    or (positive and value == 0)):
                raise ConfigError(f"{name} must be a finite number {bound}, got {value!r}")
        if not (isinstance(self.val_fraction, (int, float)) and 0.0 <= self.val_fraction < 1.0):
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N; got {self.device!r}")
        if not isinstance(self.amp, bool):
            raise ConfigError(f"amp must be true or false, got {self.amp!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "train config") -> "TrainConfig":
        return dataclass_from_dict(cls, data, where)


@dataclass
class RunConfig:
    """One training run: task, data, model and training settings. Saved as ``RUN_DIR/config.json``.

    ``task_options`` are the task's own settings (e.g. how an anomaly threshold is fitted), validated by
    the task.
    """

    task: str
    data: str
    model: ModelConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    model_name: str = DEFAULT_MODEL
    task_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "data": self.data,
            "model_name": self.model_name,
            "model": self.model.to_dict(),
            "train": self.train.to_dict(),
            "task_options": dict(self.task_options),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "run config") -> "RunConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping")
        known = {"task", "data", "model_name", "model", "train", "task_options"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}")
        for key in ("task", "data", "model"):
            if key not in data:
                raise ConfigError(f"{where}: missing key {key!r}")
        return cls(
            task=str(data["task"]),
            data=str(data["data"]),
            model_name=str(data.get("model_name", DEFAULT_MODEL)),
            model=ModelConfig.from_dict(data["model"], f"{where}: model"),
            train=TrainConfig.from_dict(data.get("train", {}), f"{where}: train"),
            task_options=_mapping(data.get("task_options", {}), f"{where}: task_options"),
        )


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    return dict(value)


def _safe_yaml(text: str, path: Path) -> Any:
    """YAML without aliases: a config never needs them, and nested aliases (a "billion laughs" document) expand
    into exponentially many nodes for whatever walks the result."""
    try:
        import yaml  # here, not at the top: the deploy-only install (runtime, predict, C export) has no PyYAML
    except ModuleNotFoundError:
        raise ConfigError(f"{path}: reading YAML configs needs PyYAML: pip install 'sbts[train]'") from None
    class WithoutAliases(yaml.SafeLoader):
        """The safe loader, refusing an alias where it would compose one (one pass over the text)."""

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise ConfigError(f"{path}: line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) are "
                                  "not accepted in sbts configs; write the value out")
            return super().compose_node(parent, index)

    try:
        loader = WithoutAliases(text)  # its reader refuses unacceptable characters already here
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{line} invalid YAML ({one_line(getattr(exc, 'problem', None) or exc)})") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping; errors name the file (and line, for YAML syntax errors)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.is_file() and size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {size:,} bytes; a config file is at most {MAX_CONFIG_BYTES:,}")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.__class__.__name__})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else _safe_yaml(text, path)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: line {exc.lineno} invalid JSON ({exc.msg})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    _check_keys(data, str(path))
    return data


def _check_keys(value: Any, where: str) -> None:
    """Every mapping key is text (YAML also allows null, numbers and lists as keys; no config setting is one)."""
    pending = [(value, where)]
    while pending:  # a loop, not recursion: the nesting depth is the file's
        node, at = pending.pop()
        if isinstance(node, dict):
            for key, item in node.items():
                if not isinstance(key, str):
                    raise ConfigError(f"{at}: the key {key!r} is not text; config keys are setting names")
                pending.append((item, f"{at}: {key}"))
        elif isinstance(node, list):
            pending.extend((item, at) for item in node)
