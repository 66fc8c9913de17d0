"""The classification training recipe: label smoothing and augmentation (jitter, scaling) of the training cases."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from sbts.errors import ConfigError
from sbts.tasks.classification import AugmentedCases, ClassificationOptions, ClassificationTask
from sbts.training import checkpoint as ckpt
from tests.test_training import Interrupt, spec_for

CLASSIFICATION = ClassificationTask()
N_CASES, LENGTH, CHANNELS, VALID, CLASSES = 6, 10, 3, 7, 4


def padded_cases() -> TensorDataset:
    x = torch.randn(N_CASES, LENGTH, CHANNELS, generator=torch.Generator().manual_seed(0))
    padding = torch.zeros(N_CASES, LENGTH, dtype=torch.bool)
    padding[:, VALID:] = True
    x[padding] = 0.0
    return TensorDataset(x, padding, torch.arange(N_CASES) % CLASSES)


def test_without_augmentation_the_cases_are_unchanged_and_the_targets_smoothed_as_torch_does():
    cases = padded_cases()
    augmented = AugmentedCases(cases, CLASSES, ClassificationOptions(label_smoothing=0.2))
    logits = torch.randn(N_CASES, CLASSES, generator=torch.Generator().manual_seed(1))
    xs, paddings, targets = zip(*(augmented[i] for i in range(N_CASES)))
    assert torch.equal(torch.stack(xs), cases.tensors[0]) and torch.equal(torch.stack(paddings), cases.tensors[1])
    targets = torch.stack(targets)
    assert torch.allclose(targets.sum(1), torch.ones(N_CASES))
    assert torch.allclose(F.cross_entropy(logits, targets),
                          F.cross_entropy(logits, cases.tensors[2], label_smoothing=0.2))


def test_jitter_and_scaling_change_valid_steps_only_and_differ_per_draw():
    cases = padded_cases()
    augmented = AugmentedCases(cases, CLASSES, ClassificationOptions(jitter=0.1, scaling=0.2))
    torch.manual_seed(0)
    first, second = augmented[0][0], augmented[0][0]
    original = cases.tensors[0][0]
    assert not torch.equal(first, second)
    assert not torch.equal(first[:VALID], original[:VALID])
    assert torch.equal(first[VALID:], torch.zeros(LENGTH - VALID, CHANNELS))  # padded steps stay zero
    assert torch.equal(augmented[0][2], F.one_hot(cases.tensors[2][0], CLASSES).float())  # no smoothing: one-hot


def test_scaling_alone_multiplies_each_channel_by_one_factor():
    cases = padded_cases()
    x = AugmentedCases(cases, CLASSES, ClassificationOptions(scaling=0.3))[1][0][:VALID]
    ratio = x / cases.tensors[0][1][:VALID]
    assert torch.allclose(ratio, ratio[:1].expand_as(ratio), atol=1e-5)
    assert not torch.allclose(ratio, torch.ones_like(ratio))


@pytest.mark.parametrize("name,value", [("label_smoothing", 1.0), ("label_smoothing", -0.1), ("jitter", -1.0),
                                        ("scaling", float("inf")), ("jitter", True), ("scaling", "0.1")])
def test_bad_recipe_values_are_refused(name, value):
    with pytest.raises(ConfigError, match=name):
        ClassificationOptions(**{name: value})


def test_a_recipe_run_changes_the_training_and_resumes_to_the_same_weights(synthetic_ts, tmp_path):
    spec = spec_for(synthetic_ts)
    spec["task_options"] = {"label_smoothing": 0.1, "jitter": 0.05, "scaling": 0.1}
    straight = CLASSIFICATION.train_run(spec, tmp_path / "straight", verbose=False)
    CLASSIFICATION.train_run(spec_for(synthetic_ts), tmp_path / "plain", verbose=False)
    first = CLASSIFICATION.train_run(spec, tmp_path / "resumed", verbose=False, on_epoch_end=Interrupt(after=2))
    assert first["interrupted"]
    resumed = CLASSIFICATION.train_run({}, tmp_path / "resumed", resume=True, verbose=False)
    a = ckpt.load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["model"]
    b = ckpt.load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert straight["test"] == resumed["test"]
    plain = ckpt.load_checkpoint(tmp_path / "plain" / "checkpoints" / "last.pt")["model"]
    assert any(not torch.equal(a[key], plain[key]) for key in a)  # the recipe reached the optimiser
