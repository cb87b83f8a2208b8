"""Draw one training sample from a checked media file: a random clip, a random rescale and a random crop.

Random draws, all from the CPU generator given, in this order: the clip's first frame (videos), the
rescale, the crop's top and left. Rescale: if the file is more than RESCALE_ABOVE times the crop on
both edges, a region of the crop's aspect and (crop size / s) pixels is cut, with s drawn
log-uniformly between the smallest scale that still covers the crop and 1, and resized to the crop
(bilinear, antialias): crops then range from native-resolution detail to most of the frame, not
always a tiny corner of a large file. Otherwise the crop is cut at native resolution.
Videos: the clip is read with an input seek to its first frame (video.iter_frames(first=)), so a draw
decodes from the key frame before the clip, not from the file's start: a draw late in a long file costs
about what an early one does. In a constant-rate file the clip is exactly frames start..start+T-1 as
probe_video counted them; where the stored timestamps are irregular (variable frame rate) the constant-
rate reading's repeated and dropped frames may fall a frame differently than in a read from the start
(still T frames of that stretch, in order). If the seek gives fewer than T frames, the clip is decoded from
the file's start. The file's conversion notes (VideoInfo.notes) are check_media's, not repeated per draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import FlashVideoInputError
from ..video import iter_frames
from .data import DataSettings, MediaItem

RESCALE_ABOVE = 1.5


@dataclass(frozen=True)
class Sample:
    """pixels: (3, T, H, W) float32 in [-1, 1] (T = settings.frames for a video, 1 for an image)."""

    pixels: torch.Tensor
    caption: str
    source: Path


def _uniform(generator: torch.Generator) -> float:
    return torch.rand(1, generator=generator, dtype=torch.float64).item()


def _randint(high: int, generator: torch.Generator) -> int:
    """Uniform integer 0..high inclusive."""
    return int(torch.randint(high + 1, (1,), generator=generator).item())


def _read_frames(item: MediaItem, start: int, count: int) -> np.ndarray:
    """Frames start..start+count-1 of `item` as uint8 (count, H, W, 3)."""
    if item.kind == "image":
        from PIL import Image

        with Image.open(item.path) as image:
            return np.asarray(image.convert("RGB"))[None]
    kept = _decode(item, start, count, first=start)
    if len(kept) < count:  # an irregular file's seek landed late near its end: decode from its start
        kept = _decode(item, start, count, first=0)
    if len(kept) < count:
        raise FlashVideoInputError(f"{item.path} gave {start + len(kept)} frames, not the {item.num_frames} "
                                   "checked; was it changed since check_media?")
    return np.stack(kept)


def _decode(item: MediaItem, start: int, count: int, first: int) -> list[np.ndarray]:
    """Up to `count` frames of `item` from frame `start`, reading from frame `first` (0 or start) on."""
    kept = []
    info = replace(item.info, notes=()) if item.info is not None else None  # noted once, by check_media
    frames = iter_frames(item.path, info, first)
    try:
        for index, frame in enumerate(frames, start=first):
            if index >= start:
                kept.append(frame)
            if len(kept) == count:
                break
    finally:
        frames.close()
    return kept


def _region(item: MediaItem, settings: DataSettings, generator: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the region to cut, before it is resized to the crop."""
    height, width = settings.height, settings.width
    smallest = max(height / item.height, width / item.width)  # the scale at which the frame just covers the crop
    if smallest * RESCALE_ABOVE < 1.0:
        scale = math.exp(math.log(smallest) * _uniform(generator))  # log-uniform in [smallest, 1]
        height = min(item.height, max(height, round(height / scale)))
        width = min(item.width, max(width, round(width / scale)))
    top = _randint(item.height - height, generator)
    left = _randint(item.width - width, generator)
    return top, left, height, width


def draw_sample(item: MediaItem, settings: DataSettings, generator: torch.Generator) -> Sample:
    """A random training sample of a checked `item` (from data.check_media): see the module docstring."""
    if not item.num_frames:
        raise FlashVideoInputError(f"{item.path} has not been checked; pass items from check_media.")
    count = settings.frames if item.kind == "video" else 1
    start = _randint(item.num_frames - count, generator) if item.kind == "video" else 0
    top, left, height, width = _region(item, settings, generator)
    frames = _read_frames(item, start, count)
    if frames.shape[1:3] != (item.height, item.width):
        raise FlashVideoInputError(f"{item.path} is {frames.shape[2]}x{frames.shape[1]}, not the "
                                   f"{item.width}x{item.height} checked; was it changed since check_media?")
    region = torch.from_numpy(np.array(frames[:, top:top + height, left:left + width]))  # a writable copy
    region = region.permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (T, 3, h, w) in [-1, 1]
    if (height, width) != (settings.height, settings.width):
        region = F.interpolate(region, size=(settings.height, settings.width), mode="bilinear",
                               antialias=True, align_corners=False).clamp(-1.0, 1.0)
    return Sample(pixels=region.transpose(0, 1).contiguous(), caption=item.caption, source=item.path)
