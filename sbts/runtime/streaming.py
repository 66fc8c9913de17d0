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
from sbts.heads.forecasting import Formulation
from sbts.heads.network import SHARED_CHUNK, SharedLastSteps
from sbts.frozen_tensors import ROTARY_BASE, rotate_pairs
from sbts.runtime.network import MacCounter, Network

FLOAT_BYTES = 4


def rotary_angles(config: ModelConfig, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin (n, 1, head_dim // 2) of the RoPE angles at the absolute ``steps`` (n,) of a stream."""
    head_dim = config.d_model // config.n_heads
    frequencies = ROTARY_BASE ** (-2 * np.arange(head_dim // 2, dtype=np.float64) / head_dim)
    angles = steps.astype(np.float64)[:, None] * frequencies
    return np.cos(angles).astype(np.float32)[:, None], np.sin(angles).astype(np.float32)[:, None]


def turn_rows(config: ModelConfig, x: np.ndarray, steps: np.ndarray,
              angles: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """RoPE of (n, d_model) rows at the absolute ``steps`` (n,) of a stream (``angles``: their
    ``rotary_angles``, when already known): a query and a key turned by their own steps multiply as they would
    in any window holding both."""
    cos, sin = rotary_angles(config, steps) if angles is None else angles
    return rotate_pairs(x.reshape(len(x), config.n_heads, config.d_model // config.n_heads), cos, sin).reshape(
        x.shape)


def check_streamable(config: ModelConfig, what: str = "this model") -> None:
    problem = config.streaming_problem
    if problem is not None:
        raise ConfigError(f"{what} cannot stream one step at a time: {problem}")


class StepStream:
    """The network's per-layer caches and its two streams; ``query`` then ``push`` per observation.

    The cache of each layer is a double ring buffer (every row written at ``i`` and ``i + size``), so the
    window of the last ``size`` rows is always one contiguous view, never a copy. Under RoPE the cached keys
    are turned once, by their absolute step in the stream, and each query by its own: their products depend
    only on the distance, as in the window."""

    def __init__(self, config: ModelConfig, tensors: Mapping[str, np.ndarray], counter: MacCounter | None = None):
        check_streamable(config)
        self.config = config
        self.net = Network(config, tensors, counter if counter is not None else MacCounter())
        self.size = config.max_len - 1  # the past steps a query reads
        shape = (config.n_layers, 2 * self.size, config.d_model)
        self.keys, self.values = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        self.reset()

    @property
    def cache_bytes(self) -> int:
        return (self.keys.size + self.values.size) // 2 * FLOAT_BYTES  # the second copy only mirrors the first

    @property
    def empty(self) -> bool:
        return self.step == 0

    def reset(self) -> None:
        """Forget every step seen (the next one starts a new stream)."""
        self.step = 0  # absolute step of the next row pushed

    def _turn(self, x: np.ndarray, steps: np.ndarray, angles: tuple[np.ndarray, np.ndarray] | None = None
              ) -> np.ndarray:
        return turn_rows(self.config, x, steps, angles) if self.net.rotary else x

    def past_states(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keys and values (n, n_layers, d_model) of prepared rows (n, in_channels) in the past stream (keys not
        yet turned)."""
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

    def fill(self, key: np.ndarray, value: np.ndarray) -> None:
        """Start an empty stream's window with copies of one past state (1, n_layers, d_model): the earliest
        row stands in for the history before it, as in ``history_for``."""
        self._write(np.repeat(key, self.size, 0), np.repeat(value, self.size, 0))

    def push(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Append past states (n, n_layers, d_model), oldest first (the first row of a stream fills the window)."""
        if self.empty and len(keys):
            self.fill(keys[:1], values[:1])
        self._write(keys, values)

    def _write(self, keys: np.ndarray, values: np.ndarray) -> None:
        steps = self.step + np.arange(len(keys))
        layers = self.config.n_layers
        # Every layer's keys of a row turn by the same step: one rotation for all of them.
        turned_all = self._turn(keys.reshape(-1, keys.shape[-1]), np.repeat(steps, layers)).reshape(keys.shape)
        for layer in range(layers):
            turned = turned_all[:, layer]
            for offset, step in enumerate(steps):
                slot = int(step) % self.size if self.size else 0
                if self.size:
                    self.keys[layer, slot] = self.keys[layer, slot + self.size] = turned[offset]
                    self.values[layer, slot] = self.values[layer, slot + self.size] = values[offset, layer]
        self.step += len(keys)

    def query(self, row: np.ndarray) -> np.ndarray:
        """The network's output (out_dim,) at the last step of the window made of the cached steps and ``row``
        (its prepared input), the step after the last one pushed."""
        net, config = self.net, self.config
        start = self.step % self.size if self.size else 0  # the oldest cached row's slot
        here = np.array([self.step])
        angles = rotary_angles(config, here) if self.net.rotary else None  # the query's step, at every layer
        g = net.linear("embedding", row[None, None].astype(np.float32)) * np.float32(math.sqrt(config.d_model))
        for i in range(config.n_layers):
            name = f"layers.{i}"
            keys, values = self.keys[i, start:start + self.size], self.values[i, start:start + self.size]
            q = self._turn(net.linear(f"{name}.attention.q_proj", g)[0], here, angles)[None]
            if config.step_t_self:  # the last step also attends to itself: its own key and value
                keys = np.concatenate([keys, self._turn(net.linear(f"{name}.attention.k_proj", g)[0], here, angles)])
                values = np.concatenate([values, net.linear(f"{name}.attention.v_proj", g)[0]])
            mixed = net.attend(f"{name}.attention", q, keys[None], values[None], None, None)
            g = net.norm(f"{name}.norm1", g + net.linear(f"{name}.attention.out_proj", mixed), None)
            hidden = np.maximum(net.linear(f"{name}.ff1", g), 0)
            g = net.norm(f"{name}.norm2", g + net.linear(f"{name}.ff2", hidden), None)
        return net.head(g)[0, 0]


def numpy_shared_pass(config: ModelConfig, tensors: Mapping[str, np.ndarray],
                      counter: MacCounter | None = None) -> SharedLastSteps:
    """A streamable network's shared pass in numpy (``sbts.heads.network``): every step's past stream once,
    then per target a query row over the ``max_len - 1`` steps before it, in chunks of ``SHARED_CHUNK``."""
    check_streamable(config)
    net = Network(config, tensors, counter if counter is not None else MacCounter())
    past, scale = config.max_len - 1, np.float32(math.sqrt(config.d_model))

    def last_steps(history: np.ndarray, zero_queries: bool) -> np.ndarray:
        out = []
        for start in range(0, len(history) - past, SHARED_CHUNK):
            rows = np.asarray(history[start:start + SHARED_CHUNK + past], dtype=np.float32)[None]
            n = rows.shape[1] - past
            h = net.linear("embedding", rows) * scale
            g = net.linear("embedding", np.zeros_like(rows[:, past:]) if zero_queries else rows[:, past:]) * scale
            band = np.arange(n)[:, None] + np.arange(past)  # row i's past steps
            steps, ends = np.arange(rows.shape[1]), np.arange(past, rows.shape[1])

            def turn(x: np.ndarray, at: np.ndarray) -> np.ndarray:  # keys and queries once, by their own steps
                return turn_rows(config, x, at) if net.rotary else x

            for i in range(config.n_layers):
                name = f"layers.{i}"
                k = turn(net.linear(f"{name}.attention.k_proj", h)[0], steps)
                v = net.linear(f"{name}.attention.v_proj", h)[0]
                q, keys, values = turn(net.linear(f"{name}.attention.q_proj", g)[0], ends)[:, None], k[band], v[band]
                if config.step_t_self:  # the last step also attends to itself: its own key and value
                    keys = np.concatenate([keys, turn(net.linear(f"{name}.attention.k_proj", g)[0], ends)[:, None]], 1)
                    values = np.concatenate([values, net.linear(f"{name}.attention.v_proj", g)[0][:, None]], 1)
                mixed = net.attend(f"{name}.attention", q, keys, values, None, None)[:, 0][None]
                g = net.norm(f"{name}.norm1", g + net.linear(f"{name}.attention.out_proj", mixed), None)
                g = net.norm(f"{name}.norm2", g + net.linear(f"{name}.ff2", np.maximum(net.linear(f"{name}.ff1", g),
                                                                                        0)), None)
                h = net.norm(f"{name}.norm1", h + net.linear(f"{name}.attention.out_proj", v[None]), None)
                h = net.norm(f"{name}.norm2", h + net.linear(f"{name}.ff2", np.maximum(net.linear(f"{name}.ff1", h),
                                                                                        0)), None)
            out.append(net.head(g)[0])
        return np.concatenate(out) if out else np.empty((0, config.out_dim), np.float32)
    return last_steps


class _CachedStream:
    """A ``StepStream`` fed with raw observations: ``update(x_t)`` for one, ``update_many`` for a block (past
    states in one pass, then a query row each); a bad observation refuses its block and changes nothing.
    ``scale`` maps raw rows (n, D) to the model's scaled rows; ``context``: raw rows that precede the stream."""

    def __init__(self, stream: StepStream, scale: Callable[[np.ndarray], np.ndarray],
                 context: np.ndarray | None = None):
        self.stream, self.scale, self.context = stream, scale, context
        self.n_channels = stream.config.in_channels
        self.reset()

    def reset(self) -> None:
        """Start again from the context given at creation (or none)."""
        self.stream.reset()
        self.steps = 0
        if self.context is not None and len(self.context) and self.stream.size:
            rows = self.scale(check_series(self.context, self.n_channels, "context"))[-self.stream.size:]
            self.stream.push(*self.stream.past_states(rows))

    def update(self, observation: np.ndarray):
        return self.update_many(np.reshape(observation, (1, -1)), f"observation {self.steps}")[0]

    def update_many(self, observations: np.ndarray, where: str | None = None) -> np.ndarray:
        checked = check_series(observations, self.n_channels, where or f"observations from {self.steps}")
        rows = self.scale(checked).astype(np.float32)
        out = self._outputs(rows, *self.stream.past_states(rows))
        self.steps += len(rows)
        return out

    def _outputs(self, rows: np.ndarray, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class CachedScoreStream(_CachedStream):
    """Anomaly scores one observation at a time: ``update(x_t)`` is the score of step t, equal to batch scoring
    of the whole stream with the same context (the windowed ``ScoreStream``'s numbers, at the cost of one
    step)."""

    def _outputs(self, rows: np.ndarray, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
        scores = np.empty(len(rows))
        for i, row in enumerate(rows):
            if self.stream.empty:  # no history at all: the observation stands in for it
                self.stream.fill(keys[i:i + 1], values[i:i + 1])
            reconstruction = self.stream.query(row).astype(np.float64)
            self.stream.push(keys[i:i + 1], values[i:i + 1])
            scores[i] = np.mean(np.square(reconstruction - row.astype(np.float64)))
        return scores


class CachedForecastStream(_CachedStream):
    """Forecasts one observation at a time: ``update(x_t)`` gives the forecasts (h, D) of steps t + 1, ..., t + h
    in the data's units, equal to ``forecast_next`` on the stream so far (and context).

    The window's last row, the step being forecast, is a zeroed slot (``sbts.heads.forecasting``), so each
    observation is pushed to the past stream and the query row reads zeros. ``input_norm="window"`` scales every
    window by its own steps, which a cache cannot reuse: refused."""

    def __init__(self, stream: StepStream, formulation: Formulation, scale: Callable[[np.ndarray], np.ndarray],
                 unscale: Callable[[np.ndarray], np.ndarray], context: np.ndarray | None = None):
        if formulation.input_norm != "none":
            raise ConfigError(f"input_norm {formulation.input_norm}: each window is scaled by its own steps, so this "
                              "forecaster cannot stream one step at a time")
        self.formulation, self.unscale = formulation, unscale
        super().__init__(stream, scale, context)

    def _outputs(self, rows: np.ndarray, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
        slot = np.zeros(self.n_channels, np.float32)  # the target slot of every window
        outputs = np.empty((len(rows), self.stream.config.out_dim), np.float32)
        for i in range(len(rows)):
            self.stream.push(keys[i:i + 1], values[i:i + 1])
            outputs[i] = self.stream.query(slot)
        ahead = self.formulation.steps_ahead(outputs)
        return self.unscale(rows[:, None] + ahead if self.formulation.target == "change" else ahead)
