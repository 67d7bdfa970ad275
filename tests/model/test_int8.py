"""int8 linear layers: the outputs of PyTorch's dynamic quantisation, built without it."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from streamer.model.int8 import Int8Linear, quantize_linears


def reference(linear: nn.Linear) -> nn.Module:
    """What ``torch.ao.quantization.quantize_dynamic`` makes of ``linear`` (per-tensor int8 weights)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(nn.Sequential(linear), {nn.Linear}, dtype=torch.qint8)[0]


@pytest.mark.parametrize(("n_in", "n_out", "bias"), [(384, 384, True), (384, 1536, True), (1536, 384, False)])
def test_outputs_equal_pytorchs_dynamic_quantisation(n_in: int, n_out: int, bias: bool) -> None:
    torch.manual_seed(n_in + n_out)
    linear = nn.Linear(n_in, n_out, bias=bias)
    x = torch.randn(3, 7, n_in) * 4
    with torch.inference_mode():
        assert torch.equal(Int8Linear.from_linear(linear)(x), reference(linear)(x))


def test_every_linear_layer_is_replaced_and_others_kept() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Sequential(nn.Linear(16, 4), nn.LayerNorm(4)))
    assert quantize_linears(model) == 2
    assert [type(m).__name__ for m in model.modules()] == [
        "Sequential", "Int8Linear", "GELU", "Sequential", "Int8Linear", "LayerNorm"
    ]
    assert model(torch.randn(2, 8)).shape == (2, 4)
