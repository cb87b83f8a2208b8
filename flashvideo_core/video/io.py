"""Read and write video files with the ffmpeg binary of imageio-ffmpeg (no other video dependency).

Reading (`probe_video`, `iter_frames`) streams frames as uint8 RGB (H, W, 3) whatever the source
stores: an alpha channel is dropped (colours kept as stored, not composited), grayscale is expanded
to three equal channels, 10/12/16-bit samples are reduced to 8 bits; each case is logged once.
Still images (PNG, JPEG, ...) read as one-frame videos. Rotation metadata (phone clips) is applied
by ffmpeg, and non-square pixels (a sample aspect ratio other than 1:1: anamorphic, DV, some broadcast
files) are resampled to square ones at the displayed shape, so sizes and frames are the displayed ones
and everything written from them (square pixels) shows at the same shape as the source.

Timing: frames are read at one constant rate, the stream's stored average `fps` (ffmpeg's fps
filter from the file's start), so frame i is the picture shown at i / fps. A variable-frame-rate
clip (phones) has frames repeated where the source held a picture longer and dropped where it ran
faster; a video stream that starts after the audio gets its first frame repeated back to the start.
write_video writes frame i at i / fps and copies the audio as stored, so the two stay in sync
(written at the average rate as stored, the frames of a variable-rate clip drifted from the audio,
by 0.28 s over 1.5 s). Resampling on read is the simple robust choice: the written file is plain
constant rate, the model sees evenly spaced frames, and probe_video counts through the same filter,
so its num_frames is exactly what iter_frames gives (a note says how many were repeated or dropped).

Writing (`write_video`) streams frames into H.264 (libx264, yuv420p, CRF 17) through
`atomic.atomic_output`: a failure or interruption leaves no file. yuv420p needs even sizes; an odd
size is written as yuv444p instead (exact size kept, but some players, browsers among them, cannot
play 4:4:4). The audio stream of `audio_from` is copied unchanged when the container accepts it;
otherwise (e.g. PCM into .mp4) it is re-encoded as AAC 192k (use .mov or .mkv to keep PCM as is).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..atomic import Reservation, atomic_output, reserved_output, signals_held
from ..errors import FlashVideoInputError

logger = logging.getLogger(__name__)


class _ExpectedResizeFilter(logging.Filter):
    """Drops imageio-ffmpeg's warning that the frames read differ in size from the stored ones: that is
    rotation or square-pixel resampling, both done on purpose and noted once in VideoInfo.notes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("The frame size for reading")


logging.getLogger("imageio_ffmpeg").addFilter(_ExpectedResizeFilter())

OUTPUT_CONTAINERS = {".mp4", ".m4v", ".mov", ".mkv"}
"""Output file types write_video accepts (all hold H.264)."""

