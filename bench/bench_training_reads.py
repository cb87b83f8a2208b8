"""What one training draw costs to read from a long video: the clip read with a seek to its first frame
(training.media, today) against the earlier read (probe the whole file again, then decode from its start
through the clip), in one run on the same file.

The file: a synthetic clip of --minutes at --size and 24 fps (H.264 as video.write_video writes it: a key
frame at least every 250 frames, libx264's default, about 10 s; phone and camera files have them every 1-2
s, so the seek, which decodes from the key frame before the clip, costs them less),
made once in a temporary folder. Draws: clips of --frames frames starting at 10%, 50% and 90% of the file,
each read both ways (the same frames in a constant-rate file: checked); prints seconds per draw and
the ratio earlier / seek. No PASS line: the ratio grows with the file's length, which is the point.
Last run (3 min at 640x360, 49 frames, 2 cores): 1.76 / 0.18 s at 10% in (9.9x), 2.65 / 0.13 s at 50%
(20.0x), 3.42 / 0.14 s at 90% (24.6x); the same frames both ways (an earlier run: 6.1x / 13.5x / 27.2x).

    .venv/bin/python bench/bench_training_reads.py [--minutes 3] [--size 640x360] [--frames 49]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flashvideo_core.training.data import DataSettings, check_media, scan_media  # noqa: E402
from flashvideo_core.training.media import _decode, _read_frames  # noqa: E402
from flashvideo_core.video import write_video  # noqa: E402

FPS = 24


def _frames(count: int, height: int, width: int):
    """A moving gradient (something for the encoder to code), one frame in memory at a time."""
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    for index in range(count):
        row = np.roll(ramp, index * 3, axis=1)
        frame = np.empty((height, width, 3), np.uint8)
        frame[..., 0] = row
        frame[..., 1] = row[:, ::-1]
        frame[..., 2] = (index * 5) % 256
        yield frame


def _earlier_read(item, start: int, count: int) -> np.ndarray:
    """The read before the seek: without the checked probe (iter_frames probes the file again), from frame 0."""
    return np.stack(_decode(replace(item, info=None), start, count, first=0))


def _timed(read) -> tuple[float, np.ndarray]:
    began = time.perf_counter()
    frames = read()
    return time.perf_counter() - began, frames


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT")
    parser.add_argument("--frames", type=int, default=49)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    total = int(args.minutes * 60 * FPS)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "long.mp4"
        began = time.perf_counter()
        write_video(path, _frames(total, height, width), fps=Fraction(FPS))
        print(f"file: {total} frames ({args.minutes:g} min at {FPS} fps), {width}x{height}, written in "
              f"{time.perf_counter() - began:.1f} s")
        item = check_media(scan_media(Path(folder)), DataSettings(args.frames, 16, 16))[0][0]
        print(f"{'clip starts at':>16} {'earlier s':>10} {'seek s':>8} {'earlier / seek':>15}")
        for share in (0.1, 0.5, 0.9):
            start = int(share * (total - args.frames))
            before, old = _timed(lambda start=start: _earlier_read(item, start, args.frames))
            after, new = _timed(lambda start=start: _read_frames(item, start, args.frames))
            if not np.array_equal(old, new):
                print(f"frame {start}: the two reads differ", file=sys.stderr)
                return 1
            print(f"{f'frame {start}':>16} {before:10.2f} {after:8.2f} {before / after:14.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
