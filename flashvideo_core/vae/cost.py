"""The VAE's memory cost model: planned decoder peak bytes per output voxel, and the slices
("auto") that keep one slice within a share of the free memory.
"""

from __future__ import annotations

import math

import torch

from ..devices import model_dtype
from .spec import SPATIAL, TEMPORAL, SliceSpec, temporal_chunks, tile_starts

BYTES_PER_OUTPUT_VOXEL = 6 * 1024
"""Decoder activation peak bytes per output pixel per frame of a chunk that grow with the first block width
(128 for the real VAE; scaled by width / 128 and by dtype size): the peak is in the first resnet of the
last up block, where its input, the spatial norm's conv_y, conv_b, normed, scaled and shifted copies
(6 x 256 channels x 4 bytes at the real widths) are alive at once."""
FIXED_BYTES_PER_OUTPUT_VOXEL = 128
"""Decoder activation peak bytes per output pixel per frame that do not grow with the width: the 16-channel
latent interpolated to full resolution by the spatial norms (64 bytes in fp32, held twice at times).
Live tensor bytes measured at the real widths were 6209 per voxel for a later chunk and 6942 for the first
(which also holds part of the conv cache it builds), against 6272 here; the cache carried between chunks is
counted exactly apart (decoder_cache_bytes). Whole clips (bench/bench_vae_memory_model.py): 0.86-0.91 of
planned_decode_bytes, 1080p included."""
MIN_TILE = 8
"""Smallest latent tile side auto slicing plans or retries with."""


def bytes_per_output_voxel(vae) -> float:
    """Planned decoder peak bytes per output pixel per frame for this VAE (its width and dtype)."""
    dtype = model_dtype(vae)
    width_scale = vae.config.block_out_channels[0] / 128
    return (BYTES_PER_OUTPUT_VOXEL * width_scale + FIXED_BYTES_PER_OUTPUT_VOXEL) * torch.finfo(dtype).bits / 32


def decoder_cache_bytes(vae, height: int, width: int, batch: int = 1) -> int:
    """Bytes of the causal conv cache the decoder carries from one chunk to the next for a (height, width)
    latent tile: each causal conv with a time kernel k > 1 keeps its last k - 1 input frames, at its layer's
    size (conv_in and the mid block at the latent's, up block i at 4^i times it, conv_out at the output's).

    Convs with a time kernel of 1 keep nothing (slicing drops the clone diffusers returns: cache.lean_cache).
    A later chunk holds one such cache at its peak (old entries are freed as they are read: cache.consumed).
    """
    decoder = vae.decoder
    blocks = len(decoder.up_blocks)
    element = torch.finfo(model_dtype(vae)).bits // 8
    total = 0
    for name, module in decoder.named_modules():
        kernel = getattr(module, "time_kernel_size", 1)
        conv = getattr(module, "conv", None)
        if kernel <= 1 or conv is None or not hasattr(module, "fake_context_parallel_forward"):
            continue
        if name.startswith("up_blocks."):
            scale = 4 ** int(name.split(".")[1])
        else:
            scale = 4 ** (blocks - 1) if name.startswith("conv_out") else 1
        total += (kernel - 1) * conv.in_channels * scale * height * width * element
    return batch * total


def decode_slice_bytes(vae, chunk_frames: int, tile_height: int, tile_width: int, batch: int = 1) -> float:
    """Planned device peak of decoding one slice: `chunk_frames` latent frames (the first chunk's odd count
    or a later chunk's even one) of a (tile_height, tile_width) latent tile, with the conv cache held.

    = output frames of the chunk (4(c - 1) + 1 if c is odd, else 4c) x 64 x tile pixels x
    bytes_per_output_voxel, + decoder_cache_bytes of the tile."""
    out_frames = TEMPORAL * (chunk_frames - 1) + 1 if chunk_frames % 2 else TEMPORAL * chunk_frames
    voxels = batch * out_frames * SPATIAL * SPATIAL * tile_height * tile_width
    return voxels * bytes_per_output_voxel(vae) + decoder_cache_bytes(vae, tile_height, tile_width, batch)


def planned_decode_bytes(vae, latent_shape: tuple[int, ...], spec: SliceSpec, output: bool = True) -> float:
    """Planned peak bytes of decode_latents(vae, latent of latent_shape (B, C, T, h, w), spec) for the whole
    clip: the largest slice (decode_slice_bytes of the largest chunk and tile; every chunk frees the one
    before, only the conv cache is carried), plus, with `output`, the float32 video it is written into
    (B, 3, 4(T-1)+1, 8h, 8w): on the CPU that is the same memory, on a GPU it is host memory.
    """
    batch, _, frames, height, width = latent_shape
    odd = frames + 1 if frames % 2 == 0 else frames  # an even count is decoded with its last frame repeated
    chunk = max(stop - start for start, stop in temporal_chunks(odd, spec.chunk_frames))
    tile_h = height if spec.tile_height is None else min(spec.tile_height, height)
    tile_w = width if spec.tile_width is None else min(spec.tile_width, width)
    total = decode_slice_bytes(vae, chunk, tile_h, tile_w, batch)
    if output:
        total += batch * 3 * (TEMPORAL * (odd - 1) + 1) * SPATIAL * SPATIAL * height * width * 4
    return total


def auto_slice_spec(
    vae, latent_shape: tuple[int, ...], free_bytes: int, budget_fraction: float = 0.5, chunk: int = 2
) -> SliceSpec:
    """Pick slices for decoding a latent of `latent_shape` (B, C, T, h, w) within budget_fraction x free_bytes.

    Cost model: decode_slice_bytes of the largest chunk (the first: chunk + 1 latent frames), linear in
    the tile's latent pixels. Chunks stay at `chunk` latent frames (official: 2 for decode, 4 for the
    Stage II encode's 17/16/16 frames; the encoder is planned with the decoder's model, which holds more),
    else 2. If a whole frame of a 2-frame chunk does not fit, it is split into the fewest tiles that each
    fit (_fewest_tiles). An axis left whole has tile size None.
    """
    budget = max(1.0, free_bytes * budget_fraction)
    height, width = latent_shape[-2], latent_shape[-1]
    for frames in dict.fromkeys((chunk, 2)):  # the wanted chunks, else the smallest (2) before tiling
        per_latent_pixel = decode_slice_bytes(vae, frames + 1, 1, 1)
        if height * width * per_latent_pixel <= budget:
            return SliceSpec(chunk_frames=frames)
    return _fewest_tiles(height, width, budget / per_latent_pixel)


def _fewest_tiles(height: int, width: int, max_pixels: float) -> SliceSpec:
    """2-frame chunks of a (height, width) latent frame split into the fewest tiles of <= max_pixels latent pixels.

    Each axis is cut evenly, neighbours sharing max(2, s // 8) latent pixels (s: the side of a square
    tile that would fit); among equally few, the split decoding the least area, so the longer axis is
    split first (e.g. a frame costing 1.5x the budget -> 2 halves across its longer axis, not 4
    squares). Tiles never go below MIN_TILE (MIN_TILE squares if nothing larger fits).
    """
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
