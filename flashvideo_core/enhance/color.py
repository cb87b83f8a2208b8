"""Optional colour match of Stage II output to its input: per-window mean/std transfer in Oklab.

Stage II can drift in colour (exposure, tint) from a source it did not generate. Matching each
channel's mean and standard deviation in a perceptual space (Oklab: L lightness, a green-red,
b blue-yellow; Ottosson 2020) pulls the output's overall colour back to the input's without touching
its detail. Statistics are taken over a whole window (all frames and pixels), so the correction is
constant inside a window and changes only slowly across windows (the window blend smooths it).
Off by default.
"""

from __future__ import annotations

import torch

from ..errors import FlashVideoInputError

_RGB_TO_LMS = torch.tensor([
    [0.4122214708, 0.5363325363, 0.0514459929],
    [0.2119034982, 0.6806995451, 0.1073969566],
    [0.0883024619, 0.2817188376, 0.6299787005],
])
_LMS_TO_LAB = torch.tensor([
    [0.2104542553, 0.7936177850, -0.0040720468],
    [1.9779984951, -2.4285922050, 0.4505937099],
    [0.0259040371, 0.7827717662, -0.8086757660],
])
_LAB_TO_LMS = torch.tensor([
    [1.0, 0.3963377774, 0.2158037573],
    [1.0, -0.1055613458, -0.0638541728],
    [1.0, -0.0894841775, -1.2914855480],
])
_LMS_TO_RGB = torch.tensor([
    [4.0767416621, -3.3077115913, 0.2309699292],
    [-1.2684380046, 2.6097574011, -0.3413193965],
    [-0.0041960863, -0.7034186147, 1.7076147010],
])
_EPS = 1e-5


def srgb_to_oklab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], channels first (B, 3, ...) -> Oklab (B, 3, ...) float32 (L in [0, 1])."""
    linear = _srgb_to_linear(rgb.float())
    lms = _apply(_RGB_TO_LMS, linear)
    return _apply(_LMS_TO_LAB, torch.sign(lms) * lms.abs().pow(1.0 / 3.0))


def oklab_to_srgb(lab: torch.Tensor) -> torch.Tensor:
    """Oklab (B, 3, ...) -> sRGB (B, 3, ...) float32, not clipped (out-of-gamut values leave [0, 1])."""
    lms = _apply(_LAB_TO_LMS, lab.float()).pow(3)
    return _linear_to_srgb(_apply(_LMS_TO_RGB, lms))


def match_color(output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Output video (B, 3, F, H, W) in [-1, 1] with its Oklab mean/std per channel set to reference's.

    reference: pixel video (B, 3, F', H', W') in [-1, 1]; its frame count and size may differ (only
    statistics are used). Returns a tensor shaped and typed like `output`, clipped to [-1, 1].
    """
    _check_video(output, "output")
    return match_color_stats(output, color_stats(reference))


def color_stats(reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Oklab (mean, std) per channel of a pixel video (B, 3, F, H, W) in [-1, 1], each (B, 3, 1, 1, 1): what
    match_color keeps of its reference (enhance's co-denoise keeps them while the input streams past)."""
    _check_video(reference, "reference")
    ref_lab = srgb_to_oklab((reference.float() + 1) / 2)
    dims = (2, 3, 4)
    return ref_lab.mean(dims, keepdim=True), ref_lab.std(dims, keepdim=True, correction=0)


def match_color_stats(output: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """match_color with the reference given as its color_stats."""
    ref_mean, ref_std = stats
    if output.shape[0] != ref_mean.shape[0]:
        raise FlashVideoInputError(f"output batch {output.shape[0]} != reference batch {ref_mean.shape[0]}.")
    out_lab = srgb_to_oklab((output.float() + 1) / 2)
    dims = (2, 3, 4)
    out_mean, out_std = out_lab.mean(dims, keepdim=True), out_lab.std(dims, keepdim=True, correction=0)
    matched = (out_lab - out_mean) * (ref_std / out_std.clamp_min(_EPS)) + ref_mean
    rgb = oklab_to_srgb(matched) * 2 - 1
    return rgb.clamp(-1, 1).to(output.dtype)


def _check_video(video, name: str) -> None:
    if not isinstance(video, torch.Tensor) or video.ndim != 5 or video.shape[1] != 3:
        shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise FlashVideoInputError(f"{name} must be a pixel video (B, 3, F, H, W); got {shape}.")


def _apply(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """matrix (3, 3) applied to the channel dim 1 of x (B, 3, ...)."""
    return torch.einsum("ij,bj...->bi...", matrix.to(x.device), x)


def _srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    c = c.clamp(0, 1)
    return torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055).pow(2.4))


def _linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    c = c.clamp_min(0)
    return torch.where(c <= 0.0031308, c * 12.92, 1.055 * c.pow(1 / 2.4) - 0.055)
