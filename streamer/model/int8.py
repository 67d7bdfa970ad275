"""int8 linear layers for the CPU: weights stored as int8, activations quantised on the fly.

``Int8Linear`` is what PyTorch's ``quantize_dynamic`` makes of an ``nn.Linear`` (the same weight scale,
the same packed kernel, the same outputs), built directly: ``quantize_dynamic`` packs each weight three
times, draws a random weight for the tied output projection first and runs an observer module per layer,
which made int8 cost 0.75 s of every start on two cores; this takes a fraction of that.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

QMIN, QMAX = -128, 127  # qint8
# The overload itself: calling the op's packet checks every call's arguments for fake script objects
# first (~5 of a decode step's ~45 us per small layer on two cores).
_LINEAR_DYNAMIC = torch.ops.quantized.linear_dynamic.default
EPS = torch.finfo(torch.float32).eps


def weight_scale(weight: Tensor) -> float:
    """The symmetric per-tensor scale of ``weight``: its largest magnitude over half the int8 range, as
    PyTorch's default weight observer (MinMaxObserver, per_tensor_symmetric) computes it, in float32."""
    lo, hi = torch.aminmax(weight.detach().float())
    bound = torch.maximum(-lo.clamp(max=0.0), hi.clamp(min=0.0))
    scale = bound / ((QMAX - QMIN) / 2)
    return float(scale.clamp(min=EPS))


class Int8Linear(nn.Module):
    """y = x W^T + b, W (out, in) in int8 with one scale; x is quantised per call (dynamic quantisation,
    ``quantized::linear_dynamic`` with the reduced activation range PyTorch's dynamic Linear uses)."""

    def __init__(self, weight: Tensor, bias: Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        with warnings.catch_warnings():
            # PyTorch announces the quantised tensor types' future removal on every call; they still work.
            warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor", category=UserWarning)
            q = torch.quantize_per_tensor(weight.detach().float(), weight_scale(weight), 0, torch.qint8)
        # An opaque packed-weight object (a ScriptObject; its type is private to PyTorch).
        self.packed: Any = torch.ops.quantized.linear_prepack(q, None if bias is None else bias.detach().float())

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        return cls(linear.weight, linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        """x (..., in) -> (..., out), in x's dtype."""
        return _LINEAR_DYNAMIC(x, self.packed, True).to(x.dtype)  # reduce_range=True

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantize_linears(model: nn.Module) -> int:
    """Replace every ``nn.Linear`` inside ``model`` by an ``Int8Linear``, in place; returns how many."""
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, Int8Linear.from_linear(child))
                replaced += 1
    return replaced
