"""The metrics a task reports in tables and optimises in sweeps: which key of metrics.json, which way is better.

A task names its validation objective (what a sweep optimises; validation data only) and the test metrics a
results page prints, first the headline one (``sbts.tasks.base.Task``).
"""

from __future__ import annotations

from dataclasses import dataclass

MAXIMIZE, MINIMIZE = "maximize", "minimize"  # Optuna's names for a study's direction


@dataclass(frozen=True)
class ReportedMetric:
    key: str  # in the ``val`` or ``test`` mapping of metrics.json
    goal: str  # MAXIMIZE or MINIMIZE
    label: str  # what a table calls it
    oracle: bool = False  # chosen with test labels (an upper bound, not a deployable result)

    def better(self, first: float, second: float) -> bool:
        """Whether ``first`` is strictly better than ``second``."""
        return first > second if self.goal == MAXIMIZE else first < second
