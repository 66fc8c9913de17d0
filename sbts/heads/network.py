"""A network as the heads call it (numpy in, numpy out), whichever engine runs it: torch in training, numpy in
the runtime.

``last_step`` runs prepared windows (B, w, D) to their last-step outputs (B, out_dim): any model. ``shared``,
for a streamable Step-T model only, is its shared pass: a history (N, D) and whether the windows' last rows
are zeroed (forecasting's target slots) -> the last-step outputs (N - w + 1, out_dim) of the windows ending at
every row from w - 1 on, for one pass over the rows instead of one per window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

LastStep = Callable[[np.ndarray], np.ndarray]
SharedLastSteps = Callable[[np.ndarray, bool], np.ndarray]
SHARED_CHUNK = 512  # targets per shared pass: bounds the gathered keys and values (chunk x (w - 1) x d_model)


@dataclass(frozen=True)
class SeriesNetwork:
    last_step: LastStep
    shared: SharedLastSteps | None = None
