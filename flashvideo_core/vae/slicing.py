"""Sliced VAE decode and encode: temporal chunks (causal conv cache carried between them) and
spatial tiles with linearly blended overlaps, written into a preallocated CPU output.

Device memory is bounded by one slice (chunk x tile), not by the video. A slice covering the
whole latent is a single decoder call, identical to unsliced decoding. GroupNorm statistics are
per slice (as in the official chunked decode), so tiles overlap and are blended to hide seams.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..devices import model_device, model_dtype
from ..errors import FlashVideoInputError
from ..layout import check_latent, check_num_frames, check_pixel_size
from ..progress import ProgressCallback, report
from ..rng import randn

SPATIAL, TEMPORAL = 8, 4


@dataclass(frozen=True)
class SliceSpec:
    """How to slice, in LATENT units. None = no split along that axis.

    chunk_frames: latent frames per temporal chunk (even; the first chunk takes an odd count so
        the causal VAE sees frame 0 alone first, e.g. 13 latent frames at 2 -> [0:3], [3:5], ...).
    tile_height, tile_width: latent pixels per spatial tile; overlap: latent pixels shared by
        neighbouring tiles and blended linearly.
    """

    chunk_frames: int | None = 2
    tile_height: int | None = None
    tile_width: int | None = None
    overlap: int = 8

    def validate(self) -> None:
        """Raise FlashVideoInputError for unusable values."""
        if self.chunk_frames is not None and (self.chunk_frames < 2 or self.chunk_frames % 2):
            raise FlashVideoInputError(f"chunk_frames={self.chunk_frames} must be an even number >= 2 (or None).")
        for name in ("tile_height", "tile_width"):
            value = getattr(self, name)
            if value is not None and value < 4:
                raise FlashVideoInputError(f"{name}={value} must be at least 4 latent pixels (32 px) or None.")
        if self.overlap < 0:
            raise FlashVideoInputError(f"overlap={self.overlap} must be >= 0.")


UNSLICED = SliceSpec(chunk_frames=None)
"""One pass: no temporal chunks, no tiles."""

AUTO = "auto"
Slices = SliceSpec | Literal["auto"]
"""How a VAE pass is sliced: a SliceSpec (UNSLICED for one pass) or "auto" (planned from free memory)."""


def check_slices(slices) -> Slices:
    """Return `slices` if it is a valid SliceSpec or "auto"; raise FlashVideoInputError otherwise."""
    if isinstance(slices, SliceSpec):
        slices.validate()
        return slices
    if slices == AUTO:
        return slices
    raise FlashVideoInputError(
        f"slices={slices!r} must be a SliceSpec (UNSLICED for one pass) or 'auto' (planned from free memory)."
    )


def temporal_chunks(num_frames: int, chunk: int | None) -> list[tuple[int, int]]:
    """Latent frame ranges: an odd-sized first chunk, then even chunks of `chunk` frames."""
    if chunk is None or num_frames <= chunk + 1:
        return [(0, num_frames)]
    first = 1 + (num_frames - 1) % chunk
    if first == 1:
        first += chunk
    ranges = [(0, first)]
    while ranges[-1][1] < num_frames:
        start = ranges[-1][1]
        ranges.append((start, min(start + chunk, num_frames)))
    return ranges


def tile_starts(size: int, tile: int | None, overlap: int) -> list[int]:
    """Start offsets of the fewest tiles of `tile` covering `size` with at least `overlap` shared.

    The tiles are spread evenly, so neighbours share about the same strip (e.g. size 64, tile 36,
    overlap 4 -> [0, 28]). overlap is capped at tile // 2.
    """
    if tile is None or tile >= size:
        return [0]
    overlap = min(overlap, tile // 2)
    count = math.ceil((size - overlap) / (tile - overlap))
    return [round(i * (size - tile) / (count - 1)) for i in range(count)]


def _ramp(length: int, start: int, tile: int, size: int, overlap_px: int) -> torch.Tensor:
    """1D blend weights of a tile: linear ramps over the overlap on sides that have a neighbour."""
    weight = torch.ones(length)
    ramp_len = min(overlap_px, length // 2)
    if ramp_len > 0:
        ramp = (torch.arange(ramp_len, dtype=torch.float32) + 0.5) / ramp_len
        if start > 0:
            weight[:ramp_len] = ramp
        if start + tile < size:
            weight[-ramp_len:] = ramp.flip(0)
    return weight


def _tiles(height: int, width: int, spec: SliceSpec):
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
    free memory of the VAE's device), halved and retried after an out-of-memory (see _with_auto_slices).

    The causal decoder only maps an ODD latent frame count T to 4(T-1)+1 frames (an even count
    comes back as 4T frames); an even T is padded with a copy of its last frame and the 4 extra
    output frames are dropped (earlier frames never see later ones in a causal VAE).
    Progress: ("decode", done, slices x DECODE_TICKS_PER_SLICE), ticking inside each slice as the
    decoder's up blocks finish (a large slice takes minutes on a CPU).
    """
    check_latent(latents, "latents", channels=vae.config.latent_channels)
    if check_slices(slices) == AUTO:
        return _with_auto_slices(vae, tuple(latents.shape), free_bytes, "decode",
                                 lambda spec: decode_latents(vae, latents, spec, callback))
    wanted_frames = TEMPORAL * (latents.shape[2] - 1) + 1
    if latents.shape[2] % 2 == 0:
        latents = torch.cat([latents, latents[:, :, -1:]], dim=2)
    video = _decode_odd(vae, latents, slices, callback)
    return video[:, :, :wanted_frames]


