"""What every sbts figure shares: matplotlib imported only when drawing, the image type from the file's
suffix, and an atomic write."""

from __future__ import annotations

import io
from pathlib import Path

from sbts.atomic import atomic_write_bytes
from sbts.errors import ConfigError

IMAGE_SUFFIXES = (".png", ".pdf", ".svg")


def pyplot(output: str | Path):
    """matplotlib's pyplot on a file-only backend, once ``output`` is known to name a supported image type."""
    if Path(output).suffix.lower() not in IMAGE_SUFFIXES:
        raise ConfigError(f"{output}: the image type comes from the suffix; use one of {', '.join(IMAGE_SUFFIXES)}")
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("plotting needs matplotlib: pip install 'sbts[plot]'") from None
    return plt


def save(figure, output: str | Path) -> Path:
    """Write the figure to ``output`` (its type from the suffix) atomically, and close it."""
    import matplotlib.pyplot as plt

    output = Path(output)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=output.suffix.lower()[1:], dpi=120)
    plt.close(figure)
    atomic_write_bytes(output, buffer.getvalue())
    return output


def step_range(start: int | None, end: int | None, n_steps: int) -> tuple[int, int]:
    """The steps ``start`` (default: the first) to ``end`` (default: the last) of a series of ``n_steps``,
    checked."""
    start = 0 if start is None else start
    end = n_steps if end is None else end
    if not 0 <= start < end <= n_steps:
        raise ConfigError(f"--start/--end must satisfy 0 <= start < end <= {n_steps} (the test steps); "
                          f"got {start} and {end}")
    return start, end
