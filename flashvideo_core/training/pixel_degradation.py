"""Pixel degradation (DEG_pixel, paper section 3.3): the low-quality input Stage II learns to restore.

Each clip is blurred with a Gaussian of random width, area-downscaled by a random factor and resized
back to its own size with the hand-off's filter (bilinear, antialias, align_corners=False: what
Stage I's 270p output goes through at inference before Stage II sees it). All frames of one clip
get the same strengths (a flicker-free degradation, as Stage I's output is one consistent video);
every clip of a batch draws its own from a CPU torch.Generator, so a seed gives the same strengths
and the same result on any device.

Default ranges: the paper names blur and a 2-4x downscale without giving the blur strength (SPEC.md
records none), so blur_sigma (0.2, 2.0) pixels is a choice, narrowed from Real-ESRGAN's first-order
Gaussian range (0.2-3) because the area downscale that follows is itself a low-pass filter; the
downscale range (2.0, 4.0) covers Stage II's real task (270p -> 1080p is x4; 2x keeps it useful at
other sizes).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import FlashVideoInputError

UPSCALE_MODES = ("bilinear", "bicubic")


def _check_range(value, name: str, low_limit: float, high_limit: float = math.inf) -> None:
    """Raise unless `value` is a (low, high) pair of finite numbers with low_limit <= low <= high <= high_limit."""
    ok = isinstance(value, tuple) and len(value) == 2 and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not ok or not low_limit <= value[0] <= value[1] <= high_limit:
        raise FlashVideoInputError(f"{name}={value!r} must be a (low, high) pair with "
                                   f"{low_limit:g} <= low <= high <= {high_limit:g}.")


@dataclass(frozen=True)
class PixelDegradation:
    """DEG_pixel ranges, drawn uniformly per clip.

    blur_sigma: Gaussian standard deviation in pixels of the full-size frame (0 = no blur);
    blur_probability: chance that a clip is blurred at all (1.0 = always); downscale: area downscale
    factor (>= 1; 1 = none), the frame then resized back to its size with `upscale_mode`
    ("bilinear" with antialias = the inference hand-off; "bicubic" is the classic SR baseline).
    """

    blur_sigma: tuple[float, float] = (0.2, 2.0)
    blur_probability: float = 1.0
    downscale: tuple[float, float] = (2.0, 4.0)
    upscale_mode: str = "bilinear"

    def __post_init__(self) -> None:
        for name in ("blur_sigma", "downscale"):  # a list (from JSON or a schedule file) is taken as the pair
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        _check_range(self.blur_sigma, "blur_sigma", 0.0, 20.0)
        _check_range(self.downscale, "downscale", 1.0, 16.0)
        p = self.blur_probability
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise FlashVideoInputError(f"blur_probability={p!r} must be a number from 0 to 1.")
        if self.upscale_mode not in UPSCALE_MODES:
            raise FlashVideoInputError(f"upscale_mode={self.upscale_mode!r} must be one of {UPSCALE_MODES}.")


@dataclass(frozen=True)
class PixelStrengths:
    """The strengths drawn for a batch: sigma (B,) float64 pixels (0 = not blurred), factor (B,) float64."""

    sigma: torch.Tensor
    factor: torch.Tensor


def sample_pixel_strengths(batch: int, settings: PixelDegradation, generator: torch.Generator) -> PixelStrengths:
    """Per-clip strengths for `batch` clips from the CPU `generator`, in this order: sigmas, blur
    coin flips, factors (each a (batch,) draw of torch.rand in float64)."""
    low, high = settings.blur_sigma
    sigma = low + (high - low) * torch.rand(batch, generator=generator, dtype=torch.float64)
    blurred = torch.rand(batch, generator=generator, dtype=torch.float64) < settings.blur_probability
    low, high = settings.downscale
    factor = low + (high - low) * torch.rand(batch, generator=generator, dtype=torch.float64)
    return PixelStrengths(sigma=torch.where(blurred, sigma, torch.zeros_like(sigma)), factor=factor)


def degrade_pixels(video: torch.Tensor, settings: PixelDegradation, generator: torch.Generator) -> torch.Tensor:
    """DEG_pixel of a batch of clips with strengths drawn from `generator` (see sample_pixel_strengths).

    video: (B, 3, T, H, W) in [-1, 1] (the VAE's layout). Returns the same shape, dtype and device,
    clamped to [-1, 1]; every frame of a clip degraded alike.
    """
    _check_video(video)
    strengths = sample_pixel_strengths(video.shape[0], settings, generator)
    return apply_pixel_degradation(video, strengths.sigma.tolist(), strengths.factor.tolist(), settings.upscale_mode)


def apply_pixel_degradation(video: torch.Tensor, sigmas: list[float], factors: list[float],
                            upscale_mode: str = "bilinear") -> torch.Tensor:
    """DEG_pixel with given strengths: clip b blurred by sigmas[b] pixels, area-downscaled by factors[b],
    resized back. video (B, 3, T, H, W); same shape, dtype and device out, clamped to [-1, 1]."""
    _check_video(video)
    if len(sigmas) != video.shape[0] or len(factors) != video.shape[0]:
        raise FlashVideoInputError(f"need one sigma and one factor per clip: {video.shape[0]} clips, "
                                   f"{len(sigmas)} sigmas, {len(factors)} factors.")
    out = torch.empty_like(video)
    for b, (sigma, factor) in enumerate(zip(sigmas, factors, strict=True)):
        frames = video[b].float().transpose(0, 1)  # (T, 3, H, W): the clip's frames as one batch
        frames = gaussian_blur(frames, float(sigma))
        frames = _down_up(frames, float(factor), upscale_mode)
        out[b] = frames.clamp(-1.0, 1.0).transpose(0, 1).to(video.dtype)
    return out


def gaussian_blur(frames: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of frames (N, C, H, W), reflect-padded; radius ceil(3 sigma), at most
    the frame's edge - 1; sigma 0 returns `frames` as they are."""
    if sigma <= 0:
        return frames
    height, width = frames.shape[-2:]
    radius = min(math.ceil(3.0 * sigma), height - 1, width - 1)
    if radius < 1:
        return frames
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(device=frames.device, dtype=frames.dtype)
    channels = frames.shape[1]
    padded = F.pad(frames, (radius, radius, radius, radius), mode="reflect")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def _down_up(frames: torch.Tensor, factor: float, mode: str) -> torch.Tensor:
    """Area downscale of frames (N, C, H, W) to round(H / factor) x round(W / factor) (at least 1), then
    back to H x W with `mode` (antialias, align_corners=False); factor 1 returns them as they are."""
    height, width = frames.shape[-2:]
    small = (max(1, round(height / factor)), max(1, round(width / factor)))
    if small == (height, width):
        return frames
    low = F.interpolate(frames, size=small, mode="area")
    return F.interpolate(low, size=(height, width), mode=mode, antialias=True, align_corners=False)


def _check_video(video: torch.Tensor) -> None:
    if not isinstance(video, torch.Tensor) or video.ndim != 5 or video.shape[1] != 3:
        shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise FlashVideoInputError(f"video must be pixel clips (batch, 3, frames, height, width) in [-1, 1]; "
                                   f"got {shape}.")
