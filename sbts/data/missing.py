"""Missing values written as numbers (``-9999``): found in a file's columns, reported, and never kept as data.

Some public series mark a missing measurement with a code number instead of leaving the cell empty (the Jena
weather file holds ``-9999`` in 81 cells). A code is found in a column, per file, when all of these hold:

1. it is a whole number of magnitude at least :data:`CODE_MIN_MAGNITUDE` (99): codes are written as ``-99``,
   ``-999``, ``-9999``, ``99999``, ``-32768``... Fractions and small numbers are measurements: the min-max scaled
   benchmarks (SMD, ASD, SMAP, MSL) hold ``-1``, ``0`` and ``1`` thousands of times at the edge of channels that
   otherwise move in a narrow band, and these are real values;
2. it lies beyond every other value of its column by a gap larger than :data:`CODE_GAP_SPANS` times the span
   (max - min) of those other values: a measurement, even a spike, lies within reach of the rest, while a code
   sits alone, far out (the weather codes are 4 to 730 spans away). A column whose other values are all equal
   has no span to judge by and is left alone;
3. the value fills at least :data:`CODE_MIN_CELLS` cells of the file, in any columns: a code is the file's
   convention, and one lone far value is more likely a real spike (weather has one ``-9999`` in a column, and 80
   elsewhere).

The column's lowest and highest values are tested, and again after each found code (a column may hold both
``-9999`` and ``-999``). A quantile or median/MAD distance was tried first and rejected: the real SMD machines
hold repeated spikes 10 to 2,000 quantile ranges out. A ``missing_value`` given by the user is missing wherever
it appears, with no test. Every column with missing cells is reported by a :class:`MissingValueWarning` of one
line (file, line, column, the value, its count).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sbts.config import check_missing_value

__all__ = ["CODE_GAP_SPANS", "CODE_MIN_CELLS", "CODE_MIN_MAGNITUDE", "MissingCode", "MissingValueWarning",
           "check_missing_value", "find_missing_codes"]

# The smallest code in use (-99); every scaled benchmark's values stay well below it.
CODE_MIN_MAGNITUDE = 99
# Farther from the column's other values than their whole range: a measurement, even a spike, stays within reach
# of the rest, and a lower bound would take the far tail of a skewed channel; weather's codes lie 4 to 730 out.
CODE_GAP_SPANS = 1.0
# Seen at least twice in the file: a code is a convention, a single far value may be a real spike.
CODE_MIN_CELLS = 2


class MissingValueWarning(UserWarning):
    """Cells of a data file held a missing-value code; they were treated as missing."""


@dataclass(frozen=True)
class MissingCode:
    """The cells of one column (``rows``, ascending) that hold ``value``; ``given``: the user's missing value
    (else found by the rule above, ``others`` then being the (min, max) of the column's other values)."""

    column: int
    value: float
    rows: np.ndarray
    given: bool
    others: tuple[float, float] | None = None

    def describe(self, where: str, treatment: str) -> str:
        """One line for the report; ``where`` locates the first cell (file, line, column), ``treatment`` says
        what became of the cells."""
        cells = f"{len(self.rows)} cell{'s' if len(self.rows) > 1 else ''}"
        if self.given:
            why = "the given missing value"
        else:
            low, high = self.others
            why = f"a missing-value code far outside the column's other values {low:g}..{high:g}"
        return f"{where}: value {self.value:g} in {cells} (first here), {why}: treated as missing, {treatment}"

    def warn(self, where: str, treatment: str) -> None:
        """Report the cells as one MissingValueWarning line."""
        warnings.warn(self.describe(where, treatment), MissingValueWarning, stacklevel=3)


def _could_be_code(value: float) -> bool:
    return float(value).is_integer() and abs(value) >= CODE_MIN_MAGNITUDE


def _isolated_extremes(column: np.ndarray) -> list[tuple[float, tuple[float, float]]]:
    """(value, (min, max) of the others) of each code candidate of one column: rules 1 and 2 of the module doc."""
    found = []
    rest = column[~np.isnan(column)]
    while rest.size:
        low, high = float(rest.min()), float(rest.max())
        for candidate in (low, high):
            if not _could_be_code(candidate):
                continue
            others = rest[rest != candidate]
            if others.size == 0:
                continue
            other_low, other_high = float(others.min()), float(others.max())
            span = other_high - other_low
            gap = other_low - candidate if candidate == low else candidate - other_high
            if span > 0 and gap > CODE_GAP_SPANS * span:
                found.append((candidate, (other_low, other_high)))
                rest = others
                break
        else:
            return found
    return found


def find_missing_codes(columns: Sequence[np.ndarray], missing_value: float | None = None) -> list[MissingCode]:
    """The missing cells of a file's columns (each a 1-D array over time; NaN is already missing and ignored),
    by column, then value: the user's ``missing_value`` and the codes found by the rule of the module doc."""
    missing_value = check_missing_value(missing_value)
    candidates = [_isolated_extremes(column) for column in columns]
    values = {value for found in candidates for value, _ in found}
    cells_in_file = {value: sum(int(np.count_nonzero(column == value)) for column in columns) for value in values}
    codes = []
    for index, (column, found) in enumerate(zip(columns, candidates)):
        if missing_value is not None and (rows := np.flatnonzero(column == missing_value)).size:
            codes.append(MissingCode(index, missing_value, rows, given=True))
        for value, others in sorted(found):
            if value != missing_value and cells_in_file[value] >= CODE_MIN_CELLS:
                codes.append(MissingCode(index, value, np.flatnonzero(column == value), given=False, others=others))
    return codes
