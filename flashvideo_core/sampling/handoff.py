"""Stage I -> Stage II hand-off: decode, resize (bilinear, antialias), re-encode with a posterior sample."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import STAGE2_HEIGHT, STAGE2_WIDTH
from ..errors import FlashVideoInputError
from ..layout import check_pixel_size
from ..progress import ProgressCallback
from ..rng import cpu_generator
from ..vae.slicing import AUTO, Slices, decode_latents, encode_video

RESIZE_BATCH = 8
"""Frames resized per interpolate call (bounds the intermediate)."""


def resize_video(video: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 3, F, H, W) -> (B, 3, F, height, width), bilinear, antialias=True, align_corners=False, float32."""
    batch, channels, frames, _, _ = video.shape
    out = torch.empty(batch, channels, frames, height, width)
    for start in range(0, frames, RESIZE_BATCH):
        chunk = video[:, :, start : start + RESIZE_BATCH].float()
        flat = chunk.permute(0, 2, 1, 3, 4).reshape(-1, channels, *chunk.shape[-2:])
        resized = F.interpolate(flat, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
        out[:, :, start : start + chunk.shape[2]] = resized.reshape(batch, -1, channels, height, width).permute(
            0, 2, 1, 3, 4
        )
    return out


def _generator(generator: torch.Generator | None, seed: int | None) -> torch.Generator:
    """The caller's generator, else one seeded with `seed`; neither is an error (the posterior sample
    must be reproducible, not silently seeded with 0)."""
    if generator is not None:
        return generator
    if seed is None:
        raise FlashVideoInputError("the Stage II encode samples the posterior: give a seed or a generator.")
    return cpu_generator(seed)


def video_to_stage2_latent(
    vae,
    video: torch.Tensor,
    height: int = STAGE2_HEIGHT,
    width: int = STAGE2_WIDTH,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    slices: Slices = AUTO,
    callback: ProgressCallback | None = None,
) -> torch.Tensor:
    """Pixel video (B, 3, F, H, W) in [-1, 1] -> RAW latent (B, 16, (F-1)/4+1, height/8, width/8), a posterior sample.

    slices: a SliceSpec, or "auto" to plan slices from the free memory (vae.slicing.encode_video).
    """
    check_pixel_size(height, width, "Stage II size")
    generator = _generator(generator, seed)
    resized = resize_video(video, height, width)
    return encode_video(vae, resized, generator, sample=True, slices=slices, callback=callback)


def stage1_to_stage2(
    vae,
    latents: torch.Tensor,
    height: int = STAGE2_HEIGHT,
    width: int = STAGE2_WIDTH,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    slices: Slices = AUTO,
    callback: ProgressCallback | None = None,
) -> torch.Tensor:
    """RAW Stage I latent -> decode (frames in [-1, 1], not quantised) -> resize -> encode -> RAW latent.

    The x1.15258426 Stage II scaling happens later, in degradation and Stage II sampling.
    slices: a SliceSpec for both VAE passes, or "auto" to plan them from the free memory.
    """
    check_pixel_size(height, width, "Stage II size")
    video = decode_latents(vae, latents, slices=slices, callback=callback)
    return video_to_stage2_latent(vae, video, height, width, generator, seed, slices, callback)
