"""Progress events passed from long-running core functions to a caller's callback."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ProgressEvent:
    """One unit of progress.

    phase: short name ("stage1", "stage2", "decode", "encode", "load", ...).
    step: units done so far in this phase (1..total).
    total: units in this phase.
    preview: for sampler steps, the current x0 estimate as a raw-space latent
        (B, 16, T, h, w); otherwise None.
    """

    phase: str
    step: int
    total: int
    preview: torch.Tensor | None = None


ProgressCallback = Callable[[ProgressEvent], None]


def report(callback: ProgressCallback | None, phase: str, step: int, total: int, preview=None) -> None:
    """Send one event to `callback` if there is one. Exceptions from the callback propagate."""
    if callback is not None:
        callback(ProgressEvent(phase, step, total, preview))
