"""Video files <-> frames with the ffmpeg binary of imageio-ffmpeg (no other video dependency).

Callers import from here; which module inside does what is this package's business:
probe (VideoInfo, probe_video: one ffmpeg run per file), read (iter_frames), filters (the read's
constant rate and square pixels), pixels (pixel formats, to_rgb_uint8), write (write_video), fps
(exact frame rates), paths (output names), ffmpeg_run/ffmpeg_log (running ffmpeg, reading its log).

Sizes and frames are the displayed ones (rotation applied, non-square pixels made square), read at
one constant rate from the file's start, so everything written from them (square pixels, frame i
at i / fps, the source's audio copied as stored) shows at the source's shape and stays in sync
(written at the average rate as stored, the frames of a variable-rate clip drifted from the audio,
by 0.28 s over 1.5 s). Importing this package changes no logging configuration.
"""

from .filters import square_pixel_size
from .fps import check_fps
from .paths import OUTPUT_CONTAINERS, check_output_path, check_writable_folder
from .pixels import to_rgb_uint8
from .probe import VideoInfo, probe_video
from .read import iter_frames
from .write import write_video

__all__ = [
    "OUTPUT_CONTAINERS",
    "VideoInfo",
    "check_fps",
    "check_output_path",
    "check_writable_folder",
    "iter_frames",
    "probe_video",
    "square_pixel_size",
    "to_rgb_uint8",
    "write_video",
]
