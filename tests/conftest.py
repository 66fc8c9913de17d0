"""Shared fixtures: small synthetic .ts datasets the tests write themselves, and the real data dir."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

# One thread per process: the test models are tiny, and on a loaded machine (another process on the second
# core) two spinning OpenMP threads made single tests take minutes. Set before anything imports torch; the
# subprocesses that tests start inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

DATA_DIR = os.environ.get("SBTS_DATA_DIR")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Every test starts at one torch thread, as OMP_NUM_THREADS asks: a library's thread limits (aeon's) can leave
    torch at the machine's cores, and tiny models then spin two OpenMP threads on a shared CPU."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    yield


def real_data_dir() -> Path:
    if not DATA_DIR or not Path(DATA_DIR).is_dir():
        pytest.skip("SBTS_DATA_DIR is not set to the real datasets")
    return Path(DATA_DIR)


def synthetic_cases(n: int, n_channels: int = 3, n_classes: int = 3, min_len: int = 12, max_len: int = 20,
                    seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """Separable classes: the class sets the frequency of a sine in every channel; lengths vary."""
    rng = np.random.default_rng(seed)
    series, labels = [], []
    for i in range(n):
        label = i % n_classes
        length = int(rng.integers(min_len, max_len + 1))
        t = np.arange(length)
        case = np.stack([np.sin(2 * np.pi * (label + 1) * t / 16 + c) for c in range(n_channels)])
        series.append(case + 0.1 * rng.standard_normal(case.shape))
        labels.append(f"c{label}")
    return series, labels


def write_ts(path: Path, series: list[np.ndarray], labels: list[str], classes: list[str], name: str = "Synth") -> Path:
    equal = len({s.shape[1] for s in series}) == 1
    lines = [f"@problemName {name}", "@timeStamps false", "@missing false", "@univariate false",
             f"@dimensions {series[0].shape[0]}", f"@equalLength {str(equal).lower()}",
             f"@classLabel true {' '.join(classes)}", "@data"]
    for case, label in zip(series, labels):
        lines.append(":".join(",".join(f"{v:.6f}" for v in channel) for channel in case) + f":{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_synthetic_ts(folder: Path) -> Path:
    """Create ``folder`` holding Synth_TRAIN.ts (60 cases) and Synth_TEST.ts (30 cases), unequal lengths."""
    folder.mkdir()
    classes = ["c0", "c1", "c2"]
    train, train_labels = synthetic_cases(60, seed=1)
    test, test_labels = synthetic_cases(30, seed=2)
    write_ts(folder / "Synth_TRAIN.ts", train, train_labels, classes)
    write_ts(folder / "Synth_TEST.ts", test, test_labels, classes)
    return folder


@pytest.fixture
def synthetic_ts(tmp_path: Path) -> Path:
    """A directory holding Synth_TRAIN.ts (60 cases) and Synth_TEST.ts (30 cases), unequal lengths."""
    return write_synthetic_ts(tmp_path / "Synth")


def randomise(model):
    """Random scores, norm parameters and statistics and learnable positions (in place; returns the model in
    eval mode), so that an export or a runtime losing any of them cannot reproduce the model by accident."""
    import itertools

    import torch

    torch.manual_seed(0)
    with torch.no_grad():
        for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "scores":
                torch.nn.init.normal_(tensor)
            elif ".norm" in name and leaf in ("weight", "bias", "running_mean"):
                tensor.copy_((leaf == "weight") + 0.3 * torch.randn_like(tensor))
            elif leaf == "running_var":
                tensor.uniform_(0.5, 2.0)
            elif name == "positional.table" and isinstance(tensor, torch.nn.Parameter):
                tensor.normal_(0.0, 0.3)
    return model.eval()
