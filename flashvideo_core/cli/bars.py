"""Progress bars on the terminal: one tqdm bar per ProgressEvent phase, counted in its own units."""

from __future__ import annotations

import sys

from tqdm import tqdm

from ..progress import UNITS_PER_WINDOW, ProgressEvent
from .interrupts import raise_if_interrupted

BAR_KINDS = (("clip", "clip"), ("stage1", "steps"), ("stage2", "steps"), ("load", "mb"), ("verify", "mb"),
             ("download ", "mb"), ("encode", "share"), ("decode", "share"))
"""Phase name prefix -> how its bar is drawn (first match; anything else: "count")."""
_TIMES = "[{elapsed}<{remaining}"
BAR_FORMATS = {
    "clip": "{desc}: {percentage:3.0f}%|{bar}| " + _TIMES + "]",  # desc: "clip, window 2/3"
    "steps": "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps " + _TIMES + ", {rate_inv_fmt}]",
    "mb": "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} MB " + _TIMES + "]",
    "mb_rate": "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} MB " + _TIMES + ", {rate_noinv_fmt}]",
    "share": "{desc}: {percentage:3.0f}%|{bar}| " + _TIMES + "]",  # slice units: only the share means something
    "count": "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} " + _TIMES + "]",
}
"""tqdm bar formats: integer counts, and a rate only where it means something (s/step while sampling,
MB/s for reads of at least RATE_MIN_MB)."""
RATE_MIN_MB = 64
"""Smaller reads finish before a rate settles (a 1 MB tiny file showed 10.7k MB/s)."""


class TqdmProgress:
    """A ProgressEvent callback that shows one tqdm bar per phase on stderr (or `file`)."""

    def __init__(self, enabled: bool = True, file=None):
        self.enabled = enabled
        self.file = file
        self.bar = None
        self.phase = None

    def __call__(self, event: ProgressEvent) -> None:
        raise_if_interrupted()  # a Ctrl-C whose KeyboardInterrupt Python dropped stops the run here
        if not self.enabled:
            return
        if event.phase != self.phase or self.bar is None or event.step < self.bar.n:
            self.close()
            self.phase = event.phase
            self.bar = self._open(event)
        self.bar.total = event.total
        if self.phase == "clip":
            self.bar.set_description_str(_clip_label(event), refresh=False)
        self.bar.update(event.step - self.bar.n)
        if event.step >= event.total:
            self.close()  # a finished phase stops its clock

    def _open(self, event: ProgressEvent):
        kind = next((kind for prefix, kind in BAR_KINDS if event.phase.startswith(prefix)), "count")
        if kind == "mb" and event.total >= RATE_MIN_MB:
            kind = "mb_rate"
        unit = {"steps": "step", "mb_rate": "MB"}.get(kind, "it")
        desc = _clip_label(event) if kind == "clip" else event.phase
        return tqdm(total=event.total, desc=desc, unit=unit, bar_format=BAR_FORMATS[kind], leave=True,
                    file=self.file or sys.stderr)

    def close(self) -> None:
        """Close the open progress bar, if any."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _clip_label(event: ProgressEvent) -> str:
    """'clip, window 2/3' for a WindowedProgress event (UNITS_PER_WINDOW units per window)."""
    windows = max(1, event.total // UNITS_PER_WINDOW)
    return f"clip, window {min(windows, event.step // UNITS_PER_WINDOW + 1)}/{windows}"
