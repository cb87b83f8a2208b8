"""Video files <-> frames: probe, read, write, output paths.

Callers import from here; which module inside does what is this package's business.
"""

from .io import (
    OUTPUT_CONTAINERS,
    VideoInfo,
    check_fps,
    check_output_path,
    check_writable_folder,
    iter_frames,
    probe_video,
    square_pixel_size,
    to_rgb_uint8,
    write_video,
)

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
