"""Read what ffmpeg prints on stderr: the header of input #0 and the frame counts of a decode.

Pure text parsing (no process is started here), so each rule can be tested on a printed log. The
rules follow imageio-ffmpeg's header parser where this package used to rely on it (fps as printed,
the pix_fmt field, the audio codec name, the duration), and also read ffmpeg's verbose form, which
inserts fields such as "1 reference frame" into a stream line. Only the input header is read for
sizes: ffmpeg prints it before any of its threads start, while the output header of a decode can
have other threads' log lines spliced into it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class InputHeader:
    """What ffmpeg's header says of input #0: its first video stream and first audio stream.

    pix_fmt: the source pixel format name ("yuv420p", "rgba", "" if not printed); fps: the stored
    average rate as printed (a float such as 29.97; 0.0 when none is printed); duration: seconds (0.0
    if N/A); has_video: whether a video stream is listed; audio_codec: name of the first audio
    stream's codec ("aac", "pcm_s16le"), None without audio. size: (width, height) and pixel_aspect:
    the sample aspect ratio (pixel width / height; 1 when none is stored or it is 0:1, "unknown"),
    both as displayed: a 90/270 degree display rotation (which ffmpeg applies when decoding) swaps
    the size and turns a wide pixel into a tall one. (0, 0) when no size is printed.
    """

    pix_fmt: str
    fps: float
    duration: float
    has_video: bool
    audio_codec: str | None
    size: tuple[int, int] = (0, 0)
    pixel_aspect: Fraction = Fraction(1)


@dataclass(frozen=True)
class FrameCount:
    """Frames of a decode through a filter chain: out (what a reader gets), in (stored), and seconds."""

    frames_out: int
    frames_in: int
    repeated: int
    dropped: int
    seconds: float


_STREAM = re.compile(r"^\s*Stream #\d+:\d+.*?: (Video|Audio): (.*)$")
_FIELDS = re.compile(r",\s*(?![^()]*\))")  # commas outside parentheses: "yuv420p(tv, bt709)" is one field
_VERBOSE_FIELD = re.compile(r"^\d+ reference frames?\b")
_PIX_FMT = re.compile(r"^[a-z][a-z0-9_]*$")
_FPS = re.compile(r" ([0-9]+\.?[0-9]*) fps")
_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_SIZE = re.compile(r" (\d+)x(\d+)(?=[, ]|$)")
_SAR = re.compile(r"\[SAR (\d+):(\d+) DAR")
_ROTATION = re.compile(r"display ?matrix: rotation of (-?\d+(?:\.\d+)?) degrees", re.IGNORECASE)
_FPS_STATS = re.compile(r"(\d+) frames in, (\d+) frames out; (\d+) frames dropped, (\d+) frames duplicated")
_PROGRESS = re.compile(r"frame=\s*(\d+)\b.*?time=\s*(-?[\d:.]+)")


def section(log: str, title: str) -> list[str]:
    """The lines of `log` from the line starting with `title` (e.g. "Input #0") to the next block.

    The block ends before the next line starting "Input #", "Output #" or "Stream mapping:"; log
    lines other threads print in between stay in it (no rule here matches them). [] if no such line.
    """
    lines = log.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(title)), None)
    if start is None:
        return []
    block = [lines[start]]
    for line in lines[start + 1:]:
        if line.startswith(("Input #", "Output #", "Stream mapping:")):
            break
        block.append(line)
    return block


def parse_input_header(log: str) -> InputHeader | None:
    """The InputHeader of the "Input #0" block of ffmpeg's `log`; None if there is no such block."""
    block = section(log, "Input #0")
    if not block:
        return None
    video, video_data = _first_stream(block, "Video")
    audio, _ = _first_stream(block, "Audio")
    duration = next((_DURATION.search(line) for line in block if "Duration: " in line), None)
    seconds = int(duration[1]) * 3600 + int(duration[2]) * 60 + float(duration[3]) if duration else 0.0
    fps = _FPS.search(video) if video else None
    size, aspect = _displayed_shape(video or "", video_data)
    return InputHeader(
        pix_fmt=_pix_fmt(video) if video else "", fps=float(fps[1]) if fps else 0.0, duration=seconds,
        has_video=video is not None,
        audio_codec=audio.lstrip().split(" ", 1)[0].strip().rstrip(",") if audio else None,
        size=size, pixel_aspect=aspect,
    )


def parse_count(log: str) -> FrameCount:
    """Frames ffmpeg's `log` reports for a decode through an fps filter (or none), from its last lines.

    frames_out: the last progress line's frame=; frames_in/dropped/repeated: the fps filter's own
    statistics (verbose level), or frames_out and zeros without them; seconds: the progress time.
    """
    progress = _PROGRESS.findall(log)
    frames = int(progress[-1][0]) if progress else 0
    stats = _FPS_STATS.findall(log)
    frames_in, _, dropped, repeated = (int(v) for v in stats[-1]) if stats else (frames, frames, 0, 0)
    return FrameCount(frames, frames_in, repeated, dropped, _seconds(progress[-1][1]) if progress else 0.0)


def error_line(log: str) -> str:
    """The last line of ffmpeg's `log` that says something: no progress lines, no "Exiting with exit code"."""
    lines = [line.strip() for line in log.splitlines()
             if line.strip() and not line.startswith("frame=") and not line.startswith("Exiting with exit code")]
    return lines[-1] if lines else "ffmpeg failed"


def last_line(exc: BaseException) -> str:
    """The last non-empty line of an exception's message (ffmpeg errors end with the useful one)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _first_stream(block: list[str], kind: str) -> tuple[str | None, list[str]]:
    """(what follows "Video: "/"Audio: " on the first such stream line of `block`, the lines under it up
    to the next stream: its metadata and side data); (None, []) if there is none."""
    for i, line in enumerate(block):
        match = _STREAM.match(line)
        if match and match[1] == kind:
            rest = block[i + 1:]
            end = next((j for j, later in enumerate(rest) if _STREAM.match(later)), len(rest))
            return match[2], rest[:end]
    return None, []


def _displayed_shape(video: str, details: list[str]) -> tuple[tuple[int, int], Fraction]:
    """((width, height), pixel aspect) of a video stream as displayed, from its description and the
    lines under it (a "Display Matrix: rotation of -90.00 degrees" side data line)."""
    size = _SIZE.search(video)
    sar = _SAR.search(video)
    shape = (int(size[1]), int(size[2])) if size else (0, 0)
    aspect = Fraction(int(sar[1]), int(sar[2])) if sar and int(sar[1]) and int(sar[2]) else Fraction(1)
    rotation = next((_ROTATION.search(line) for line in details if _ROTATION.search(line)), None)
    # ffmpeg turns the picture for angles within 1 degree of 90 or 270 (and flips it at 180)
    if rotation and round(float(rotation[1])) % 180 == 90:
        return shape[::-1], 1 / aspect
    return shape, aspect


def _pix_fmt(video: str) -> str:
    """The pixel format field of a video stream description (the field after the codec), no "(...)" tail."""
    fields = [field for field in _FIELDS.split(video)[1:] if not _VERBOSE_FIELD.match(field)]
    name = fields[0].split("(")[0].strip() if fields else ""
    return name if _PIX_FMT.match(name) else ""


def _seconds(clock: str) -> float:
    """ffmpeg's progress time (HH:MM:SS.ss, or a negative/odd value before the first frame) in seconds."""
    try:
        hours, minutes, seconds = clock.split(":")
        return max(0.0, int(hours) * 3600 + int(minutes) * 60 + float(seconds))
    except ValueError:
        return 0.0
