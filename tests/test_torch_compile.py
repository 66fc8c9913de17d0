"""PyTorch users' tools on the model: ``torch.compile`` captures the forward in one graph (no recompilation per
layer) with the eager outputs, and ``torch.export`` exports it; for every model kind and attention mode, on CPU.
The backend is dynamo's ``eager`` (graph capture and guards, where recompilations come from) to stay within CI's
time; inductor's code generation is not what these tests are about."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

import sbts
from sbts.config import ATTENTION_MODES
from sbts.models import list_models

SMALL = dict(in_channels=3, out_dim=4, max_len=12, d_model=16, n_heads=2, n_layers=2, d_ff=32)
CALLS = 3  # forward calls after compiling: a recompilation would show up as more graphs


def model_of(name: str, attention: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return sbts.create_model(name, attention=attention, norm="none" if attention == "step_t" else "batch",
                             **SMALL).eval()


@pytest.mark.parametrize("attention", ATTENTION_MODES)
@pytest.mark.parametrize("name", list_models())
def test_compile_captures_one_graph_with_the_eager_outputs(name, attention):
    model = model_of(name, attention)
    x = torch.randn(4, SMALL["max_len"], SMALL["in_channels"])
    torch._dynamo.reset()
    counters.clear()
    with torch.no_grad():
        expected = model(x)
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        outputs = [compiled(x) for _ in range(CALLS)]
    assert counters["stats"]["unique_graphs"] == 1
    for output in outputs:
        torch.testing.assert_close(output, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("attention", ATTENTION_MODES)
@pytest.mark.parametrize("name", list_models())
def test_export_gives_the_eager_outputs(name, attention):
    model = model_of(name, attention)
    x = torch.randn(2, SMALL["max_len"], SMALL["in_channels"])
    with torch.no_grad():
        expected = model(x)
        exported = torch.export.export(model, (x,))
        torch.testing.assert_close(exported.module()(x), expected, rtol=0, atol=1e-6)
