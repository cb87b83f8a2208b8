"""Cut a clip of any length into overlapping 4k+1-frame windows and blend the windows' outputs back.

Planning (`plan_windows`): a clip no longer than the window is one window, padded up to the next 4k+1
frame count by repeating its last frame (the padding is trimmed after Stage II). A longer clip gets
the fewest full windows whose overlaps are all at least `overlap` frames, spread evenly from the
first frame to the last, so every window has the trained length and no window is padded.

Blending (`blend_weights`, `WindowBlender`): every output frame is the weighted mean of the windows
covering it. A window's weight ramps linearly up over its overlap with the previous window and down
over its overlap with the next one (a crossfade: for two windows overlapping by L frames the weights
at the k-th shared frame are (L - k)/(L + 1) and (k + 1)/(L + 1), summing to 1), and is 1 elsewhere.
So the output moves from one window to the next in L + 1 small steps instead of one jump.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..config import VAE_TEMPORAL_COMPRESSION
from ..errors import FlashVideoInputError
from ..layout import check_num_frames

DEFAULT_WINDOW = 49
DEFAULT_OVERLAP = 8


@dataclass(frozen=True)
class Window:
    """Frames [start, stop) of the clip, run through the model as `length` frames (4k+1).

    length - (stop - start) copies of frame stop - 1 are appended before the model and trimmed after.
    overlap_before / overlap_after: frames shared with the previous / next window (0 at the clip ends).
    """

    start: int
    stop: int
    length: int
    overlap_before: int = 0
    overlap_after: int = 0

    @property
    def num_frames(self) -> int:
        """Clip frames in this window (without padding)."""
        return self.stop - self.start

    @property
    def padding(self) -> int:
        """Repeated last frames appended to reach a 4k+1 length."""
        return self.length - self.num_frames


def plan_windows(num_frames: int, window: int = DEFAULT_WINDOW, overlap: int = DEFAULT_OVERLAP,
                 align: int = 1) -> list[Window]:
    """Windows covering frames 0..num_frames-1 in order; each length is 4k+1 and at most `window`.

    num_frames: clip length (>= 1). window: 4k+1 frames per model call (49 trained). overlap: the
    minimum number of frames consecutive windows share (0 <= overlap <= window - align). align: every
    window starts at a multiple of it (the latent blends use the VAE's 4: window latents then share
    whole latent frames); the last window may then run past the clip's end, padded with its last
    frame. align=1 is the plain plan. Raises FlashVideoInputError for invalid values.
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise FlashVideoInputError(f"num_frames={num_frames!r} must be a positive integer (the clip has no frames).")
    check_num_frames(window, "window")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < window:
        raise FlashVideoInputError(
            f"overlap={overlap!r} must be an integer from 0 to {window - 1} (less than window={window})."
        )
    if window - overlap < align:
        raise FlashVideoInputError(
            f"overlap={overlap} is too large for window={window} with latent blending: windows start on the "
            f"VAE's {align}-frame latent grid, so they must advance by at least {align} frames; "
            f"use overlap <= {window - align}."
        )
    if num_frames <= window:
        return [Window(0, num_frames, _next_4k1(num_frames))]
    span = -(-(num_frames - window) // align)  # in units of `align` frames: the last window's start
    count = 1 + -(-span // ((window - overlap) // align))
    starts = [align * round(i * span / (count - 1)) for i in range(count)]
    stops = [min(s + window, num_frames) for s in starts]
    return [
        Window(
            start, stop, window,
            overlap_before=stops[i - 1] - start if i > 0 else 0,
            overlap_after=stop - starts[i + 1] if i + 1 < count else 0,
        )
        for i, (start, stop) in enumerate(zip(starts, stops, strict=True))
    ]


def blend_weights(window: Window) -> torch.Tensor:
    """Weights (window.num_frames,) float32 of a window's frames: linear ramps over its overlaps, else 1.

    Frame j gets min(1, (j + 1) / (overlap_before + 1), (n - j) / (overlap_after + 1)); always > 0.
    """
    n = window.num_frames
    j = torch.arange(n, dtype=torch.float32)
    up = (j + 1) / (window.overlap_before + 1)
    down = (n - j) / (window.overlap_after + 1)
    return torch.minimum(torch.ones(n), torch.minimum(up, down))


class WindowBlender:
    """Streams blended frames: push each window's output in plan order, get finished frames back in order.

    It holds only the frames the next window will still touch (one overlap), as float32 sums.
    """

    def __init__(self, windows: Sequence[Window]):
        self.windows = list(windows)
        self._index = 0
        self._first = 0  # clip index of the first held frame
        self._sums: torch.Tensor | None = None  # (held, ...) weighted sums
        self._weights = torch.zeros(0)  # (held,) sums of weights

    def push(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """Add the next window's output (num_frames, ...) and return the frames now final, each (...)."""
        if self._index >= len(self.windows):
            raise FlashVideoInputError(f"all {len(self.windows)} windows were already pushed.")
        window = self.windows[self._index]
        if frames.shape[0] != window.num_frames:
            raise FlashVideoInputError(
                f"window {self._index} ({window.start}..{window.stop - 1}) needs {window.num_frames} frames; "
                f"got {frames.shape[0]}."
            )
        weights = blend_weights(window)
        weighted = frames.float() * weights.view(-1, *([1] * (frames.ndim - 1)))
        held = 0 if self._sums is None else self._sums.shape[0]
        offset = window.start - self._first
        if offset > held or (self._sums is not None and frames.shape[1:] != self._sums.shape[1:]):
            raise FlashVideoInputError(f"window {self._index} does not continue the previous one.")
        grow = window.stop - (self._first + held)
        if self._sums is None:
            self._sums = weighted.new_zeros((grow, *frames.shape[1:]))
        elif grow > 0:
            self._sums = torch.cat([self._sums, weighted.new_zeros((grow, *frames.shape[1:]))])
        self._weights = torch.cat([self._weights, torch.zeros(max(grow, 0))])
        self._sums[offset : offset + window.num_frames] += weighted
        self._weights[offset : offset + window.num_frames] += weights
        self._index += 1
        final_until = self.windows[self._index].start if self._index < len(self.windows) else window.stop
        return self._emit(final_until - self._first)

    @property
    def done(self) -> bool:
        """True when every planned window has been pushed (and so every frame returned)."""
        return self._index == len(self.windows)

    def _emit(self, count: int) -> list[torch.Tensor]:
        out = [self._sums[i] / self._weights[i] for i in range(count)]
        self._sums = self._sums[count:].clone()
        self._weights = self._weights[count:].clone()
        self._first += count
        return out


def _next_4k1(num_frames: int) -> int:
    step = VAE_TEMPORAL_COMPRESSION
    return ((num_frames - 1 + step - 1) // step) * step + 1
