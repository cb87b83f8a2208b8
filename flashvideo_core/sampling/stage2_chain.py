"""The one Stage II chain: pixels -> resize -> encode (posterior sample) -> degrade -> Stage II ODE -> decode.

`generate` (after Stage I), `enhance` (per window) and the tests run this function; the ComfyUI nodes
run its steps one node at a time (Prepare Stage II = `video_to_stage2_latent`, Latent Degradation =
`degradation.degrade_latent`, Stage II Sampler = `stages.run_stage2`, VAE Decode), with the same
seed rule (settings.stage2_seeds), so a node graph and a CLI run with matching seeds give the same
latent.

Models come as a `Stage2Models` bundle whose `use` says how a model is brought to where it runs for
the span it is used (default: as it is); `generate` passes one that moves each model to the GPU and
back, so one model at a time holds device memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from .. import config, devices
from ..devices import model_device
from ..layout import check_pixel_size, frames_to_video, video_to_frames
from ..progress import ProgressCallback
from ..rng import cpu_generator
from ..vae import AUTO, Slices, decode_latents, encode_video
from .degradation import add_degradation_noise
from .settings import Stage2Settings, check_seed, stage2_seeds
from .stages import VelocityWrap, check_embedding, run_stage2

RESIZE_BATCH = 8
"""Frames resized per interpolate call (bounds the intermediate)."""


def resize_video(video: torch.Tensor, height: int, width: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 3, F, H, W) -> (B, 3, F, height, width), bilinear, antialias=True, align_corners=False.

    out: a (B, 3, F, height, width) tensor to write into, e.g. a view into a larger one (returned);
    None: a new float32 one, or, for a video already at that size, the video as it is (float32; no
    copy when it already is float32). RESIZE_BATCH frames are resized at a time, so only they are
    held twice.
    """
    if out is None and tuple(video.shape[-2:]) == (height, width):
        return video.float()
    batch, channels, frames, _, _ = video.shape
    if out is None:
        out = torch.empty(batch, channels, frames, height, width)
    for start in range(0, frames, RESIZE_BATCH):
        chunk = video_to_frames(video[:, :, start : start + RESIZE_BATCH].float())  # (B*f, 3, H, W)
        if tuple(chunk.shape[-2:]) != (height, width):
            chunk = F.interpolate(chunk, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
        out[:, :, start : start + RESIZE_BATCH] = frames_to_video(chunk, batch)
    return out


def video_to_stage2_latent(
    vae,
    video: torch.Tensor,
    height: int,
    width: int,
    seed: int,
    slices: Slices = AUTO,
    callback: ProgressCallback | None = None,
    free_bytes: int | None = None,
) -> torch.Tensor:
    """Pixel video (B, 3, F, H, W) in [-1, 1] -> RAW latent (B, 16, (F-1)/4+1, height/8, width/8).

    Resized to height x width (multiples of 16), then encoded with a posterior sample drawn from
    rng.cpu_generator(seed): the encode seed of stage2_seeds. slices: see vae.Slices ("auto" plans
    with free_bytes; None: the free memory of the VAE's device).
    """
    check_pixel_size(height, width, "Stage II size")
    check_seed(seed)
    resized = resize_video(video, height, width)
    return encode_video(vae, resized, cpu_generator(seed), sample=True, slices=slices, callback=callback,
                        free_bytes=free_bytes)


def resident(module: torch.nn.Module) -> AbstractContextManager[torch.nn.Module]:
    """The default Stage2Models.use: the module as it is, where it is."""
    return contextlib.nullcontext(module)


@dataclass(frozen=True)
class Stage2Models:
    """What the chain runs: the Stage II transformer, the VAE, the Stage II prompt embedding (1, 226, D).

    use(module) -> a context manager giving the module ready to run for the span it is used (e.g.
    devices.on_device, or ComfyUI's model manager in the nodes); default `resident`.
    free_memory(device) -> bytes free there, for planning "auto" VAE slices and checking what fits
    (ComfyUI's own count inside ComfyUI); None: devices.free_memory.
    """

    transformer: torch.nn.Module
    vae: torch.nn.Module
    cond: torch.Tensor
    use: Callable[[torch.nn.Module], AbstractContextManager[torch.nn.Module]] = resident
    free_memory: Callable[[torch.device], int] | None = None

    def free_bytes(self, device: torch.device | str) -> int:
        """Bytes free on `device` by this bundle's count (free_memory, else devices.free_memory)."""
        return (self.free_memory or devices.free_memory)(torch.device(device))

    def check(self) -> None:
        """Raise FlashVideoInputError unless cond is (1, tokens, D) with D the transformer's text width."""
        check_embedding(self.cond, self.transformer, "Stage II prompt embedding", batch=1)


@dataclass(frozen=True)
class Stage2Result:
    """latent: the refined RAW latent (B, 16, T, h, w); video: it decoded, (B, 3, F, 8h, 8w) in [-1, 1], CPU."""

    latent: torch.Tensor
    video: torch.Tensor


@runtime_checkable
class LatentStage2(Protocol):
    """The Stage II chain split at its latent: what enhance's latent window blends need (latent_windows.py).

    frames_per_latent: pixel frames per latent frame after the first (the VAE 4: latent frame 0 of a
    clip encodes its first frame alone, latent frame j >= 1 frames 4j-3..4j; a stand-in codec 1).
    scale: model space = RAW latent x scale (the degradation is added there).
    encode(video (B, 3, F, H, W) in [-1, 1], size (height, width), seed) -> RAW latent (B, C, T, h, w),
    fp32 CPU, a posterior sample drawn with `seed`; sample(degraded RAW latent, Stage2Settings,
    velocity_wrap) -> refined RAW latent (stages.run_stage2); decode(RAW latent) -> pixels, fp32 CPU.
    """

    frames_per_latent: int
    scale: float

    def encode(self, video: torch.Tensor, size: tuple[int, int], seed: int) -> torch.Tensor: ...

    def sample(self, latent: torch.Tensor, settings: Stage2Settings,
               velocity_wrap: VelocityWrap | None = None) -> torch.Tensor: ...

    def decode(self, latent: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Stage2Chain:
    """The LatentStage2 of the real models: VAE encode / run_stage2 / VAE decode, each model through
    models.use for its span; slices/device/dtype/callback as refine_video takes them."""

    models: Stage2Models
    slices: Slices = AUTO
    device: object = None
    dtype: torch.dtype | None = None
    callback: ProgressCallback | None = None
    frames_per_latent: int = config.VAE_TEMPORAL_COMPRESSION
    scale: float = config.STAGE2_SCALE_FACTOR

    def encode(self, video: torch.Tensor, size: tuple[int, int], seed: int) -> torch.Tensor:
        """video_to_stage2_latent at `size` with the encode seed `seed`."""
        with self.models.use(self.models.vae) as vae:
            return video_to_stage2_latent(vae, video, size[0], size[1], seed, self.slices, self.callback,
                                          self.models.free_bytes(model_device(vae)))

    def sample(self, latent: torch.Tensor, settings: Stage2Settings,
               velocity_wrap: VelocityWrap | None = None) -> torch.Tensor:
        """stages.run_stage2 of the degraded RAW latent with the bundle's transformer and prompt."""
        with self.models.use(self.models.transformer) as transformer:
            return run_stage2(transformer, self.models.cond, latent, settings, device=self.device, dtype=self.dtype,
                              callback=self.callback, velocity_wrap=velocity_wrap)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """vae.decode_latents: RAW latent -> pixels (B, 3, F, H, W) in [-1, 1], CPU."""
        with self.models.use(self.models.vae) as vae:
            return decode_latents(vae, latent, self.slices, self.callback, self.models.free_bytes(model_device(vae)))


def refine_video(
    models: Stage2Models,
    video: torch.Tensor,
    size: tuple[int, int],
    settings: Stage2Settings,
    seed: int,
    *,
    slices: Slices = AUTO,
    device=None,
    dtype: torch.dtype | None = None,
    callback: ProgressCallback | None = None,
) -> Stage2Result:
    """Pixels (B, 3, F, H, W) in [-1, 1], F = 4k+1 -> Stage II at size (height, width), multiples of 16.

    seed: the Stage II seed s (encode s, degradation s + 1: settings.stage2_seeds). The VAE is used
    for the encode and again for the decode, the transformer in between (each through models.use);
    device/dtype as in stages.run_stage2. Progress: encode, stage2, decode phases.
    """
    chain = Stage2Chain(models, slices, device, dtype, callback)
    return refine_latent_chain(chain, video, size, settings, seed)


def refine_latent_chain(chain: LatentStage2, video: torch.Tensor, size: tuple[int, int], settings: Stage2Settings,
                        seed: int, noise: Callable[[tuple[int, ...]], torch.Tensor] | None = None) -> Stage2Result:
    """The chain's steps in order: encode (seed s) -> degrade (noise from seed s + 1) -> sample -> decode.

    noise(latent shape) -> the degradation eps to use instead (enhance's shared noise); None: drawn
    from rng.cpu_generator(s + 1) as stage2_seeds says.
    """
    encode_seed, degrade_seed = stage2_seeds(seed)
    latent = chain.encode(video, size, encode_seed)
    eps = None if noise is None else noise(tuple(latent.shape))
    degraded = add_degradation_noise(latent, settings.noise_step, cpu_generator(degrade_seed), chain.scale, eps)
    del latent, eps
    refined = chain.sample(degraded, settings)
    del degraded
    return Stage2Result(refined, chain.decode(refined))