_MP4_AUDIO = {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"}
_COPYABLE_AUDIO = {".mp4": _MP4_AUDIO, ".m4v": _MP4_AUDIO, ".mov": _MP4_AUDIO | {"pcm_*"}, ".mkv": {"*"}}
_NTSC_BASES = (24, 30, 48, 60, 120, 240)
DEFAULT_CRF = 17


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
    """VideoInfo of `path`; decodes the video once to count exactly the frames iter_frames gives.

    The count is of frames at the constant rate `fps` (see the module docstring): for a variable
    rate clip it differs from the number of stored frames, and a note says so. Raises
    FlashVideoInputError naming the file if it is missing, unreadable, has no video stream or has
    zero frames.
    """
    src = Path(path)
    if src.is_dir():
        raise FlashVideoInputError(f"{src} is a folder; give one video file (image sequences: make a video first).")
    if not src.is_file():
        raise FlashVideoInputError(f"video file not found: {src}")
    meta = _read_meta(src)
    pix_fmt = meta.get("pix_fmt", "").split("(")[0].strip()
    fps, notes = _stored_fps(src, meta)
    notes += _format_notes(pix_fmt)
    stored_width, stored_height = meta["size"]
    pixel_aspect = _pixel_aspect(src, meta)
    width, height = square_pixel_size(stored_width, stored_height, pixel_aspect)
    if (width, height) != (stored_width, stored_height):
        notes.append(f"non-square pixels (aspect {pixel_aspect.numerator}:{pixel_aspect.denominator}) resampled "
                     f"to square: {stored_width}x{stored_height} stored, {width}x{height} displayed")
    count = _count_frames(src, read_filter(fps, (width, height), (stored_width, stored_height)))
    if count.repeated or count.dropped:
        notes.append(_resample_note(count, fps))
    return VideoInfo(
        path=src, width=width, height=height, fps=fps, num_frames=count.frames_out,
        duration=float(meta.get("duration") or count.seconds or 0.0), has_audio="audio_codec" in meta,
        audio_codec=meta.get("audio_codec"), pix_fmt=pix_fmt, has_alpha=_has_alpha(pix_fmt),
        is_gray=_is_gray(pix_fmt), bit_depth=_bit_depth(pix_fmt), notes=tuple(notes), pixel_aspect=pixel_aspect,
        stored_width=stored_width, stored_height=stored_height,
    )


def read_filter(fps: Fraction, size: tuple[int, int], stored_size: tuple[int, int]) -> str:
    """The ffmpeg filter chain iter_frames reads through (and probe_video counts through).

    fps: frames at exactly `fps` from the file's start (frame i at i / fps): frames repeated or
    dropped where the stored timestamps are irregular, the first one repeated back to 0 where the
    video starts after the audio. size/stored_size: (width, height) displayed and stored; if they
    differ, frames are resampled to the displayed size with square pixels.
    """
    chain = f"fps=fps={fps.numerator}/{fps.denominator}:start_time=0"
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


def iter_frames(path: str | os.PathLike, info: VideoInfo | None = None) -> Iterator[np.ndarray]:
    """Stream the frames of `path` as uint8 RGB arrays (H, W, 3), in order, one in memory at a time.

    `info` (from probe_video) saves a second probe; its notes are logged once. Raises
    FlashVideoInputError naming the file if it cannot be read.
    """
    import imageio_ffmpeg

    info = info or probe_video(path)
    for note in info.notes:
        logger.warning("%s: %s", info.path, note)
    # The filter keeps frame i at i / fps (the rate it is written back at); passthrough stops ffmpeg's
    # own rate conversion after it, so the count is exactly probe_video's.
    stored = (info.stored_width or info.width, info.stored_height or info.height)
    output = ["-map", "0:v:0", "-vf", read_filter(info.fps, (info.width, info.height), stored),
              "-fps_mode", "passthrough"]
    reader = imageio_ffmpeg.read_frames(str(info.path), pix_fmt="rgb24", output_params=output)
    try:
        meta = next(reader)
        width, height = meta["size"]
        if (width, height) != (info.width, info.height):
            raise FlashVideoInputError(
                f"{info.path} decodes at {width}x{height}, not the {info.width}x{info.height} probed; "
                "was the file changed while reading?"
            )
        for raw in reader:
            yield np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3).copy()
    except (OSError, RuntimeError) as exc:
        raise FlashVideoInputError(f"could not read frames of {info.path}: {_last_line(exc)}") from None
    finally:
        reader.close()


def to_rgb_uint8(frame) -> np.ndarray:
    """One frame from anywhere -> uint8 RGB (H, W, 3).

    Accepts (H, W), (H, W, 1) gray (expanded), (H, W, 3) RGB, (H, W, 4) RGBA (alpha dropped);
    uint8, uint16 (/257) or float in [0, 1]. Anything else raises FlashVideoInputError.
    """
    array = np.asarray(frame)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise FlashVideoInputError(f"a frame must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {array.shape}.")
    array = array[:, :, :3] if array.shape[2] == 4 else array
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.uint16:
        return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise FlashVideoInputError(f"frame dtype {array.dtype} is not supported (use uint8, uint16 or float 0-1).")


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
    import imageio_ffmpeg

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


BT709_FILTER = "scale=out_color_matrix=bt709:out_range=tv"
BT709_TAGS = ("-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv")
"""RGB -> YUV with the BT.709 matrix, tagged so: players assume BT.709 for HD, and an untagged
BT.601 encode (ffmpeg's default) shows shifted colours in them."""


def check_output_path(path: str | os.PathLike, overwrite: bool = True) -> Path:
    """`path` as a Path if write_video can write it; else FlashVideoInputError / FileExistsError.

    Call it before expensive work so a bad output name fails at once.
    """
    target = Path(path)
    if target.suffix.lower() not in OUTPUT_CONTAINERS:
        raise FlashVideoInputError(
            f"output {target} must end in one of {', '.join(sorted(OUTPUT_CONTAINERS))} (H.264 video)."
        )
    if target.is_dir():
        raise FlashVideoInputError(f"output {target} is a folder; give a file name such as {target / 'out.mp4'}.")
    check_writable_folder(target.parent, f"output {target}")
    if not overwrite and target.exists():
        raise FileExistsError(f"{target} already exists; choose another output name (or allow overwriting).")
    return target


