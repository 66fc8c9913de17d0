"""A small model registry and ``create_model``, the one front door.

A registered name maps to a function returning a ``ModelConfig`` from keyword arguments, so that
``create_model("sbt", in_channels=12, out_dim=9, max_len=29)`` and ``create_model(config)`` build
the same network. Tests are generated from ``list_models()``.
"""

from __future__ import annotations

from typing import Any, Callable

from sbts.config import DEFAULT_DENSITY, ModelConfig, resolve_density
from sbts.errors import ConfigError
from sbts.models.transformer import TimeSeriesTransformer

_REGISTRY: dict[str, Callable[..., ModelConfig]] = {}
_DEFAULTS: dict[str, dict[str, Any]] = {}


def register_model(name: str, defaults: dict[str, Any]):
    """Register a model name: the ModelConfig fields it sets unless the caller gives them."""
    def decorator(fn: Callable[..., ModelConfig]):
        _REGISTRY[name], _DEFAULTS[name] = fn, dict(defaults)
        return fn
    return decorator


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_defaults(name: str) -> dict[str, Any]:
    """The fields a registered model name sets (its linear kind, positional encoding, density)."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    return dict(_DEFAULTS[name])


def model_config(name: str, **kwargs: Any) -> ModelConfig:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    return _REGISTRY[name](**kwargs)


def create_model(config: ModelConfig | str, **kwargs: Any) -> TimeSeriesTransformer:
    """Build a model from a ``ModelConfig`` or from a registered name plus config fields."""
    if isinstance(config, str):
        config = model_config(config, **kwargs)
    elif kwargs:
        raise TypeError("create_model(config) takes no extra keyword arguments; edit the config instead")
    if not isinstance(config, ModelConfig):
        raise TypeError(f"create_model expects a ModelConfig or a model name, got {type(config).__name__}")
    return TimeSeriesTransformer(config)


def _with(name: str, kwargs: dict[str, Any]) -> ModelConfig:
    kwargs = dict(kwargs)
    defaults = dict(_DEFAULTS[name])
    if "sparsity" in kwargs:  # resolved against the caller's density only, not a registry default
        kwargs["density"] = resolve_density(kwargs.get("density"), kwargs.pop("sparsity"))
    return ModelConfig.from_dict({**defaults, **kwargs})


@register_model("sbt", {"linear": "sparse_binary", "pos_encoding": "sinusoidal", "density": DEFAULT_DENSITY})
def sbt(**kwargs: Any) -> ModelConfig:
    """Sparse Binary Transformer: Biprop linears, fixed sinusoidal positions (paper-spec §1.2, §2)."""
    return _with("sbt", kwargs)


@register_model("dense", {"linear": "dense", "pos_encoding": "learnable"})
def dense(**kwargs: Any) -> ModelConfig:
    """Dense float32 Transformer of the same structure, learnable positions (paper's baseline)."""
    return _with("dense", kwargs)
