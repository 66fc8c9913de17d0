"""Dropout: a training regulariser only. It changes no weight, no stored byte and no inference output; in
training it zeroes activations at random (and gradients still reach the scores through it)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import randomise

import sbts
from sbts.config import ModelConfig

SMALL = dict(in_channels=3, out_dim=2, max_len=6, d_model=8, n_heads=2, n_layers=2, d_ff=12)
STREAMABLE = dict(attention="step_t", norm="layer", pos_encoding="rope")
RATE = 0.3


def window(b=4, seed=0) -> torch.Tensor:
    return torch.randn(b, SMALL["max_len"], SMALL["in_channels"], generator=torch.Generator().manual_seed(seed))


def test_dropout_at_its_default_is_not_written_and_a_rate_round_trips():
    assert "dropout" not in ModelConfig(**SMALL).to_dict()
    config = ModelConfig(**SMALL, dropout=RATE)
    assert config.to_dict()["dropout"] == RATE
    assert ModelConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("name", sbts.list_models())
def test_dropout_leaves_the_weights_and_the_inference_outputs_alone(name):
    plain = randomise(sbts.create_model(name, **SMALL)).eval()
    dropped = sbts.create_model(name, **SMALL, dropout=RATE)
    assert dropped.load_state_dict(plain.state_dict()) is not None  # the same parameters and buffers, by name
    dropped.eval()
    x = window()
    torch.testing.assert_close(dropped(x), plain(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", sbts.list_models())
def test_dropout_in_training_zeroes_at_random_and_still_trains_the_scores(name):
    model = randomise(sbts.create_model(name, **SMALL, norm="layer", dropout=RATE)).train()
    plain = sbts.create_model(name, **SMALL, norm="layer")
    plain.load_state_dict(model.state_dict())
    x = window()
    torch.manual_seed(0)
    first = model(x)
    second = model(x)
    assert not torch.equal(first, second)  # a fresh mask each pass
    assert not torch.equal(first, plain.train()(x))
    second.square().sum().backward()
    trained = [p for p in model.parameters() if p.requires_grad]
    assert trained and all(p.grad is not None and p.grad.abs().sum() > 0 for p in trained if p.dim() > 1)


def test_the_shared_pass_applies_dropout_in_training_and_equals_the_windows_in_eval():
    model = randomise(sbts.create_model("sbt", **SMALL, **STREAMABLE, dropout=RATE))
    rows = torch.randn(2, 20, SMALL["in_channels"], generator=torch.Generator().manual_seed(1))
    ends = torch.arange(SMALL["max_len"] - 1, 20)
    model.eval()
    shared = model.last_steps(rows, ends)
    windows = torch.stack([rows[:, e - SMALL["max_len"] + 1:e + 1] for e in ends.tolist()], dim=1)
    each = model(windows.flatten(0, 1), last_step_only=True).view(2, len(ends), -1)
    torch.testing.assert_close(shared, each, rtol=1e-5, atol=1e-5)
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model.last_steps(rows, ends), shared)


def test_the_cli_trains_with_dropout_records_it_and_refuses_a_bad_rate(synthetic_ts, tmp_path, capsys):
    from sbts.cli.main import main

    common = ["train", "classification", "--data", str(synthetic_ts), "--epochs", "1", "--d-model", "8",
              "--d-ff", "16", "--device", "cpu", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "run"), "--dropout", "0.2"]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["dropout"] == 0.2
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "bad"), "--dropout", "1.5"]) == 2
    assert "dropout must be a number in [0, 1)" in capsys.readouterr().err
