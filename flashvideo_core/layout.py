"""Tensor layout conversions and the shape checks every entry point shares.

Layouts:
- latent (VAE, ComfyUI LATENT): (B, C, T, h, w)
- transformer input/output: (B, T, C, h, w)
- pixel video (VAE input/output): (B, 3, F, H, W) in [-1, 1]
- ComfyUI IMAGE: (F, H, W, 3) float32 in [0, 1]
"""

from __future__ import annotations

import logging

import torch

from .config import LATENT_CHANNELS, MAX_PIXEL_EDGE, PIXEL_MULTIPLE, VAE_TEMPORAL_COMPRESSION
from .errors import FlashVideoInputError
from .finite import check_finite

logger = logging.getLogger(__name__)


def latent_to_transformer(latent: torch.Tensor) -> torch.Tensor:
    """(B, C, T, h, w) -> (B, T, C, h, w)."""
    return latent.permute(0, 2, 1, 3, 4)


def transformer_to_latent(hidden: torch.Tensor) -> torch.Tensor:
    """(B, T, C, h, w) -> (B, C, T, h, w)."""
    return hidden.permute(0, 2, 1, 3, 4)


def video_to_frames(video: torch.Tensor) -> torch.Tensor:
    """Video (B, C, F, H, W) -> frames as one batch (B*F, C, H, W), the layout 2D ops (interpolate, pad)
    take; a view whenever the strides allow (always for B = 1)."""
    return video.transpose(1, 2).flatten(0, 1)


def frames_to_video(frames: torch.Tensor, batch: int) -> torch.Tensor:
    """video_to_frames' inverse: (B*F, C, H, W) -> (B, C, F, H, W), a view."""
    return frames.unflatten(0, (batch, -1)).transpose(1, 2)