def _decode_odd(vae, latents: torch.Tensor, spec: SliceSpec, callback: ProgressCallback | None) -> torch.Tensor:
    device, dtype = model_device(vae), model_dtype(vae)
    batch, _, frames, height, width = latents.shape
    out_frames = TEMPORAL * (frames - 1) + 1
    out = torch.zeros(batch, 3, out_frames, SPATIAL * height, SPATIAL * width)
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
            with torch.no_grad(), _ticks_within(vae.decoder, callback, "decode", done, total, ticks):
                pixels, cache = vae.decoder(z, conv_cache=cache)
            first = 0 if start == 0 else TEMPORAL * (start - 1) + 1
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
    official Stage II encode's: 17, 16, 16 frames for 49; a retry draws the same posterior noise).
    """
    if video.ndim != 5 or video.shape[1] != 3:
        raise FlashVideoInputError(f"video must be (batch, 3, frames, height, width); got {tuple(video.shape)}.")
    check_num_frames(video.shape[2], "video frames")
    check_pixel_size(video.shape[3], video.shape[4], "video size")
    if sample and generator is None:
        raise FlashVideoInputError("encode_video(sample=True) needs a generator (seeded) for reproducibility.")
    if check_slices(slices) == AUTO:
        return _encode_auto(vae, video, generator, sample, callback, free_bytes)
    spec = slices
    device, dtype = model_device(vae), model_dtype(vae)
    batch, _, frames, height, width = video.shape
    lat_frames, lat_h, lat_w = (frames - 1) // TEMPORAL + 1, height // SPATIAL, width // SPATIAL
    moments = torch.zeros(batch, 2 * vae.config.latent_channels, lat_frames, lat_h, lat_w)
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
            first = 0 if start == 0 else TEMPORAL * (start - 1) + 1
            last = TEMPORAL * (stop - 1) + 1
            pixels = video[:, :, first:last, SPATIAL * y : SPATIAL * (y + tile_h), SPATIAL * x : SPATIAL * (x + tile_w)]
            with torch.no_grad():
                h, cache = vae.encoder(pixels.to(device, dtype), conv_cache=cache)
                if vae.quant_conv is not None:
                    h = vae.quant_conv(h)
            moments[:, :, start:stop, y : y + tile_h, x : x + tile_w] += h.float().cpu() * weight
            done += 1
            report(callback, "encode", done, total)
        weight_sum[y : y + tile_h, x : x + tile_w] += weight
    if len(tiles) > 1:
        moments /= weight_sum
    mean, logvar = moments.chunk(2, dim=1)
    if not sample:
        return mean
    std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
    return mean + std * randn(tuple(mean.shape), generator)


def decode_preview_frame(vae, latents: torch.Tensor, frame: int = 0, max_size: int = 512) -> torch.Tensor:
    """One latent frame -> image (H, W, 3) in [0, 1] for progress previews (cheap).

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
    return ((pixels[0, :, 0].float().cpu().permute(1, 2, 0) + 1.0) / 2.0).clamp(0.0, 1.0)


BYTES_PER_OUTPUT_VOXEL = 6 * 1024
"""fp32 decoder peak bytes per output pixel per frame that grow with the first block width (128 for
the real VAE): the full-resolution activations; scaled by width / 128 and by dtype size."""
FIXED_BYTES_PER_OUTPUT_VOXEL = 2 * 1024
"""fp32 decoder peak bytes per output pixel per frame that do not grow with the width: the
16-channel latent interpolated to full resolution by every spatial norm, padding copies, output.
Both constants are set above what bench/bench_vae_memory_model.py measures for block widths
8 to 128 (it prints measured / planned, which must stay below 1), so on a CPU, where running out
of memory kills the process instead of raising, a plan at half the free memory fits."""
MIN_TILE = 8


def bytes_per_output_voxel(vae) -> float:
    """Planned decoder peak bytes per output pixel per frame for this VAE (its width and dtype)."""
    dtype = model_dtype(vae)
    width_scale = vae.config.block_out_channels[0] / 128
    return (BYTES_PER_OUTPUT_VOXEL * width_scale + FIXED_BYTES_PER_OUTPUT_VOXEL) * torch.finfo(dtype).bits / 32


