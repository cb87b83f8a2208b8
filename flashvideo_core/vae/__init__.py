"""The CogVideoX 3D VAE: loading (vae_loading.py) and sliced decode/encode (vae_slicing.py)."""

from .loading import (
    build_vae,
    diffusers_vae_to_sat,
    infer_vae_config,
    is_sat_vae,
    load_vae,
    sat_vae_to_diffusers,
    save_sat_vae,
)
from .slicing import (
    AUTO,
    UNSLICED,
    Slices,
    SliceSpec,
    auto_slice_spec,
    decode_latents,
    decode_preview_frame,
    encode_video,
    temporal_chunks,
    tile_starts,
)

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
