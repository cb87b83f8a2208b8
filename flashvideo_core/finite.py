"""Stop on NaN/Inf as soon as a stage produces it, naming the stage and the likely cause.

A weight with one flipped exponent bit (0.146 -> 4.98e37) loads without complaint; the stage then
produces Inf and NaN, and the decoded video comes out black or NaN with exit code 0. One
`torch.isfinite(...).all()` per model call is a reduction over the latent, nothing next to a
transformer forward, so the samplers check every call and stop at the first bad step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import NonFiniteError

DAMAGED_WEIGHTS = (
    "Most likely a damaged weight file (one flipped bit is enough): check it with "
    "`python -m flashvideo_core convert FILE`, which verifies a .pt's stored checksums, or download it again. "
    "In fp16 it can also be an overflow: use bf16 or fp32."
)


def check_finite(tensor: torch.Tensor, what: str, cause: str = DAMAGED_WEIGHTS) -> None:
    """Raise NonFiniteError naming `what` and `cause` unless every value of `tensor` is finite."""
    finite = torch.isfinite(tensor)
    if bool(finite.all()):
        return
    bad = int(finite.numel() - finite.sum())
    raise NonFiniteError(f"{what} holds NaN/Inf ({bad} of {finite.numel()} values). {cause}")


def checked_model_calls(fn: Callable[..., torch.Tensor], stage: str, model_file: str | None = None) -> Callable:
    """Wrap a denoiser/velocity `fn(x, t) -> Tensor` so that a NaN/Inf output stops the run at that call.

    The error names the stage, the call (1-based) and, when given, the model file to check.
    """
    calls = 0
    cause = DAMAGED_WEIGHTS if model_file is None else DAMAGED_WEIGHTS.replace("FILE", model_file)

    def call(x: torch.Tensor, t) -> torch.Tensor:
        nonlocal calls
        calls += 1
        out = fn(x, t)
        check_finite(out, f"{stage}: the model's output at call {calls} (t={float(t):g})", cause)
        return out

    return call