def check_writable_folder(folder: str | os.PathLike, what: str) -> None:
    """Raise FlashVideoInputError unless `folder` is (or can be created as) a folder this user can write."""
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None:
        return
    if not existing.is_dir():
        raise FlashVideoInputError(f"{what}: {existing} is a file, so it cannot hold the folder {folder}.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FlashVideoInputError(f"{what}: cannot write into {existing} (permission denied); choose another place.")


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
    """[-i source, -map ..., -c:a ...] for the first audio stream of `source`, or [] without audio."""
    meta = _read_meta(source)
    codec = meta.get("audio_codec")
    if codec is None:
        return []
    allowed = _COPYABLE_AUDIO[suffix]
    copy = "*" in allowed or codec in allowed or ("pcm_*" in allowed and codec.startswith("pcm_"))
    if not copy:
        logger.warning("%s: audio codec %s cannot go into %s unchanged; re-encoding it as AAC.", source, codec, suffix)
    return ["-i", str(source), "-map", "1:a:0", *(["-c:a", "copy"] if copy else ["-c:a", "aac", "-b:a", "192k"])]


def _read_meta(src: Path) -> dict:
    """imageio-ffmpeg's header dict of `src` (size, fps, pix_fmt, audio_codec, duration), codec names cleaned."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(src), pix_fmt="rgb24")
    try:
        meta = next(reader)
        for key in ("codec", "audio_codec"):
            if key in meta:
                meta[key] = meta[key].rstrip(",")
        return meta
    except Exception as exc:
        if "does not contain any stream" in str(exc):
            raise FlashVideoInputError(f"{src} has no video stream (an audio-only file?).") from None
        raise FlashVideoInputError(f"could not read {src} as a video or image: {_last_line(exc)}") from None
    finally:
        reader.close()


def _stored_fps(src: Path, meta: dict) -> tuple[Fraction, list[str]]:
    """(frame rate of `src`, notes): the stored average rate, or frames / seconds where none is stored."""
    fps = _exact_fps(meta.get("fps") or 0.0)
    if fps:
        return fps, []
    stored = _count_frames(src, "null")
    seconds = Fraction(stored.seconds).limit_denominator(1000)
    fps = Fraction(stored.frames_out) / seconds if stored.frames_out and seconds else Fraction(8)
    return fps, [f"frame rate not stored; using {float(fps):g} fps"]


def _format_notes(pix_fmt: str) -> list[str]:
    """What iter_frames changes about frames stored as `pix_fmt` (alpha, gray, bit depth)."""
    notes = []
    if _has_alpha(pix_fmt):
        notes.append(f"alpha channel dropped ({pix_fmt}; colours kept as stored, not composited)")
    if _is_gray(pix_fmt):
        notes.append(f"grayscale frames ({pix_fmt}) expanded to RGB")
    if _bit_depth(pix_fmt) > 8:
        notes.append(f"{_bit_depth(pix_fmt)}-bit frames ({pix_fmt}) reduced to 8-bit")
    return notes


@dataclass(frozen=True)
class _FrameCount:
    """Frames of a decode through a filter chain: out (what a reader gets), in (stored), and seconds."""

    frames_out: int
    frames_in: int
    repeated: int
    dropped: int
    seconds: float


_FPS_STATS = re.compile(r"(\d+) frames in, (\d+) frames out; (\d+) frames dropped, (\d+) frames duplicated")
_PROGRESS = re.compile(r"frame=\s*(\d+)\b.*?time=\s*(-?[\d:.]+)")


def _count_frames(src: Path, video_filter: str) -> _FrameCount:
    """Decode the first video stream of `src` through `video_filter` (as iter_frames reads it) and count.

    Raises FlashVideoInputError naming `src` if ffmpeg fails or no frame comes out.
    """
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "verbose", "-i", str(src),
           "-map", "0:v:0", "-vf", video_filter, "-fps_mode", "passthrough", "-f", "null", "-"]
    done = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    log = done.stderr.replace("\r", "\n")
    if done.returncode != 0:
        errors = [line for line in log.splitlines() if line.strip() and not line.startswith("frame=")]
        raise FlashVideoInputError(f"could not decode {src}: {errors[-1].strip() if errors else 'ffmpeg failed'}")
    progress = _PROGRESS.findall(log)
    frames = int(progress[-1][0]) if progress else 0
    if not frames:
        raise FlashVideoInputError(f"{src} has no video frames (zero-frame file).")
    stats = _FPS_STATS.findall(log)
    frames_in, _, dropped, repeated = (int(v) for v in stats[-1]) if stats else (frames, frames, 0, 0)
    return _FrameCount(frames, frames_in, repeated, dropped, _seconds(progress[-1][1]))


def _seconds(clock: str) -> float:
    """ffmpeg's progress time (HH:MM:SS.ss, or a negative/odd value before the first frame) in seconds."""
    try:
        hours, minutes, seconds = clock.split(":")
        return max(0.0, int(hours) * 3600 + int(minutes) * 60 + float(seconds))
    except ValueError:
        return 0.0


def _resample_note(count: _FrameCount, fps: Fraction) -> str:
    return (f"variable frame rate (or video starting after the audio): {count.frames_in} stored frames read as "
            f"{count.frames_out} at a constant {float(fps):g} fps ({count.repeated} repeated, {count.dropped} "
            "dropped) so that every frame stays at its time and in sync with the audio")


_SAR = re.compile(r"\[SAR (\d+):(\d+) DAR")


def _pixel_aspect(src: Path, meta: dict) -> Fraction:
    """Sample aspect ratio (pixel width / height) of `src`'s first video stream, the one read, as displayed; 1 if
    not stored.

    ffmpeg reports it for the stored orientation; a 90/270 degree rotation (meta size = the stored
    size swapped) turns a wide pixel into a tall one.
    """
    import imageio_ffmpeg

    header = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(src)],
                            capture_output=True, text=True, errors="replace").stderr
    first_video = next((line for line in header.splitlines() if re.search(r"Stream #\d+:\d+.*: Video: ", line)), "")
    match = _SAR.search(first_video)  # not a later stream's (e.g. an attached cover picture)
    if match is None or not int(match.group(1)) or not int(match.group(2)):
        return Fraction(1)  # none stored, or 0:1 ("unknown")
    aspect = Fraction(int(match.group(1)), int(match.group(2)))
    source_size = tuple(meta.get("source_size") or meta["size"])
    rotated = tuple(meta["size"]) == source_size[::-1] and source_size[0] != source_size[1]
    return 1 / aspect if rotated else aspect


