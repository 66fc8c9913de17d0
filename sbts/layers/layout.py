"""The layers a model config makes, torch-free: each layer's name, kind, shape and, for a linear, its bias.

The torch model (``sbts.models.transformer``) builds exactly these: its modules' ``storage()`` declarations
equal ``model_layout(config)`` for every model kind (tested). The artifact reader checks a file's layer entries
against the layout of the file's own config before anything is allocated, so an entry the config does not
make, a missing one, another kind, another shape or a bias the config does not give is refused: a file whose
``n_layers`` or ``d_model`` was edited cannot load as another network.
"""

from __future__ import annotations

from dataclasses import dataclass

from sbts.config import ModelConfig
from sbts.layers.kinds import QKV_PROJECTIONS, LayerKind, kind_for_option

LINEAR_KIND = {"sparse_binary": "sparse_binary_linear", "dense": "dense_linear"}  # ModelConfig.linear -> kind
ATTENTION_PROJECTIONS = (*QKV_PROJECTIONS, "out_proj")


@dataclass(frozen=True)
class ExpectedLayer:
    kind: str
    shape: tuple[int, ...]
    bias: bool | None = None  # whether a linear has a bias; None for other kinds


def _norm_shape(norm: LayerKind, config: ModelConfig) -> tuple[int, ...]:
    """A norm normalises each channel over time (one gain per step) or each step over its channels."""
    return (config.max_len,) if norm.mixes_steps else (config.d_model,)


def model_layout(config: ModelConfig) -> dict[str, ExpectedLayer]:
    """Every layer ``config`` makes, by the name its artifact entry and the torch module carry."""
    linear_kind = LINEAR_KIND[config.linear]
    d = config.d_model
    layers: dict[str, ExpectedLayer] = {}

    def linear(name: str, in_features: int, out_features: int, bias: bool) -> None:
        layers[name] = ExpectedLayer(linear_kind, (out_features, in_features), bias)

    linear("embedding", config.in_channels, d, config.linear_bias)
    positional = kind_for_option("pos_encoding", config.pos_encoding)
    if positional is not None:  # rotary positions store nothing, but are declared for the accountings
        layers["positional"] = ExpectedLayer(positional.name, (0,) if positional.rotary else (config.max_len, d))
    norm = kind_for_option("norm", config.norm)
    for i in range(config.n_layers):
        name = f"layers.{i}"
        layers[f"{name}.attention"] = ExpectedLayer("attention", (config.n_heads, d // config.n_heads))
        for projection in ATTENTION_PROJECTIONS:
            linear(f"{name}.attention.{projection}", d, d, config.attention_bias)
        linear(f"{name}.ff1", d, config.d_ff, config.linear_bias)
        linear(f"{name}.ff2", config.d_ff, d, config.linear_bias)
        if norm is not None:
            for which in ("norm1", "norm2"):
                layers[f"{name}.{which}"] = ExpectedLayer(norm.name, _norm_shape(norm, config))
    linear("head", d, config.out_dim, config.linear_bias)
    if config.has_linear_path:  # the head's bias is the path's too
        out_features, in_features = config.linear_path_shape
        linear("linear_path", in_features, out_features, False)
    return layers
