"""Progress events passed from long-running core functions to a caller's callback."""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    values: numbers a phase reports with its step (training: {"loss": ...}); otherwise None.
    """

    phase: str
    step: int
    total: int
    preview: torch.Tensor | None = None
    values: Mapping[str, float] | None = None


ProgressCallback = Callable[[ProgressEvent], None]


def report(callback: ProgressCallback | None, phase: str, step: int, total: int, preview=None,
           values: Mapping[str, float] | None = None) -> None:
    """Send one event to `callback` if there is one. Exceptions from the callback propagate."""
    if callback is not None:
        callback(ProgressEvent(phase, step, total, preview, values))


WINDOW_PHASE_SHARES = {"encode": (0.0, 0.2), "stage2": (0.2, 0.5), "decode": (0.7, 0.3)}
"""Where each phase of one window sits in that window's slice of a clip's progress: (start, share)."""
UNITS_PER_WINDOW = 1000
"""Fine enough that every step of a phase moves the bar (so each one also reaches the cancel check)."""


class WindowedProgress:
    """Folds the events of a run in windows (enhance) into one ProgressEvent("clip", done, total) stream.

    The core reports ("enhance", i, n) before the first window (i = 0) and after each window, and
    encode / stage2 / decode steps inside each window. Each window gets UNITS_PER_WINDOW units of
    the clip's n x UNITS_PER_WINDOW, split between its phases by WINDOW_PHASE_SHARES, so one bar
    moves only forward from 0 to the total (each value sent once, except with a preview) instead of
    restarting for every phase of every window. An event that would repeat the last value is
    dropped; with 1000 units a window that only happens after hundreds of steps in one phase.
    Stage II previews travel with their events; other phases (loading) pass through unchanged.
    """

    def __init__(self, callback: ProgressCallback):
        self.callback = callback
        self.window, self.windows = 0, 1
        self.last = -1  # units last sent: the stream never goes back (an out-of-memory retry restarts a phase)

    def __call__(self, event: ProgressEvent) -> None:
        if event.phase == "enhance":
            self.window, self.windows = event.step, max(1, event.total)
            done = float(event.step)
        elif event.phase in WINDOW_PHASE_SHARES:
            start, share = WINDOW_PHASE_SHARES[event.phase]
            done = min(self.window + 1.0, self.window + start + share * event.step / max(1, event.total))
        else:
            self.callback(event)
            return
        units = max(self.last, round(done * UNITS_PER_WINDOW))
        if units == self.last and event.preview is None:
            return  # nothing new to show (e.g. "window done" right after its last decode step)
        self.last = units
        self.callback(ProgressEvent("clip", units, UNITS_PER_WINDOW * self.windows, event.preview))