def image_to_video(images: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE (F, H, W, 3) in [0, 1] -> video (1, 3, F, H, W) in [-1, 1], float32."""
    check_image(images, "images")
    return images.float().permute(3, 0, 1, 2).unsqueeze(0) * 2.0 - 1.0


IMAGE_OVERSHOOT = 0.25
"""How far float IMAGE values may stray outside 0..1 and still be clamped (resampling rings a little
past the ends: bicubic ~0.1); anything further means another value range and is refused."""


def checked_images(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """An IMAGE batch from any node -> (F, H, W, 3) float32 in [0, 1], refusing values that would mislead.

    images: (F, H, W, C), C in {1, 3, 4} (see rgb_images), float or uint8. uint8 is divided by 255;
    float values within IMAGE_OVERSHOOT of 0..1 are clamped. Raises FlashVideoInputError naming
    `name` for NaN/Inf (with the first bad frame index; one NaN pixel turns a whole Stage II result
    NaN) and for values further out (a 0..255 or -1..1 batch would come out white or washed out),
    saying the range found and the fix. Costs one min/max reduction per frame; a copy is made only
    to convert or clamp.
    """
    images = rgb_images(images, name)
    if images.shape[1] < 1 or images.shape[2] < 1:
        raise FlashVideoInputError(f"{name} frames are empty ({images.shape[2]}x{images.shape[1]} pixels).")
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.dtype.is_floating_point:
        raise FlashVideoInputError(
            f"{name} has dtype {images.dtype}; IMAGE frames are float in 0..1 (or uint8 0..255). Convert them "
            "to float and divide by their maximum value (255 for 8-bit, 65535 for 16-bit)."
        )
    lows, highs = _frame_ranges(images)
    bad = (~torch.isfinite(lows) | ~torch.isfinite(highs)).nonzero().flatten().tolist()
    if bad:
        raise FlashVideoInputError(
            f"{name} frame {bad[0]} (counting from 0) holds NaN or Inf values ({len(bad)} of {images.shape[0]} "
            "frames do); one such pixel turns the whole result into NaN. Fix or drop that frame, or check the "
            "node that made it."
        )
    low, high = float(lows.min()), float(highs.max())
    if low < -IMAGE_OVERSHOOT or high > 1.0 + IMAGE_OVERSHOOT:
        raise FlashVideoInputError(_range_message(name, low, high, lows, highs))
    images = images.float()
    return images.clamp(0.0, 1.0) if low < 0.0 or high > 1.0 else images


def _frame_ranges(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame (min, max) of (F, H, W, C) as two (F,) tensors (NaN where a frame has one), without a copy."""
    if images.is_contiguous():
        return torch.aminmax(images.flatten(1), dim=1)  # one pass
    return images.amin(dim=(1, 2, 3)), images.amax(dim=(1, 2, 3))


def _range_message(name: str, low: float, high: float, lows: torch.Tensor, highs: torch.Tensor) -> str:
    """Why values low..high are not an IMAGE, the first frame out of range, and the likely fix."""
    out = ((lows < -IMAGE_OVERSHOOT) | (highs > 1.0 + IMAGE_OVERSHOOT)).nonzero().flatten().tolist()
    if low >= -1.0 - IMAGE_OVERSHOOT and high <= 1.0 + IMAGE_OVERSHOOT:
        fix = "These look like -1..1 values (VAE layout): use (x + 1) / 2."
    elif low >= -IMAGE_OVERSHOOT and 2.0 < high <= 255.0 + IMAGE_OVERSHOOT:
        fix = "These look like 0..255 pixel values: divide them by 255."
    else:
        fix = "Scale or clamp them into 0..1 (divide 8-bit values by 255, 16-bit ones by 65535)."
    return (f"{name} values must be in 0..1 (ComfyUI IMAGE); found {low:g}..{high:g} ({len(out)} frames out of "
            f"range, the first is frame {out[0]}, counting from 0). {fix}")


def video_to_image(video: torch.Tensor) -> torch.Tensor:
    """Video (B, 3, F, H, W) in [-1, 1] -> ComfyUI IMAGE (B*F, H, W, 3) in [0, 1], float32."""
    b, c, f, h, w = video.shape
    frames = video.float().permute(0, 2, 3, 4, 1).reshape(b * f, h, w, c)
    return ((frames + 1.0) / 2.0).clamp(0.0, 1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float frames in [0, 1] (any shape, e.g. IMAGE (F, H, W, 3)) -> uint8 0..255, clamped and rounded.

    The one float -> 8-bit conversion of the pack (video files, enhance frames, previews)."""
    return (images.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def latent_frames(num_frames: int) -> int:
    """Latent frame count for a 4k+1 pixel frame count: (F - 1) / 4 + 1."""
    return (num_frames - 1) // VAE_TEMPORAL_COMPRESSION + 1


def pixel_frames(num_latent_frames: int) -> int:
    """Pixel frame count decoded from T latent frames: 4 (T - 1) + 1."""
    return VAE_TEMPORAL_COMPRESSION * (num_latent_frames - 1) + 1


def check_num_frames(num_frames: int, name: str = "num_frames") -> None:
    """Raise unless num_frames is a positive 4k+1 (1, 5, 9, ..., 49, ...)."""
    if not isinstance(num_frames, int) or num_frames < 1 or (num_frames - 1) % VAE_TEMPORAL_COMPRESSION:
        step = VAE_TEMPORAL_COMPRESSION
        below = max(1, num_frames - (num_frames - 1) % step) if isinstance(num_frames, int) and num_frames >= 1 else 1
        raise FlashVideoInputError(
            f"{name}={num_frames!r} is not a frame count of the form 4k+1 "
            f"(valid: 1, 5, 9, ..., 49, ...; nearest below: {below}, above: {below + step})."
        )


def check_pixel_size(height: int, width: int, name: str = "size") -> None:
    """Raise unless height and width are multiples of 16 from 16 to MAX_PIXEL_EDGE."""
    for label, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or value < PIXEL_MULTIPLE or value % PIXEL_MULTIPLE:
            lower = PIXEL_MULTIPLE
            if isinstance(value, int):
                lower = max(PIXEL_MULTIPLE, (value // PIXEL_MULTIPLE) * PIXEL_MULTIPLE)
            raise FlashVideoInputError(
                f"{name} {label}={value!r} must be a multiple of {PIXEL_MULTIPLE} and at least "
                f"{PIXEL_MULTIPLE} (e.g. {lower} or {lower + PIXEL_MULTIPLE})."
            )
        if value > MAX_PIXEL_EDGE:
            raise FlashVideoInputError(
                f"{name} {label}={value} is over {MAX_PIXEL_EDGE}, the largest edge a video file (H.264) holds; "
                "FlashVideo's models were trained at 1080p (Stage II works up to 2K, 2560 on the long edge)."
            )


def check_latent(latent: torch.Tensor, name: str = "latent", channels: int = LATENT_CHANNELS) -> None:
    """Raise unless `latent` is a (B, channels, T, h, w) tensor with even h and w and only finite values.

    Raises FlashVideoInputError for the shape, finite.NonFiniteError for NaN/Inf (one reduction).
    """
    if not isinstance(latent, torch.Tensor) or latent.ndim != 5:
        shape = tuple(latent.shape) if isinstance(latent, torch.Tensor) else type(latent).__name__
        raise FlashVideoInputError(
            f"{name} must be a video latent of shape (batch, {channels}, frames, height/8, width/8); got {shape}. "
            "Image latents (4 dims) come from image models, not FlashVideo."
        )
    if latent.shape[1] != channels:
        raise FlashVideoInputError(
            f"{name} has {latent.shape[1]} channels; FlashVideo latents have {channels} "
            "(CogVideoX VAE). This latent comes from another model family."
        )
    if latent.shape[3] % 2 or latent.shape[4] % 2:
        raise FlashVideoInputError(
            f"{name} spatial size {tuple(latent.shape[3:])} must be even (pixel size a multiple of 16)."
        )
    check_finite(latent, name, "A latent with NaN/Inf decodes to a black or NaN video: it came from a stage that "
                 "failed (damaged weights: check them with `python -m flashvideo_core convert FILE`) or from a "
                 "node that made invalid values.")


def check_image(images: torch.Tensor, name: str = "images") -> None:
    """Raise unless `images` is a ComfyUI IMAGE batch (F, H, W, 3)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise FlashVideoInputError(f"{name} must be frames of shape (frames, height, width, 3); got {shape}.")
    if images.shape[0] < 1:
        raise FlashVideoInputError(f"{name} has no frames.")


def rgb_images(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """IMAGE (F, H, W, C), C in {1, 3, 4}, F >= 1 -> (F, H, W, 3): alpha dropped (logged), gray expanded.

    Raises FlashVideoInputError naming `name` for any other shape or an empty batch.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise FlashVideoInputError(
            f"{name} must be frames (frames, height, width, 3) in [0, 1] (1 or 4 channels are converted); got {shape}."
        )
    if images.shape[0] < 1:
        raise FlashVideoInputError(f"{name} has no frames.")
    if images.shape[-1] == 4:
        logger.warning("%s have an alpha channel; it is dropped (colours kept as stored, not composited).", name)
        return images[..., :3]
    if images.shape[-1] == 1:
        return images.expand(-1, -1, -1, 3)
    return images
