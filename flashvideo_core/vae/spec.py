"""What a VAE slice is: SliceSpec (in latent units), the `slices` type (a SliceSpec or "auto"), and
where the temporal chunks and spatial tiles of a latent fall.

Shared by the slicing loops (slicing.py), the memory cost model (cost.py) and the out-of-memory
retry (retry.py); it imports none of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ..config import VAE_SPATIAL_COMPRESSION, VAE_TEMPORAL_COMPRESSION
from ..errors import FlashVideoInputError

SPATIAL, TEMPORAL = VAE_SPATIAL_COMPRESSION, VAE_TEMPORAL_COMPRESSION
"""Output pixels per latent pixel along H and W; output frames per latent frame after the first."""


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
    """Latent frame ranges [(start, stop), ...]: an odd-sized first chunk, then even chunks of `chunk` frames."""
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
