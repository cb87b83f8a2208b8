"""Write frames into an H.264 file with the ffmpeg binary of imageio-ffmpeg, the source's audio muxed in.

Frames stream into H.264 (libx264, yuv420p, CRF 17, BT.709) through `atomic.atomic_output`: a
failure or interruption leaves no file. yuv420p needs even sizes; an odd size is written as yuv444p
instead (exact size kept, but some players, browsers among them, cannot play 4:4:4). Frame i is
written at i / fps and the audio stream of `audio_from` is copied as stored, so the two stay in sync
with frames read by iter_frames (at a constant rate from the file's start). The audio is copied
unchanged when the container accepts it; otherwise (e.g. PCM into .mp4) it is re-encoded as AAC 192k
(use .mov or .mkv to keep PCM as is).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from ..atomic import Reservation, atomic_output, reserved_output, signals_held
from ..errors import FlashVideoInputError
from .ffmpeg_run import read_header
from .fps import check_fps
from .paths import check_output_path
from .pixels import to_rgb_uint8

logger = logging.getLogger(__name__)

DEFAULT_CRF = 17
_MP4_AUDIO = {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"}
_COPYABLE_AUDIO = {".mp4": _MP4_AUDIO, ".m4v": _MP4_AUDIO, ".mov": _MP4_AUDIO | {"pcm_*"}, ".mkv": {"*"}}

BT709_FILTER = "scale=out_color_matrix=bt709:out_range=tv"
BT709_TAGS = ("-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv")
"""RGB -> YUV with the BT.709 matrix, tagged so: players assume BT.709 for HD, and an untagged
BT.601 encode (ffmpeg's default) shows shifted colours in them."""


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float | Fraction,
    audio_from: str | os.PathLike | None = None,
    overwrite: bool = True,
    crf: int = DEFAULT_CRF,
    reservation: Reservation | None = None,
) -> Path:
    """Stream `frames` (each uint8 (H, W, 3); see to_rgb_uint8 for other kinds) into an H.264 file at `fps`.

    audio_from: a media file whose first audio stream is muxed in (nothing if it has none).
    The file appears only when complete (atomic); with overwrite=False an existing `path` raises
    FileExistsError first, and so does a `path` another live run is writing: the name is claimed
    (atomic.reserved_output) before the first frame is pulled, so before a lazy `frames` (enhance)
    computes anything. reservation: a claim on `path` made earlier by the caller (with the same
    overwrite). Returns `path`. Raises FlashVideoInputError for bad arguments or no frames, OSError
    if ffmpeg fails.
    """
    target = check_output_path(path, overwrite)
    if reservation is not None and (reservation.target != target or reservation.overwrite != overwrite):
        raise ValueError(f"reservation {reservation} is not a claim on {target} with overwrite={overwrite}.")
    rate = check_fps(fps)
    if not 0 <= crf <= 51:
        raise FlashVideoInputError(f"crf={crf!r} must be 0-51 (lower is better quality; default {DEFAULT_CRF}).")
    audio_args: list[str] = []
    if audio_from is not None:
        audio_args = _audio_args(Path(audio_from), target.suffix.lower())
    with contextlib.ExitStack() as stack:
        claim = reservation or stack.enter_context(reserved_output(target, overwrite))
        iterator = iter(frames)
        first = next(iterator, None)
        if first is None:
            raise FlashVideoInputError(f"no frames to write to {target}.")
        _encode(claim, to_rgb_uint8(first), iterator, rate, crf, audio_args)
    return target


def _encode(claim: Reservation, first: np.ndarray, rest: Iterator, rate: Fraction, crf: int,
            audio_args: list[str]) -> None:
    """Encode `first` and `rest` into the claimed file (H.264 at `rate`, BT.709) and publish it."""
    target = claim.target
    height, width = first.shape[:2]
    pix_fmt = "yuv420p"
    if height % 2 or width % 2:
        pix_fmt = "yuv444p"
        logger.warning("%s: odd size %dx%d written as yuv444p (some players need even sizes).", target, height, width)
    with atomic_output(target, overwrite=claim.overwrite, reservation=claim) as tmp:
        cmd = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
            "-s", f"{width}x{height}", "-r", str(rate), "-i", "-", *audio_args[:2],
            "-map", "0:v:0", *audio_args[2:], "-vf", BT709_FILTER, "-c:v", "libx264", "-pix_fmt", pix_fmt,
            *BT709_TAGS, "-crf", str(crf), "-movflags", "+faststart", str(tmp),
        ]
        _run_writer(cmd, first, rest, (height, width), target)


def _run_writer(cmd: list[str], first: np.ndarray, rest: Iterator, size: tuple[int, int], target: Path) -> None:
    """Feed frames to ffmpeg's stdin; kill it on any error (the caller's atomic_output then cleans up)."""
    with tempfile.TemporaryFile() as log:
        process = None
        try:
            # An interrupt inside Popen would leave an ffmpeg nobody kills, writing the file. The held
            # signal is delivered as the block ends, so that must be inside the try that kills ffmpeg.
            with signals_held():
                process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
            count = 0
            frame = first
            while frame is not None:
                if frame.shape[:2] != size:
                    raise FlashVideoInputError(
                        f"frame {count} is {frame.shape[0]}x{frame.shape[1]}; frames of {target} must all be "
                        f"{size[0]}x{size[1]}."
                    )
                process.stdin.write(frame.tobytes())
                count += 1
                nxt = next(rest, None)
                frame = None if nxt is None else to_rgb_uint8(nxt)
            process.stdin.close()
            code = process.wait()
        except BrokenPipeError:
            code = process.wait() or -1
        except BaseException:
            if process is not None:
                process.kill()
                process.wait()
            raise
        if code != 0:
            log.seek(0)
            message = log.read().decode(errors="replace").strip().splitlines()
            raise OSError(f"ffmpeg failed writing {target} (exit {code}): {' | '.join(message[-3:])}")


def _audio_args(source: Path, suffix: str) -> list[str]:
    """[-i source, -map ..., -c:a ...] for the first audio stream of `source`, or [] without audio.

    Reads `source`'s header only (one quick ffmpeg run). Raises FlashVideoInputError if `source`
    cannot be read or has no video stream.
    """
    codec = read_header(source).audio_codec
    if codec is None:
        return []
    allowed = _COPYABLE_AUDIO[suffix]
    copy = "*" in allowed or codec in allowed or ("pcm_*" in allowed and codec.startswith("pcm_"))
    if not copy:
        logger.warning("%s: audio codec %s cannot go into %s unchanged; re-encoding it as AAC.", source, codec, suffix)
    return ["-i", str(source), "-map", "1:a:0", *(["-c:a", "copy"] if copy else ["-c:a", "aac", "-b:a", "192k"])]
