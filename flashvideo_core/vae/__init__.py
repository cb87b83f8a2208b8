"""The CogVideoX 3D VAE: loading (loading.py) and sliced decode/encode.

Slicing is split by job: spec.py (SliceSpec, the `slices` type, chunk and tile positions),
slicing.py (the decode/encode loops, dispatching "auto"), cost.py (the memory cost model that
plans "auto"), retry.py (the out-of-memory retry with smaller tiles).
"""

from .cost import auto_slice_spec
from .loading import (
    build_vae,
    diffusers_vae_to_sat,
    infer_vae_config,
    is_sat_vae,
    load_vae,
    sat_vae_to_diffusers,
    save_sat_vae,
)
from .slicing import decode_latents, decode_preview_frame, encode_video
from .spec import AUTO, UNSLICED, Slices, SliceSpec, temporal_chunks, tile_starts

__all__ = [
    "AUTO",
    "UNSLICED",
    "Slices",
    "SliceSpec",
    "auto_slice_spec",
    "build_vae",
    "decode_latents",
    "decode_preview_frame",
    "diffusers_vae_to_sat",
    "encode_video",
    "infer_vae_config",
    "is_sat_vae",
    "load_vae",
    "sat_vae_to_diffusers",
    "save_sat_vae",
    "temporal_chunks",
    "tile_starts",
]
