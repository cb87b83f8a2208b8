"""Sliced VAE decode and encode: temporal chunks (causal conv cache carried between them) and
spatial tiles with linearly blended overlaps, written into a preallocated CPU output.

Device memory is bounded by one slice (chunk x tile), not by the video. A slice covering the
whole latent is a single decoder call, identical to unsliced decoding. GroupNorm statistics are
per slice (as in the official chunked decode), so tiles overlap and are blended to hide seams.

decode_latents and encode_video are the one place `slices` is dispatched: a SliceSpec runs the
loops here; "auto" goes to retry.py (slices planned by cost.py, retried smaller after an
out-of-memory), which calls back into decode_latents / encode_video with a concrete SliceSpec.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from ..devices import model_device, model_dtype
from ..errors import FlashVideoInputError
from ..layout import check_latent, check_num_frames, check_pixel_size, latent_frames, pixel_frames, video_to_image
from ..progress import ProgressCallback, report
from ..rng import randn
from .cache import consumed, lean_cache
from .retry import encode_with_auto_slices, with_auto_slices
from .spec import AUTO, SPATIAL, UNSLICED, Slices, SliceSpec, check_slices, temporal_chunks, tile_starts

__all__ = [  # the slice types and geometry of spec.py are re-exported: callers may take them with the loops
    "AUTO",
    "DECODE_TICKS_PER_SLICE",
    "UNSLICED",
    "Slices",
    "SliceSpec",
    "check_slices",
    "decode_latents",
    "decode_preview_frame",
    "encode_video",
    "temporal_chunks",
    "tile_starts",
]


def _ramp(length: int, start: int, tile: int, size: int, overlap_px: int) -> torch.Tensor:
    """1D blend weights (length,) of a tile: linear ramps over the overlap on sides that have a neighbour."""
    weight = torch.ones(length)
    ramp_len = min(overlap_px, length // 2)
    if ramp_len > 0:
        ramp = (torch.arange(ramp_len, dtype=torch.float32) + 0.5) / ramp_len
        if start > 0:
            weight[:ramp_len] = ramp
        if start + tile < size:
            weight[-ramp_len:] = ramp.flip(0)
    return weight


def _tiles(height: int, width: int, spec: SliceSpec) -> list[tuple[int, int, int, int]]:
    """The (y, x, tile_h, tile_w) latent tiles of a (height, width) latent frame under `spec`."""
    rows = tile_starts(height, spec.tile_height, spec.overlap)
    cols = tile_starts(width, spec.tile_width, spec.overlap)
    tile_h = height if len(rows) == 1 else spec.tile_height
    tile_w = width if len(cols) == 1 else spec.tile_width
    return [(y, x, tile_h, tile_w) for y in rows for x in cols]


def decode_latents(
    vae,
    latents: torch.Tensor,
    slices: Slices = AUTO,
    callback: ProgressCallback | None = None,
    free_bytes: int | None = None,
) -> torch.Tensor:
    """RAW latents (B, 16, T, h, w) -> video (B, 3, 4(T-1)+1, 8h, 8w) in [-1, 1], float32 on CPU.

    slices: a SliceSpec (UNSLICED: one pass), or "auto": slices planned from `free_bytes` (None: the
    free memory of the VAE's device), halved and retried after an out-of-memory (retry.with_auto_slices).

    The causal decoder only maps an ODD latent frame count T to 4(T-1)+1 frames (an even count
    comes back as 4T frames); an even T is padded with a copy of its last frame and the 4 extra
    output frames are dropped (earlier frames never see later ones in a causal VAE).
    Progress: ("decode", done, slices x DECODE_TICKS_PER_SLICE), ticking inside each slice as the
    decoder's up blocks finish (a large slice takes minutes on a CPU).
    """
    check_latent(latents, "latents", channels=vae.config.latent_channels)
    if check_slices(slices) == AUTO:
        return with_auto_slices(vae, tuple(latents.shape), free_bytes, "decode",
                                lambda spec: decode_latents(vae, latents, spec, callback))
    wanted_frames = pixel_frames(latents.shape[2])
    if latents.shape[2] % 2 == 0:
        latents = torch.cat([latents, latents[:, :, -1:]], dim=2)
    video = _decode_odd(vae, latents, slices, callback)
    return video[:, :, :wanted_frames]


def _decode_odd(vae, latents: torch.Tensor, spec: SliceSpec, callback: ProgressCallback | None) -> torch.Tensor:
    """Latents (B, 16, T, h, w), T odd -> video (B, 3, 4(T-1)+1, 8h, 8w) clamped to [-1, 1], on CPU."""
    device, dtype = model_device(vae), model_dtype(vae)
    batch, _, frames, height, width = latents.shape
    out = torch.zeros(batch, 3, pixel_frames(frames), SPATIAL * height, SPATIAL * width)
    weight_sum = torch.zeros(SPATIAL * height, SPATIAL * width)
    tiles = _tiles(height, width, spec)
    chunks = temporal_chunks(frames, spec.chunk_frames)
    ticks = DECODE_TICKS_PER_SLICE if _up_block_costs(vae.decoder) else 1
    total, done = len(tiles) * len(chunks) * ticks, 0
    for y, x, tile_h, tile_w in tiles:
        weight = torch.outer(
            _ramp(SPATIAL * tile_h, y, tile_h, height, SPATIAL * spec.overlap),
            _ramp(SPATIAL * tile_w, x, tile_w, width, SPATIAL * spec.overlap),
        )
        cache = None
        for start, stop in chunks:
            z = latents[:, :, start:stop, y : y + tile_h, x : x + tile_w].to(device, dtype)
            if vae.post_quant_conv is not None:
                z = vae.post_quant_conv(z)
            with torch.no_grad(), lean_cache(vae.decoder), _ticks_within(vae.decoder, callback, "decode", done, total,
                                                                          ticks):
                pixels, cache = vae.decoder(z, conv_cache=consumed(cache))
            first = 0 if start == 0 else pixel_frames(start)
            region = out[:, :, first : first + pixels.shape[2], SPATIAL * y : SPATIAL * (y + tile_h),
                         SPATIAL * x : SPATIAL * (x + tile_w)]
            region += pixels.float().cpu() * weight
            del pixels, z
            done += ticks
            report(callback, "decode", done, total)
        weight_sum[SPATIAL * y : SPATIAL * (y + tile_h), SPATIAL * x : SPATIAL * (x + tile_w)] += weight
    if len(tiles) > 1:
        out /= weight_sum
    return out.clamp_(-1.0, 1.0)


DECODE_TICKS_PER_SLICE = 10
"""Progress units per decoded slice: the bar moves as the decoder's up blocks finish, not once a slice."""


def _up_block_costs(decoder) -> list[tuple[torch.nn.Module, float]]:
    """(resnet, estimated cost) for each resnet of the decoder's up blocks, in call order; [] if it has none.

    Up block i runs at 4^i times the latent's pixels (each block but the last upsamples 2x per axis)
    with its output channels c_i, so a resnet costs about c_i^2 x 4^i: for the real VAE (512, 256,
    256, 128 channels) the last two blocks are 80% of the time.
    """
    costs = []
    for index, block in enumerate(getattr(decoder, "up_blocks", None) or []):
        for resnet in getattr(block, "resnets", None) or []:
            channels = getattr(resnet, "out_channels", 1)
            costs.append((resnet, float(channels) ** 2 * 4.0**index))
    return costs


@contextmanager
def _ticks_within(decoder, callback: ProgressCallback | None, phase: str, done: int, total: int, ticks: int):
    """While one slice decodes: report (phase, done + k, total) as its up blocks' resnets finish,
    k = ticks x the estimated share of the slice's work done so far, each k once and k < ticks (the
    caller reports the slice's end). Hooks are removed on exit; a callback's exception propagates."""
    costs = _up_block_costs(decoder) if callback is not None and ticks > 1 else []
    whole = sum(cost for _, cost in costs)
    state = {"spent": 0.0, "sent": 0}
    handles = []

    def hook_for(cost: float):
        def after(module, inputs, output):
            state["spent"] += cost
            k = min(ticks - 1, int(ticks * state["spent"] / whole))
            if k > state["sent"]:
                state["sent"] = k
                report(callback, phase, done + k, total)
        return after

    try:
        handles = [module.register_forward_hook(hook_for(cost)) for module, cost in costs]
        yield
    finally:
        for handle in handles:
            handle.remove()


def encode_video(
    vae,
    video: torch.Tensor,
    generator: torch.Generator | None = None,
    sample: bool = True,
    slices: Slices = AUTO,
    callback: ProgressCallback | None = None,
    free_bytes: int | None = None,
) -> torch.Tensor:
    """Video (B, 3, F, H, W) in [-1, 1] -> RAW latent (B, 16, (F-1)/4+1, H/8, W/8), float32 on CPU.

    F must be 4k+1 and H, W multiples of 16. sample=True draws from the posterior with CPU noise
    from `generator` (required then); sample=False returns its mean. Slices are in latent units
    (chunk_frames latent frames = 4x pixel frames; the first chunk is 4k+1 frames, e.g. 17/16/16).
    slices: a SliceSpec, or "auto" as in decode_latents (when a frame fits, the chunks are the
    official Stage II encode's: 17, 16, 16 frames for 49; a retry draws the same posterior noise:
    retry.encode_with_auto_slices).
    """
    if video.ndim != 5 or video.shape[1] != 3:
        raise FlashVideoInputError(f"video must be (batch, 3, frames, height, width); got {tuple(video.shape)}.")
    check_num_frames(video.shape[2], "video frames")
    check_pixel_size(video.shape[3], video.shape[4], "video size")
    if sample and generator is None:
        raise FlashVideoInputError("encode_video(sample=True) needs a generator (seeded) for reproducibility.")
    if check_slices(slices) == AUTO:
        return encode_with_auto_slices(vae, _encoded_shape(vae, video), generator, free_bytes,
                                       lambda spec: encode_video(vae, video, generator, sample, spec, callback))
    mean, logvar = _encode_moments(vae, video, slices, callback).chunk(2, dim=1)
    if not sample:
        return mean
    std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
    return mean + std * randn(tuple(mean.shape), generator)


def _encoded_shape(vae, video: torch.Tensor) -> tuple[int, int, int, int, int]:
    """Video (B, 3, F, H, W) -> the shape (B, 16, (F-1)/4+1, H/8, W/8) of its latent."""
    batch, _, frames, height, width = video.shape
    return batch, vae.config.latent_channels, latent_frames(frames), height // SPATIAL, width // SPATIAL


def _encode_moments(vae, video: torch.Tensor, spec: SliceSpec, callback: ProgressCallback | None) -> torch.Tensor:
    """Video (B, 3, F, H, W) -> posterior moments (B, 32, (F-1)/4+1, H/8, W/8) (mean, then logvar), on CPU.

    Progress: ("encode", done, slices), once a slice.
    """
    device, dtype = model_device(vae), model_dtype(vae)
    batch, channels, lat_frames, lat_h, lat_w = _encoded_shape(vae, video)
    moments = torch.zeros(batch, 2 * channels, lat_frames, lat_h, lat_w)
    weight_sum = torch.zeros(lat_h, lat_w)
    tiles = _tiles(lat_h, lat_w, spec)
    chunks = temporal_chunks(lat_frames, spec.chunk_frames)
    total, done = len(tiles) * len(chunks), 0
    for y, x, tile_h, tile_w in tiles:
        weight = torch.outer(
            _ramp(tile_h, y, tile_h, lat_h, spec.overlap), _ramp(tile_w, x, tile_w, lat_w, spec.overlap)
        )
        cache = None
        for start, stop in chunks:
            first = 0 if start == 0 else pixel_frames(start)
            pixels = video[:, :, first : pixel_frames(stop), SPATIAL * y : SPATIAL * (y + tile_h),
                           SPATIAL * x : SPATIAL * (x + tile_w)]
            with torch.no_grad(), lean_cache(vae.encoder):
                h, cache = vae.encoder(pixels.to(device, dtype), conv_cache=consumed(cache))
                if vae.quant_conv is not None:
                    h = vae.quant_conv(h)
            moments[:, :, start:stop, y : y + tile_h, x : x + tile_w] += h.float().cpu() * weight
            done += 1
            report(callback, "encode", done, total)
        weight_sum[y : y + tile_h, x : x + tile_w] += weight
    if len(tiles) > 1:
        moments /= weight_sum
    return moments


def decode_preview_frame(vae, latents: torch.Tensor, frame: int = 0, max_size: int = 512) -> torch.Tensor:
    """One latent frame of (B, 16, T, h, w) -> image (H, W, 3) in [0, 1] for progress previews (cheap).

    The latent is shrunk first so the decoded image's long edge is at most about max_size.
    """
    z = latents[:1, :, frame : frame + 1].float()
    long_edge = SPATIAL * max(z.shape[-2:])
    if long_edge > max_size:
        factor = max_size / long_edge
        size = (max(1, round(z.shape[-2] * factor)), max(1, round(z.shape[-1] * factor)))
        z = F.interpolate(z[:, :, 0], size=size, mode="bilinear", align_corners=False).unsqueeze(2)
    device, dtype = model_device(vae), model_dtype(vae)
    with torch.no_grad():
        pixels, _ = vae.decoder(z.to(device, dtype))
    return video_to_image(pixels[:1, :, :1].float().cpu())[0]  # (H, W, 3) in [0, 1]
