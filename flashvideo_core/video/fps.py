"""Frame rates as exact fractions: NTSC rates (29.97 -> 30000/1001) and the range a written file may have."""

from __future__ import annotations

from fractions import Fraction

from ..errors import FlashVideoInputError

_NTSC_BASES = (24, 30, 48, 60, 120, 240)

MIN_FPS, MAX_FPS = 0.01, 1000
"""Frame rates a written file may have: slower than one frame in 100 s is a slide show, not a video, and
H.264 timing (1/1001 steps) cannot hold it; faster than 1000 fps no player shows."""


def check_fps(fps) -> Fraction:
    """fps (a number or Fraction) as an exact Fraction (see exact_fps); FlashVideoInputError unless
    MIN_FPS <= fps <= MAX_FPS."""
    rate = exact_fps(fps)
    if not MIN_FPS <= float(rate) <= MAX_FPS:
        raise FlashVideoInputError(f"fps={fps!r} must be a frame rate from {MIN_FPS:g} to {MAX_FPS:g} "
                                   "(the source's rate, or 8 for FlashVideo's own 49-frame clips).")
    return rate


def exact_fps(fps) -> Fraction:
    """fps (a number, or a Fraction kept as is) as a Fraction; values within 0.01 of an NTSC rate (e.g. 29.97)
    become n*1000/1001 exactly, others the nearest fraction with a denominator up to 1001. Raises
    FlashVideoInputError if fps is not a number."""
    if isinstance(fps, Fraction):
        return fps
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise FlashVideoInputError(f"fps={fps!r} must be a number.") from None
    for base in _NTSC_BASES:
        if abs(value - base * 1000 / 1001) < 0.01:
            return Fraction(base * 1000, 1001)
    return Fraction(value).limit_denominator(1001)
