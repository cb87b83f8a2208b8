"""Output sizes for Stage II on any video: the exact size the user asked for and the size the model works at.

The user picks the target one of three ways (exactly one; default: the official 1080p):
- `scale`: a factor on both edges (x2, x4; any factor >= 1 works);
- `size`: a named size from the paper's Table 5 ("720p", "1080p", "2K"). It fixes the LONG edge
  (1280 / 1920 / 2560) and keeps the input's aspect ratio, so a portrait or square clip is never stretched;
- `long_edge`: the long edge in pixels (even), aspect kept.

With no choice the target is the official 1080p; if that is more than MAX_DEFAULT_SCALE times the
input's long edge (a 160x96 clip would become 1920x1152, x12: slow and mostly invented detail), it is
refused unless the caller allows it (`allow_large_upscale`); an explicit choice is always taken.

Sizes in messages are written width x height ("1920x1080"), as ffmpeg and ComfyUI write them; the
code keeps (height, width) order, as tensors do.

Derived edges are rounded to the nearest EVEN number (H.264 yuv420p needs even sizes), so the aspect
ratio is kept to within one pixel. The model works at the next multiples of 16 (`work_height`,
`work_width`): frames are resized to the exact size, padded by repeating their edge pixels up to the
work size, and the padding is cropped away after decoding (`fit_frames` / `crop_to_target`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import PIXEL_MULTIPLE
from ..errors import FlashVideoInputError
from ..sampling.stage2_chain import resize_video

NAMED_SIZES: dict[str, tuple[int, int]] = {"720p": (720, 1280), "1080p": (1080, 1920), "2K": (1440, 2560)}
"""Paper Table 5 sizes as (height, width) for landscape input; the long edge is what a name fixes."""

DEFAULT_SIZE = "1080p"
MAX_SCALE = 8.0
"""Largest accepted `scale`: beyond it Stage II has too little to work from (and memory explodes)."""
MAX_DEFAULT_SCALE = 4.0
"""Largest long-edge factor the default target (1080p) may apply without the caller allowing more."""


@dataclass(frozen=True)
class TargetSize:
    """The requested output size and the model's working size (pixels).

    height, width: exact output size (even numbers).
    work_height, work_width: multiples of 16, >= height/width; the size the VAE and transformer see.
    """

    height: int
    width: int
    work_height: int
    work_width: int

    def scale_from(self, in_height: int, in_width: int) -> float:
        """Long-edge factor from an input of in_height x in_width to this exact size (160x96 -> 1920x1152: 12)."""
        return max(self.height, self.width) / max(in_height, in_width)

    @property
    def padded(self) -> bool:
        """True if the work size is larger than the exact size (frames get edge padding)."""
        return (self.work_height, self.work_width) != (self.height, self.width)


def resolve_target_size(
    in_height: int,
    in_width: int,
    scale: float | None = None,
    size: str | None = None,
    long_edge: int | None = None,
    allow_large_upscale: bool = False,
) -> TargetSize:
    """Target for an input of in_height x in_width from exactly one of scale / size / long_edge.

    None for all three means the official size ("1080p"), refused if that is more than
    MAX_DEFAULT_SCALE x the input's long edge unless allow_large_upscale. Raises
    FlashVideoInputError for an input under 16 px, conflicting choices, an unknown size name, a
    target smaller than the input, or that refused default.
    """
    for label, value in (("input height", in_height), ("input width", in_width)):
        if not isinstance(value, int) or isinstance(value, bool) or value < PIXEL_MULTIPLE:
            raise FlashVideoInputError(
                f"{label}={value!r} is too small to encode: the VAE and transformer need at least "
                f"{PIXEL_MULTIPLE} px on each edge."
            )
    chosen = [f"{name}={value!r}" for name, value in (("scale", scale), ("size", size), ("long_edge", long_edge))
              if value is not None]
    if len(chosen) > 1:
        raise FlashVideoInputError(
            f"Choose one target: got {', '.join(chosen)}; give only one of scale, size (720p/1080p/2K) or long_edge."
        )
    if scale is not None:
        height, width = _scaled(in_height, in_width, scale)
    else:
        if size is not None:
            long = _named_long_edge(size)
        elif long_edge is not None:
            long = _checked_long_edge(long_edge)
        else:
            long = _named_long_edge(DEFAULT_SIZE)
        height, width = _with_long_edge(in_height, in_width, long)
    if height < in_height or width < in_width:
        raise FlashVideoInputError(
            f"target {width}x{height} (WxH) is smaller than the input {in_width}x{in_height}; Stage II adds "
            "detail while upscaling. Pick a larger size, a scale of 2 or 4, or downscale the video first."
        )
    target = TargetSize(height, width, _round_up(height), _round_up(width))
    if not chosen and not allow_large_upscale:
        check_default_upscale(in_height, in_width, target)
    return target


def check_default_upscale(in_height: int, in_width: int, target: TargetSize) -> None:
    """Raise FlashVideoInputError if the default target is more than MAX_DEFAULT_SCALE x the input's long edge."""
    factor = target.scale_from(in_height, in_width)
    if factor > MAX_DEFAULT_SCALE:
        raise FlashVideoInputError(
            f"no target size given, and the default {DEFAULT_SIZE} would take the {in_width}x{in_height} (WxH) "
            f"input to {target.width}x{target.height}, a x{format_scale(factor)} upscale (more than "
            f"x{MAX_DEFAULT_SCALE:g}: slow, large, and mostly detail Stage II invents). Either give the target "
            "(CLI --scale 2/4, --size 720p/1080p/2K or --long-edge N; Python scale=, size= or long_edge=), or "
            "allow it (CLI --force; Python allow_large_upscale=True)."
        )


