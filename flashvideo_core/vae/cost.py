"""The VAE's memory cost model: planned decoder peak bytes per output voxel, and the slices
("auto") that keep one slice within a share of the free memory.
"""

from __future__ import annotations

import math

import torch

from ..devices import model_dtype
from .spec import SPATIAL, TEMPORAL, SliceSpec, tile_starts

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
"""Smallest latent tile side auto slicing plans or retries with."""


def bytes_per_output_voxel(vae) -> float:
    """Planned decoder peak bytes per output pixel per frame for this VAE (its width and dtype)."""
    dtype = model_dtype(vae)
    width_scale = vae.config.block_out_channels[0] / 128
    return (BYTES_PER_OUTPUT_VOXEL * width_scale + FIXED_BYTES_PER_OUTPUT_VOXEL) * torch.finfo(dtype).bits / 32


def auto_slice_spec(
    vae, latent_shape: tuple[int, ...], free_bytes: int, budget_fraction: float = 0.5, chunk: int = 2
) -> SliceSpec:
    """Pick slices for decoding a latent of `latent_shape` (B, C, T, h, w) within budget_fraction x free_bytes.

    Cost model: a chunk of c latent frames decodes (4c + 2) frames at 64 pixels per latent pixel,
    each costing bytes_per_output_voxel(vae). Chunks stay at `chunk` latent frames
    (official: 2 for decode, 4 for the Stage II encode's 17/16/16 frames), else 2. If a whole frame
    of a 2-frame chunk does not fit, it is split into the fewest tiles that each fit (_fewest_tiles).
    An axis left whole has tile size None.
    """
    bytes_per_voxel = bytes_per_output_voxel(vae)
    budget = max(1.0, free_bytes * budget_fraction)
    height, width = latent_shape[-2], latent_shape[-1]
    for frames in dict.fromkeys((chunk, 2)):  # the wanted chunks, else the smallest (2) before tiling
        per_latent_pixel = (TEMPORAL * frames + 2) * SPATIAL * SPATIAL * bytes_per_voxel
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
