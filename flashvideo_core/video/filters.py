"""The ffmpeg filter chain frames are read through: one constant rate, square pixels.

Timing: frames are read at one constant rate, the stream's stored average `fps` (ffmpeg's fps
filter from the file's start), so frame i is the picture shown at i / fps. A variable-frame-rate
clip (phones) has frames repeated where the source held a picture longer and dropped where it ran
faster; a video stream that starts after the audio gets its first frame repeated back to the start.
Non-square pixels (a sample aspect ratio other than 1:1: anamorphic, DV, some broadcast files) are
resampled to square ones at the displayed shape.
"""

from __future__ import annotations

from fractions import Fraction


def fps_filter(fps: Fraction) -> str:
    """The constant-rate part of the read: frames at exactly `fps` from the file's start (frame i at i / fps).

    Frames are repeated or dropped where the stored timestamps are irregular, the first one repeated
    back to 0 where the video starts after the audio. It alone sets how many frames a read gives.
    """
    return f"fps=fps={fps.numerator}/{fps.denominator}:start_time=0"


def read_filter(fps: Fraction, size: tuple[int, int], stored_size: tuple[int, int]) -> str:
    """The ffmpeg filter chain iter_frames reads through: fps_filter(fps), then square pixels.

    size/stored_size: (width, height) displayed and stored; if they differ, frames are resampled to
    the displayed size with square pixels (which changes no frame count).
    """
    chain = fps_filter(fps)
    if size != stored_size:
        chain += f",scale={size[0]}:{size[1]}:flags=lanczos,setsar=1"
    return chain


def square_pixel_size(width: int, height: int, pixel_aspect: Fraction) -> tuple[int, int]:
    """(width, height) at which frames of width x height, with pixels `pixel_aspect` wide per 1 tall, show
    with square pixels.

    One edge grows and none shrinks (no detail is thrown away): wide pixels widen the frame, tall pixels
    heighten it. The grown edge is rounded to the nearest even number; a change under one pixel keeps
    the size. 1440x1080 at 4:3 -> 1920x1080; 720x480 at 8:9 -> 720x540.
    """
    if pixel_aspect == 1:
        return width, height
    wide = pixel_aspect > 1
    edge = width if wide else height
    exact = edge * (pixel_aspect if wide else 1 / pixel_aspect)
    if exact - edge < 1:
        return width, height
    grown = max(edge + 1, 2 * round(exact / 2))
    return (grown, height) if wide else (width, grown)
