"""Auto slicing's out-of-memory retry: run a VAE pass with the slices the cost model plans, and
again with halved tiles each time it runs out of memory.

The pass itself comes in as `run(spec)` (a concrete SliceSpec), so this module never imports the
slicing loops: slicing.py dispatches "auto" here and passes its own loop in.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import devices
from ..errors import FlashVideoInputError
from .cost import MIN_TILE, auto_slice_spec
from .spec import SliceSpec


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch.OutOfMemoryError or any error whose message says "out of memory"."""
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def with_auto_slices(
    vae,
    latent_shape: tuple[int, ...],
    free_bytes: int | None,
    what: str,
    run: Callable[[SliceSpec], torch.Tensor],
    chunk: int = 2,
) -> torch.Tensor:
    """run(spec) with spec = auto_slice_spec(vae, latent_shape, free_bytes, chunk=chunk), retried with
    halved tiles (2-frame chunks, half the overlap) after each out-of-memory.

    latent_shape: (B, C, T, h, w) of the latent decoded (or produced by the encode); free_bytes: None
    reads the free memory of the VAE's device. Refuses (FlashVideoInputError naming `what`) once the
    tiles are MIN_TILE and still do not fit; any other error propagates.
    """
    if free_bytes is None:
        free_bytes = devices.free_memory(devices.model_device(vae))
    spec = auto_slice_spec(vae, latent_shape, free_bytes, chunk=chunk)
    height, width = latent_shape[-2:]
    while True:
        try:
            return run(spec)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not is_out_of_memory(exc):
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


def encode_with_auto_slices(
    vae,
    latent_shape: tuple[int, ...],
    generator: torch.Generator | None,
    free_bytes: int | None,
    run: Callable[[SliceSpec], torch.Tensor],
) -> torch.Tensor:
    """with_auto_slices for an encode (chunks of 4 latent frames: the official Stage II 17/16/16 frames),
    the generator rewound to its state now before each try, so a retry draws the same posterior noise.

    latent_shape: (B, 16, T, h, w) of the latent the encode produces; run(spec): that encode.
    """
    state = generator.get_state() if generator is not None else None

    def rewound(spec: SliceSpec) -> torch.Tensor:
        if state is not None:
            generator.set_state(state)
        return run(spec)

    return with_auto_slices(vae, latent_shape, free_bytes, "encode", rewound, chunk=4)
