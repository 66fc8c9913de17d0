"""One step per observation: a streamable Step-T network run with per-layer caches (numpy only).

Under Step-T attention a past step attends only to itself, so its state at every layer depends only on
its own input when positions are relative (RoPE, or none) and the norms are per step
(``ModelConfig.streamable``). The network then splits into two streams:

- the **past stream**: each step through the layers attending to itself only (its value, output
  projection, feed-forward, norms), computed once per step; its keys and values at every layer are kept
  in a ring buffer of the last ``window - 1`` steps (fixed memory);
- the **query stream**: the newest window's last row, whose attention at each layer reads the cached
  keys and values of the ``window - 1`` steps before it.

So an observation costs one past-stream row plus one query row, not a window. The numbers are those of
the windowed network (``sbts.runtime.network``) on the window ending at that step, to float32 rounding,
with the same rule for a short history: the earliest row stands in for the missing ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from sbts.config import ModelConfig
from sbts.data.windows import check_series
from sbts.errors import ConfigError
from sbts.runtime.network import MacCounter, Network

FLOAT_BYTES = 4


def check_streamable(config: ModelConfig, what: str = "this model") -> None:
    problem = config.streaming_problem
    if problem is not None:
        raise ConfigError(f"{what} cannot stream one step at a time: {problem}")


class StepStream:
    """The network's per-layer caches and its two streams; ``query`` then ``push`` per observation."""

    def __init__(self, config: ModelConfig, tensors: Mapping[str, np.ndarray], counter: MacCounter | None = None):
        check_streamable(config)
        self.config = config
        self.net = Network(config, tensors, counter if counter is not None else MacCounter())
        self.size = config.max_len - 1  # the past steps a query reads
        shape = (config.n_layers, self.size, config.d_model)
        self.keys, self.values = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        self.reset()

    @property
    def cache_bytes(self) -> int:
        return (self.keys.size + self.values.size) * FLOAT_BYTES

    def reset(self) -> None:
        """Forget every step seen (the next one starts a new stream)."""
        self.count = 0  # rows in the buffer (at most size)
        self.oldest = 0  # buffer index of the oldest row once the buffer is full
        self.earliest: tuple[np.ndarray, np.ndarray] | None = None  # stands in for missing history

    def past_states(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keys and values (n, n_layers, d_model) of prepared rows (n, in_channels) in the past stream."""
        net, config = self.net, self.config
        h = net.linear("embedding", rows[None].astype(np.float32)) * np.float32(math.sqrt(config.d_model))
        keys, values = [], []
        for i in range(config.n_layers):
            name = f"layers.{i}"
            k, v = net.linear(f"{name}.attention.k_proj", h), net.linear(f"{name}.attention.v_proj", h)
            keys.append(k[0])
            values.append(v[0])
            # A past step attends only to itself: a softmax over one key is 1, so its output is its value.
            h = net.norm(f"{name}.norm1", h + net.linear(f"{name}.attention.out_proj", v), None)
            hidden = np.maximum(net.linear(f"{name}.ff1", h), 0)
            h = net.norm(f"{name}.norm2", h + net.linear(f"{name}.ff2", hidden), None)
        return np.stack(keys, axis=1), np.stack(values, axis=1)

    def push(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Append past states (n, n_layers, d_model), oldest first; the buffer keeps the last ``size``."""
        for key, value in zip(keys, values):
            if self.earliest is None:
                self.earliest = (key, value)
            if not self.size:
                continue
            slot = self.count if self.count < self.size else self.oldest
            self.keys[:, slot], self.values[:, slot] = key, value
            if self.count < self.size:
                self.count += 1
            else:
                self.oldest = (self.oldest + 1) % self.size

    def _window(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """The cached keys and values of one layer in time order (size, d), the earliest repeated in front
        while fewer than ``size`` steps were seen."""
        order = (self.oldest + np.arange(self.count)) % self.size if self.count else np.arange(0)
        keys, values = self.keys[layer, order], self.values[layer, order]
        missing = self.size - self.count
        if missing:
            keys = np.concatenate([np.repeat(self.earliest[0][layer][None], missing, 0), keys])
            values = np.concatenate([np.repeat(self.earliest[1][layer][None], missing, 0), values])
        return keys, values

    def query(self, row: np.ndarray) -> np.ndarray:
        """The network's output (out_dim,) at the last step of the window made of the cached steps and ``row``
        (its prepared input). Needs at least one step seen (pushed) or stood in."""
        net, config = self.net, self.config
        g = net.linear("embedding", row[None, None].astype(np.float32)) * np.float32(math.sqrt(config.d_model))
        for i in range(config.n_layers):
            name = f"layers.{i}"
            keys, values = self._window(i)
            q = net.linear(f"{name}.attention.q_proj", g)
            if config.step_t_self:  # the last step also attends to itself: its own key and value
                keys = np.concatenate([keys, net.linear(f"{name}.attention.k_proj", g)[0]])
                values = np.concatenate([values, net.linear(f"{name}.attention.v_proj", g)[0]])
            mixed = net.attend(f"{name}.attention", q, keys[None], values[None], None, self.size)
            g = net.norm(f"{name}.norm1", g + net.linear(f"{name}.attention.out_proj", mixed), None)
            hidden = np.maximum(net.linear(f"{name}.ff1", g), 0)
            g = net.norm(f"{name}.norm2", g + net.linear(f"{name}.ff2", hidden), None)
        return net.linear("head", np.maximum(g, 0))[0, 0]


class CachedScoreStream:
    """Anomaly scores one observation at a time with a ``StepStream``: ``update(x_t)`` is the score of step t,
    equal to batch scoring of the whole stream with the same context (the windowed ``ScoreStream``'s
    numbers, at the cost of one step). ``scale`` maps raw rows (n, D) to the model's scaled rows."""

    def __init__(self, stream: StepStream, scale: Callable[[np.ndarray], np.ndarray],
                 context: np.ndarray | None = None):
        self.stream, self.scale, self.n_channels = stream, scale, stream.config.in_channels
        self.context = context
        self.reset()

    def reset(self) -> None:
        """Start again from the context given at creation (or none)."""
        self.stream.reset()
        self.steps = 0
        if self.context is not None and len(self.context) and self.stream.size:
            rows = self.scale(check_series(self.context, self.n_channels, "context"))[-self.stream.size:]
            self.stream.push(*self.stream.past_states(rows))

    def update(self, observation: np.ndarray) -> float:
        """The score of one new observation (n_channels values); a bad one changes nothing."""
        row = self.scale(check_series(np.reshape(observation, (1, -1)), self.n_channels,
                                      f"observation {self.steps}"))[0]
        keys, values = self.stream.past_states(row[None])
        if self.stream.earliest is None:  # no history at all: the observation stands in for it
            self.stream.earliest = (keys[0], values[0])
        reconstruction = self.stream.query(row).astype(np.float64)
        self.stream.push(keys, values)
        self.steps += 1
        return float(np.mean(np.square(reconstruction - row.astype(np.float32).astype(np.float64))))

    def update_many(self, observations: np.ndarray) -> np.ndarray:
        """Scores of several new observations (n, n_channels), in order."""
        return np.array([self.update(row) for row in check_series(observations, self.n_channels, "observations")])
