"""The latent space Stage II trains in: a codec maps pixel clips to SCALED latents and back.

Protocol: encode(pixels (B, 3, F, H, W) in [-1, 1], generator) -> scaled latent (B, C, T', h, w);
decode(scaled latent) -> pixels (B, 3, F, H, W). "Scaled" is what the Stage II model sees (for the
real VAE: raw latent x config.STAGE2_SCALE_FACTOR), so DEG_latent and the objective work on it as is.

- VaeCodec: the CogVideoX VAE, with a posterior sample as inference draws it
  (sampling.stage2_chain.video_to_stage2_latent: vae.encode_video(sample=True) from a CPU generator).
- PixelUnshuffleCodec: a STAND-IN latent space for tests and the toy benchmark (no VAE weights
  exist here): a fixed 2x2 pixel-unshuffle of every frame, 3 -> 12 channels, frames kept. It is
  lossless and has no temporal compression; it is not the VAE's latent space.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from ..config import STAGE2_SCALE_FACTOR
from ..errors import FlashVideoInputError
from ..layout import frames_to_video, video_to_frames
from ..vae import AUTO, Slices, decode_latents, encode_video


class Codec(Protocol):
    """Pixels <-> scaled latents (see the module docstring). channels: the latent channel count."""

    channels: int

    def encode(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...

    def decode(self, latent: torch.Tensor) -> torch.Tensor: ...


class VaeCodec:
    """The CogVideoX VAE as a codec: posterior sample x STAGE2_SCALE_FACTOR; decode divides it back.

    vae: an AutoencoderKLCogVideoX (vae.load_vae); slices: vae.Slices for both directions. Frames
    4k+1 -> (F-1)/4+1 latent frames, H x W (multiples of 16) -> H/8 x W/8, 16 channels. The latent
    comes back float32 on CPU (encode_video's contract).
    """

    def __init__(self, vae, slices: Slices = AUTO, scale: float = STAGE2_SCALE_FACTOR):
        self.vae, self.slices, self.scale = vae, slices, scale
        self.channels = int(vae.config.latent_channels)

    def encode(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """pixels (B, 3, F, H, W) in [-1, 1] -> scaled latent (B, 16, (F-1)/4+1, H/8, W/8), fp32 CPU."""
        with torch.no_grad():
            raw = encode_video(self.vae, pixels, generator, sample=True, slices=self.slices)
        return raw * self.scale

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """scaled latent (B, 16, T, h, w) -> pixels (B, 3, 4(T-1)+1, 8h, 8w) in [-1, 1], fp32 CPU."""
        with torch.no_grad():
            return decode_latents(self.vae, latent.float() / self.scale, self.slices)


class PixelUnshuffleCodec:
    """STAND-IN codec: 2x2 (factor x factor) pixel-unshuffle per frame, (B, 3, F, H, W) -> (B, 3 f^2, F, H/f, W/f).

    Deterministic (the generator is not used) and exactly invertible; values stay in [-1, 1].
    """

    def __init__(self, factor: int = 2):
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise FlashVideoInputError(f"factor={factor!r} must be a positive integer (default 2).")
        self.factor = factor
        self.channels = 3 * factor * factor

    def encode(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """pixels (B, 3, F, H, W) -> (B, 3 f^2, F, H/f, W/f); H and W must be multiples of f."""
        if pixels.ndim != 5 or pixels.shape[1] != 3:
            raise FlashVideoInputError(f"pixels must be (batch, 3, frames, H, W); got {tuple(pixels.shape)}.")
        if pixels.shape[3] % self.factor or pixels.shape[4] % self.factor:
            raise FlashVideoInputError(f"pixel size {tuple(pixels.shape[3:])} must be a multiple of {self.factor}.")
        frames = F.pixel_unshuffle(video_to_frames(pixels.float()), self.factor)
        return frames_to_video(frames, pixels.shape[0]).contiguous()

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, 3 f^2, F, h, w) -> pixels (B, 3, F, f h, f w)."""
        if latent.ndim != 5 or latent.shape[1] != self.channels:
            raise FlashVideoInputError(f"latent must be (batch, {self.channels}, frames, h, w); "
                                       f"got {tuple(latent.shape)}.")
        frames = F.pixel_shuffle(video_to_frames(latent.float()), self.factor)
        return frames_to_video(frames, latent.shape[0]).contiguous()