MIN_FPS, MAX_FPS = 0.01, 1000
"""Frame rates a written file may have: slower than one frame in 100 s is a slide show, not a video, and
H.264 timing (1/1001 steps) cannot hold it; faster than 1000 fps no player shows."""


def check_fps(fps) -> Fraction:
    """fps as an exact Fraction (see _exact_fps); FlashVideoInputError unless MIN_FPS <= fps <= MAX_FPS."""
    rate = _exact_fps(fps)
    if not MIN_FPS <= float(rate) <= MAX_FPS:
        raise FlashVideoInputError(f"fps={fps!r} must be a frame rate from {MIN_FPS:g} to {MAX_FPS:g} "
                                   "(the source's rate, or 8 for FlashVideo's own 49-frame clips).")
    return rate


def _exact_fps(fps) -> Fraction:
    """fps as a Fraction; values within 0.01 of an NTSC rate (e.g. 29.97) become n*1000/1001 exactly."""
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


def _has_alpha(pix_fmt: str) -> bool:
    return pix_fmt.startswith(("yuva", "gbrap", "ya")) or any(
        key in pix_fmt for key in ("rgba", "bgra", "argb", "abgr")
    )


def _is_gray(pix_fmt: str) -> bool:
    return pix_fmt.startswith(("gray", "ya", "monob", "monow"))


def _bit_depth(pix_fmt: str) -> int:
    """Bits per sample of an ffmpeg pixel format name (8 unless the name says more)."""
    for pattern, bits in ((r"(rgb|bgr)24", 8), (r"(rgb|bgr)48", 16), (r"(rgba|bgra)64", 16), (r"^ya16", 16)):
        if re.search(pattern, pix_fmt):
            return bits
    match = re.search(r"(\d+)(le|be)?$", pix_fmt)
    depth = int(match.group(1)) if match else 8
    return depth if 8 < depth <= 32 else 8


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
