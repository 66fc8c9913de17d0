"""The sweeps sbts ships: ``sbts reproduce NAME`` runs ``NAME.yaml`` (``--quick``: ``NAME-quick.yaml``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from sbts.config import read_config_file
from sbts.errors import ConfigError

QUICK_SUFFIX = "-quick"


def named_sweeps() -> dict[str, str]:
    """Name -> the first line of its description, for every shipped sweep (quick variants left out)."""
    out = {}
    for entry in sorted(resources.files(__name__).iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml") and not entry.name.endswith(QUICK_SUFFIX + ".yaml"):
            description = str(read_config_file(Path(str(entry))).get("description", ""))
            out[entry.name[:-len(".yaml")]] = description.split(". ")[0]
    return out


def named_spec_path(name: str, quick: bool = False) -> Path:
    """The shipped spec file of a named sweep."""
    if name not in named_sweeps():
        raise ConfigError(f"no shipped sweep named {name!r}; available: {', '.join(named_sweeps())}")
    entry = resources.files(__name__).joinpath(f"{name}{QUICK_SUFFIX if quick else ''}.yaml")
    if not entry.is_file():
        raise ConfigError(f"the sweep {name} has no quick variant")
    return Path(str(entry))