def auto_slice_spec(
    vae, latent_shape: tuple[int, ...], free_bytes: int, budget_fraction: float = 0.5, chunk: int = 2
) -> SliceSpec:
    """Pick slices for decoding a latent of `latent_shape` within budget_fraction x free_bytes.

    Cost model: a chunk of c latent frames decodes (4c + 2) frames at 64 pixels per latent pixel,
    each costing bytes_per_output_voxel(vae). Chunks stay at `chunk` latent frames
    (official: 2 for decode, 4 for the Stage II encode's 17/16/16 frames), else 2. If a whole frame
    of a 2-frame chunk does not fit, it is split into the fewest tiles that each fit, each axis
    cut evenly, neighbours sharing max(2, s // 8) latent pixels (s: the side of a square tile that
    would fit); among equally few, the split decoding the least area, so the longer axis is split
    first (e.g. a frame costing 1.5x the budget -> 2 halves across its longer axis, not 4 squares). Tiles never go below
    MIN_TILE (MIN_TILE squares if nothing larger fits). An axis left whole has tile size None.
    """
    bytes_per_voxel = bytes_per_output_voxel(vae)
    budget = max(1.0, free_bytes * budget_fraction)
    height, width = latent_shape[-2], latent_shape[-1]
    for frames in dict.fromkeys((chunk, 2)):  # the wanted chunks, else the smallest (2) before tiling
        per_latent_pixel = (TEMPORAL * frames + 2) * SPATIAL * SPATIAL * bytes_per_voxel
        if height * width * per_latent_pixel <= budget:
            return SliceSpec(chunk_frames=frames)
    max_pixels = budget / per_latent_pixel  # latent pixels one tile may hold
    overlap = max(2, max(MIN_TILE, int(max_pixels**0.5)) // 8)
    smallest = max(MIN_TILE, 2 * overlap)  # a split axis's tiles: at least MIN_TILE and twice the overlap
    best = None  # (tile count, decoded latent pixels, tile_height, tile_width); None = axis left whole
    for rows in range(1, height + 1):
        tile_h = height if rows == 1 else math.ceil((height + (rows - 1) * overlap) / rows)
        if rows > 1 and tile_h < smallest:
            break
        widest = int(max_pixels // tile_h)
        if widest >= width:
            tile_w = width
        elif widest < smallest:
            continue
        else:
            cols = math.ceil((width - overlap) / (widest - overlap))
            tile_w = math.ceil((width + (cols - 1) * overlap) / cols)
        split_h = tile_h if tile_h < height else None
        split_w = tile_w if tile_w < width else None
        count = len(tile_starts(height, split_h, overlap)) * len(tile_starts(width, split_w, overlap))
        candidate = (count, count * tile_h * tile_w, split_h, split_w)
        if best is None or candidate[:2] < best[:2]:
            best = candidate
    if best is None:
        return SliceSpec(chunk_frames=2, tile_height=min(MIN_TILE, height), tile_width=min(MIN_TILE, width),
                         overlap=2)
    return SliceSpec(chunk_frames=2, tile_height=best[2], tile_width=best[3], overlap=overlap)


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _encode_auto(vae, video, generator, sample, callback, free_bytes) -> torch.Tensor:
    """encode_video with auto slices (chunks of 4 latent frames), the generator rewound on each retry."""
    latent_shape = (video.shape[0], vae.config.latent_channels, (video.shape[2] - 1) // TEMPORAL + 1,
                    video.shape[3] // SPATIAL, video.shape[4] // SPATIAL)
    state = generator.get_state() if generator is not None else None

    def run(spec: SliceSpec) -> torch.Tensor:
        if state is not None:
            generator.set_state(state)  # a retry draws the same posterior noise
        return encode_video(vae, video, generator, sample, spec, callback)

    return _with_auto_slices(vae, latent_shape, free_bytes, "encode", run, chunk=4)


def _with_auto_slices(
    vae, latent_shape: tuple[int, ...], free_bytes: int | None, what: str, run, chunk: int = 2
) -> torch.Tensor:
    """run(spec) with spec = auto_slice_spec(...), retried with halved tiles after out-of-memory."""
    if free_bytes is None:
        from ..devices import free_memory

        free_bytes = free_memory(model_device(vae))
    spec = auto_slice_spec(vae, latent_shape, free_bytes, chunk=chunk)
    height, width = latent_shape[-2:]
    while True:
        try:
            return run(spec)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not _is_out_of_memory(exc):
                raise
            tile_h, tile_w = spec.tile_height or height, spec.tile_width or width
            if max(tile_h, tile_w) <= MIN_TILE:
                raise FlashVideoInputError(
                    f"VAE {what} ran out of memory even with {tile_w}x{tile_h} (WxH) latent tiles; free memory or "
                    "offload other models."
                ) from exc
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            spec = SliceSpec(
                chunk_frames=2, tile_height=max(MIN_TILE, tile_h // 2), tile_width=max(MIN_TILE, tile_w // 2),
                overlap=max(2, spec.overlap // 2),
            )
