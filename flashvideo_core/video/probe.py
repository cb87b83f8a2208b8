"""What a video file holds, as iter_frames will read it: probe_video and VideoInfo.

One ffmpeg run (ffmpeg_run.decode_probe) gives it all: the header (pixel format, stored frame rate,
audio, duration, the size and sample aspect ratio as displayed: rotation applied) and the exact
number of frames read at the constant rate (filters.fps_filter). Only a file that stores no frame
rate takes a second run: its rate is frames / seconds of the first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from ..errors import FlashVideoInputError
from .ffmpeg_log import FrameCount, InputHeader
from .ffmpeg_run import DecodeProbe, decode_probe
from .filters import fps_filter, square_pixel_size
from .fps import exact_fps
from .pixels import bit_depth, format_notes, has_alpha, is_gray


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds (sizes as displayed, after rotation).

    fps: frames per second (NTSC rates as exact fractions, e.g. 30000/1001); num_frames: exact count
    (decoded); duration: seconds (0.0 if unknown); pix_fmt: ffmpeg's source pixel format;
    notes: conversions iter_frames applies (alpha dropped, gray expanded, bit depth reduced, pixels made
    square); pixel_aspect: the source's sample aspect ratio as displayed (pixel width / height; 1 when
    square or not stored), stored_width/stored_height: the frame size before it was made square.
    """

    path: Path
    width: int
    height: int
    fps: Fraction
    num_frames: int
    duration: float
    has_audio: bool
    audio_codec: str | None
    pix_fmt: str
    has_alpha: bool
    is_gray: bool
    bit_depth: int
    notes: tuple[str, ...] = field(default=())
    pixel_aspect: Fraction = Fraction(1)
    stored_width: int = 0
    stored_height: int = 0


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """VideoInfo of the video or image file `path`; decodes the video once to count exactly the frames
    iter_frames gives.

    The count is of frames at the constant rate `fps` (see filters): for a variable rate clip it
    differs from the number of stored frames, and a note says so. One ffmpeg process (two if the file
    stores no frame rate). Raises FlashVideoInputError naming the file if it is missing, a folder,
    unreadable, has no video stream or has zero frames.
    """
    src = Path(path)
    if src.is_dir():
        raise FlashVideoInputError(f"{src} is a folder; give one video file (image sequences: make a video first).")
    if not src.is_file():
        raise FlashVideoInputError(f"video file not found: {src}")
    probe = decode_probe(src, _count_filter)
    fps, notes = exact_fps(probe.header.fps), []
    if not probe.header.fps:
        fps = _rate_of(probe.count)
        notes = [f"frame rate not stored; using {float(fps):g} fps"]
        probe = decode_probe(src, lambda header: fps_filter(fps))
    return _info(src, probe, fps, notes)


def _count_filter(header: InputHeader) -> str:
    """The filter the probe decodes through: the read's constant rate, or none if no rate is stored."""
    return fps_filter(exact_fps(header.fps)) if header.fps else "null"


def _rate_of(stored: FrameCount) -> Fraction:
    """Frame rate of a file that stores none: its frames / seconds (8 if either is unknown)."""
    seconds = Fraction(stored.seconds).limit_denominator(1000)
    return Fraction(stored.frames_out) / seconds if stored.frames_out and seconds else Fraction(8)


def _info(src: Path, probe: DecodeProbe, fps: Fraction, notes: list[str]) -> VideoInfo:
    """VideoInfo from a decode of `src` through fps_filter(fps); notes: what is already to be said."""
    header, count = probe.header, probe.count
    pix_fmt = header.pix_fmt
    notes = notes + format_notes(pix_fmt)
    stored_width, stored_height = header.size
    width, height = square_pixel_size(stored_width, stored_height, header.pixel_aspect)
    if (width, height) != (stored_width, stored_height):
        aspect = header.pixel_aspect
        notes.append(f"non-square pixels (aspect {aspect.numerator}:{aspect.denominator}) resampled "
                     f"to square: {stored_width}x{stored_height} stored, {width}x{height} displayed")
    if count.repeated or count.dropped:
        notes.append(_resample_note(count, fps))
    return VideoInfo(
        path=src, width=width, height=height, fps=fps, num_frames=count.frames_out,
        duration=float(header.duration or count.seconds or 0.0), has_audio=header.audio_codec is not None,
        audio_codec=header.audio_codec, pix_fmt=pix_fmt, has_alpha=has_alpha(pix_fmt), is_gray=is_gray(pix_fmt),
        bit_depth=bit_depth(pix_fmt), notes=tuple(notes), pixel_aspect=header.pixel_aspect,
        stored_width=stored_width, stored_height=stored_height,
    )


def _resample_note(count: FrameCount, fps: Fraction) -> str:
    """The note for a read that repeats or drops stored frames to keep the constant rate `fps`."""
    return (f"variable frame rate (or video starting after the audio): {count.frames_in} stored frames read as "
            f"{count.frames_out} at a constant {float(fps):g} fps ({count.repeated} repeated, {count.dropped} "
            "dropped) so that every frame stays at its time and in sync with the audio")