def format_scale(factor: float) -> str:
    """A scale factor for messages: 12 -> '12', 4.8 -> '4.8', 2.6667 -> '2.67'."""
    return f"{factor:.3g}" if factor < 100 else f"{factor:.0f}"


def fit_frames(video: torch.Tensor, target: TargetSize) -> torch.Tensor:
    """Pixel video (B, 3, F, h, w) -> (B, 3, F, work_height, work_width), same value range and dtype.

    Resizes to the exact (height, width) with bilinear antialiasing (the hand-off's filter; aspect is
    the input's up to one pixel, so nothing is stretched), then pads bottom and right by repeating
    the last row/column up to the work size. The frames are resized a few at a time straight into
    one work-size tensor (stage2_chain.resize_video with `out`) and padded in place, so the peak is
    that tensor plus a few frames (the resized and the padded video were two full copies at once).
    A video already at the work size comes back as it is.
    """
    if tuple(video.shape[-2:]) == (target.work_height, target.work_width):
        return video
    height, width = target.height, target.width
    out = torch.empty(*video.shape[:3], target.work_height, target.work_width, dtype=video.dtype)
    resize_video(video, height, width, out=out[..., :height, :width])
    out[..., :height, width:] = out[..., :height, width - 1 : width]  # replicate the last column
    out[..., height:, :] = out[..., height - 1 : height, :]  # then the last row (the corner included)
    return out


def crop_to_target(video: torch.Tensor, target: TargetSize) -> torch.Tensor:
    """Pixel video (B, 3, F, work_height, work_width) -> (B, 3, F, height, width): drops the padding."""
    if video.shape[-2:] != (target.work_height, target.work_width):
        raise FlashVideoInputError(
            f"video of size {video.shape[-1]}x{video.shape[-2]} (WxH) does not match the work size "
            f"{target.work_width}x{target.work_height} of this target."
        )
    return video[..., : target.height, : target.width]


def image_frame_bytes(height: int, width: int) -> int:
    """Bytes one frame costs as a ComfyUI IMAGE (float32, 3 channels): 1920x1080 -> 24,883,200 (~25 MB)."""
    return height * width * 3 * 4


def _scaled(in_height: int, in_width: int, scale) -> tuple[int, int]:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 1.0 <= scale <= MAX_SCALE:
        raise FlashVideoInputError(f"scale={scale!r} must be a number from 1 to {MAX_SCALE:g} (usually 2 or 4).")
    return _round_even(in_height * scale), _round_even(in_width * scale)


def _named_long_edge(size) -> int:
    names = {name.lower(): name for name in NAMED_SIZES}
    key = names.get(str(size).strip().lower())
    if key is None:
        raise FlashVideoInputError(f"size={size!r} is not a named size; use one of {', '.join(NAMED_SIZES)}.")
    return max(NAMED_SIZES[key])


def _checked_long_edge(long_edge) -> int:
    if isinstance(long_edge, bool) or not isinstance(long_edge, int) or long_edge < PIXEL_MULTIPLE:
        raise FlashVideoInputError(f"long_edge={long_edge!r} must be an integer of at least {PIXEL_MULTIPLE} px.")
    if long_edge % 2:
        raise FlashVideoInputError(
            f"long_edge={long_edge} must be even (H.264 video needs even sizes); "
            f"use {long_edge - 1} or {long_edge + 1}."
        )
    return long_edge


def _with_long_edge(in_height: int, in_width: int, long: int) -> tuple[int, int]:
    if in_height >= in_width:
        return long, _round_even(in_width * long / in_height)
    return _round_even(in_height * long / in_width), long


def _round_even(value: float) -> int:
    return max(2, 2 * int(math.floor(value / 2 + 0.5)))


def _round_up(value: int) -> int:
    return -(-value // PIXEL_MULTIPLE) * PIXEL_MULTIPLE
