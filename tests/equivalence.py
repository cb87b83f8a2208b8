"""What "the same model" means in tests: the same weights bit for bit, outputs equal to a tolerance.

Two copies of one model can compute slightly different outputs from identical weights: a model
loaded from a file holds views into the mmapped buffer whose alignment decides which CPU GEMM
kernel runs (seen: 3.6e-7 apart on one machine, 0 on another). So a loader test compares what
the product promises, the weights, exactly, and the outputs to `OUTPUT_RTOL` of their scale: far
above kernel-order rounding (~1e-7 relative in fp32) and far below what a wrong tensor does (a
transposed or swapped weight moves the output by 1e-2 or more of its scale; tests/core/
test_equivalence.py shows both sides of that line).
"""

from __future__ import annotations

import torch

OUTPUT_RTOL = 1e-5
"""Largest allowed |actual - expected| as a fraction of max |expected| (fp32)."""


def assert_same_weights(actual: torch.nn.Module, expected: torch.nn.Module) -> None:
    """Same parameter and buffer names, shapes, dtypes and values, bit for bit."""
    got, want = actual.state_dict(), expected.state_dict()
    assert list(got) == list(want), f"tensor names differ: {sorted(set(got) ^ set(want))[:5]}"
    for name, tensor in want.items():
        assert got[name].shape == tensor.shape and got[name].dtype == tensor.dtype, name
        assert torch.equal(got[name], tensor), f"{name} differs"


def assert_same_outputs(actual: torch.Tensor, expected: torch.Tensor, rtol: float = OUTPUT_RTOL) -> None:
    """Equal shapes and |actual - expected| <= rtol * max |expected| everywhere (NaN never passes)."""
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = expected.abs().max().item()
    error = (actual - expected).abs().max().item()
    assert error <= rtol * scale, f"max |diff| {error:.3g} > {rtol:g} x max |expected| {scale:.3g}"
