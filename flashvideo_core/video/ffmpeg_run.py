"""Run the ffmpeg binary of imageio-ffmpeg to learn what a file holds: one process per question.

`decode_probe` answers everything probe_video needs in one ffmpeg run: ffmpeg opens the file and
prints its header (size, pixel aspect, rotation, rate, audio), then reads its video filter from
stdin. The filter (a constant-rate fps filter) needs the stored frame rate, so it is chosen from
that header while ffmpeg waits, and ffmpeg then decodes through it, counting frames. A second input
(a tiny lavfi source) is the marker that input #0's header is complete: ffmpeg prints each input's
header as it opens it, and reads the filter only after all inputs are open. `read_header` is the
quick look without decoding (the audio codec for write_video).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg

from ..errors import FlashVideoInputError
from .ffmpeg_log import FrameCount, InputHeader, error_line, parse_count, parse_input_header

_MARKER_INPUT = ("-f", "lavfi", "-i", "nullsrc=size=16x16:duration=0.04")
_FILTER_FROM_FILE = ["-/vf", "-filter_script:v"]
"""How ffmpeg reads -vf from a file: `-/vf` from ffmpeg 7.1 on (later ones dropped `-filter_script`),
`-filter_script:v` before. The first is tried first; one that ffmpeg does not know moves to the end."""


@dataclass(frozen=True)
class DecodeProbe:
    """One decode of a file's first video stream: its header and the frames counted through the filter."""

    header: InputHeader
    count: FrameCount


def decode_probe(src: Path, choose_filter: Callable[[InputHeader], str]) -> DecodeProbe:
    """Decode `src`'s first video stream once through the filter chain `choose_filter(header)` returns.

    In: a file; a function of its InputHeader giving an ffmpeg -vf chain (e.g. "fps=fps=25:start_time=0").
    Out: DecodeProbe. Starts one ffmpeg process (two the first time on an ffmpeg older than 7.1).
    Raises FlashVideoInputError naming `src` if it cannot be opened, has no video stream, fails to
    decode or gives no frame.
    """
    for _ in range(len(_FILTER_FROM_FILE)):
        probe = _decode_once(src, choose_filter, _FILTER_FROM_FILE[0])
        if probe is not None:
            return probe
        _FILTER_FROM_FILE.append(_FILTER_FROM_FILE.pop(0))
    raise FlashVideoInputError(f"could not read {src}: this ffmpeg knows neither {' nor '.join(_FILTER_FROM_FILE)}; "
                               "use ffmpeg 5.1 or newer (imageio-ffmpeg's own binary, IMAGEIO_FFMPEG_EXE unset).")


def read_header(src: Path) -> InputHeader:
    """InputHeader of `src` from ffmpeg's header alone (no decoding; one quick process).

    Raises FlashVideoInputError naming `src` if ffmpeg cannot open it or it has no video stream.
    """
    log = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(src)],
                         capture_output=True, text=True, errors="replace").stderr
    return _checked_header(src, log)


def _decode_once(src: Path, choose_filter: Callable[[InputHeader], str], option: str) -> DecodeProbe | None:
    """decode_probe with `option` as the filter-from-file spelling; None if this ffmpeg does not know it."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "verbose", "-i", str(src),
           *_MARKER_INPUT, "-map", "0:v:0", option, "pipe:0", "-fps_mode", "passthrough", "-f", "null", "-"]
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, errors="replace") as process:
        try:
            head, complete = _until_marker(process)
            if not complete:  # ffmpeg ended before the marker: it could not open src (or knows no `option`)
                if f"Unrecognized option '{option.lstrip('-')}'" in head:
                    return None
                _checked_header(src, head)
                raise FlashVideoInputError(f"could not read {src} as a video or image: {error_line(head)}")
            header = _checked_header(src, head)
            try:
                process.stdin.write(choose_filter(header))
                process.stdin.close()
            except BrokenPipeError:
                pass  # ffmpeg already ended; its exit code and log say why
            log = process.stderr.read()
            code = process.wait()
        except BaseException:
            process.kill()
            raise
    return _decoded(src, header, log, code)


def _until_marker(process: subprocess.Popen) -> tuple[str, bool]:
    """(ffmpeg's stderr up to the marker input's header, whether the marker came): without it, all of
    stderr, ffmpeg having ended. With it, input #0's header is complete and ffmpeg waits for the filter."""
    lines = []
    for line in process.stderr:
        if line.startswith("Input #1"):
            return "".join(lines), True
        lines.append(line)
    return "".join(lines), False


def _checked_header(src: Path, log: str) -> InputHeader:
    """parse_input_header of `log`; FlashVideoInputError naming `src` without input header, video stream or
    frame size."""
    header = parse_input_header(log)
    if header is None:
        raise FlashVideoInputError(f"could not read {src} as a video or image: {error_line(log)}")
    if not header.has_video:
        raise FlashVideoInputError(f"{src} has no video stream (an audio-only file?).")
    if not all(header.size):
        raise FlashVideoInputError(f"could not read {src}: ffmpeg gives no frame size for its video stream.")
    return header


def _decoded(src: Path, header: InputHeader, log: str, code: int) -> DecodeProbe:
    """The DecodeProbe of a finished decode whose stderr after the header is `log` and exit code `code`."""
    if code != 0:
        raise FlashVideoInputError(f"could not decode {src}: {error_line(log)}")
    count = parse_count(log)
    if not count.frames_out:
        raise FlashVideoInputError(f"{src} has no video frames (zero-frame file).")
    return DecodeProbe(header, count)
