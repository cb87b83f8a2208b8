"""Stream a file's frames as uint8 RGB (H, W, 3) through imageio-ffmpeg, as probe_video counted them.

Whatever the source stores, frames come out uint8 RGB: an alpha channel is dropped (colours kept
as stored, not composited), grayscale is expanded to three equal channels, 10/12/16-bit samples are
reduced to 8 bits; each case is logged once (VideoInfo.notes). Still images (PNG, JPEG, ...) read as
one-frame videos. Rotation metadata (phone clips) is applied by ffmpeg and non-square pixels are made
square (see filters), so frames have the displayed shape; they come at the constant rate probe_video
counted through, so there are exactly VideoInfo.num_frames of them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator

import imageio_ffmpeg
import numpy as np

from ..errors import FlashVideoInputError
from .ffmpeg_log import last_line
from .filters import read_filter
from .probe import VideoInfo, probe_video

logger = logging.getLogger(__name__)


def iter_frames(path: str | os.PathLike, info: VideoInfo | None = None, first: int = 0) -> Iterator[np.ndarray]:
    """Stream the frames of `path` as uint8 RGB arrays (H, W, 3), in order, one in memory at a time.

    `info` (from probe_video of `path`) saves a second probe; its notes are logged once. One ffmpeg
    process (plus probe_video's without `info`). `first` > 0 starts at that frame with an input seek
    (decoding from the key frame before it, not from the file's start): exactly frame `first` of a
    constant-rate file (the seek lands a quarter frame before it), a frame next to it where the stored
    timestamps are irregular. Raises FlashVideoInputError naming the file if it cannot be read or
    decodes at another size than probed.
    """
    info = info or probe_video(path)
    for note in info.notes:
        logger.warning("%s: %s", info.path, note)
    # The filter keeps frame i at i / fps (the rate it is written back at); passthrough stops ffmpeg's
    # own rate conversion after it, so the count is exactly probe_video's.
    stored = (info.stored_width or info.width, info.stored_height or info.height)
    output = ["-map", "0:v:0", "-vf", read_filter(info.fps, (info.width, info.height), stored),
              "-fps_mode", "passthrough"]
    seek = ["-ss", f"{(first - 0.25) / info.fps:.6f}"] if first > 0 else []
    reader = imageio_ffmpeg.read_frames(str(info.path), pix_fmt="rgb24", input_params=seek, output_params=output)
    try:
        with _expected_resize_quiet():
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
        raise FlashVideoInputError(f"could not read frames of {info.path}: {last_line(exc)}") from None
    finally:
        reader.close()


_RESIZE_WARNING = "The frame size for reading"


class _ExpectedResize(logging.Filter):
    """Drops imageio-ffmpeg's warning that the frames read differ in size from the stored ones, from one
    thread: that is rotation or square-pixel resampling, both done on purpose and noted in VideoInfo.notes."""

    def __init__(self, thread: int):
        super().__init__()
        self.thread = thread

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.thread or not str(record.msg).startswith(_RESIZE_WARNING)


@contextlib.contextmanager
def _expected_resize_quiet() -> Iterator[None]:
    """Within the block only, and for this thread only, drop imageio-ffmpeg's frame-size warning."""
    imageio_logger = logging.getLogger("imageio_ffmpeg")
    quiet = _ExpectedResize(threading.get_ident())
    imageio_logger.addFilter(quiet)
    try:
        yield
    finally:
        imageio_logger.removeFilter(quiet)
