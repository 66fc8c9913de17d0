"""Sweeps: grids and searches of runs as Optuna studies (the optional ``sweep`` extra), and the named sweeps
sbts ships (``sbts reproduce NAME``).

``sbts.sweep.spec``: the sweep specification and its checks; ``sbts.sweep.trials``: a trial's run directories;
``sbts.sweep.study``: the study, its storage and the workers; ``sbts.sweep.named``: the shipped specs.
"""

from sbts.sweep.named import named_spec_path as named_spec_path, named_sweeps as named_sweeps
from sbts.sweep.spec import SweepSpec as SweepSpec, parse_spec as parse_spec, read_spec as read_spec
from sbts.sweep.study import run_sweep as run_sweep
