"""Weight files: safe reading and verifying (files), what model a file holds (identify), and strict
loading into a model with one error message (strict).

`from flashvideo_core.checkpoint import <name>` works for every public name of the three modules.
"""

from .files import (
    PICKLE_SUFFIXES,
    VERIFY_CHUNK,
    WRAPPER_KEYS,
    cast_state,
    check_json_files,
    read_folder_config,
    read_json,
    read_safetensors_metadata,
    read_state_dict,
    verify_checksums,
)
from .identify import (
    LATENT_KEY,
    MODEL_KINDS,
    SAT_PREFIX,
    WIDTH_KEYS,
    check_compatible,
    check_weight_file,
    clear_shape_cache,
    detect_kind,
    read_keys,
    read_shapes,
    require_kind,
    transformer_width,
)
from .strict import check_state_fits, load_strict, mismatch_message

__all__ = [
    "LATENT_KEY",
    "MODEL_KINDS",
    "PICKLE_SUFFIXES",
    "SAT_PREFIX",
    "VERIFY_CHUNK",
    "WIDTH_KEYS",
    "WRAPPER_KEYS",
    "cast_state",
    "check_compatible",
    "check_json_files",
    "check_state_fits",
    "check_weight_file",
    "clear_shape_cache",
    "detect_kind",
    "load_strict",
    "mismatch_message",
    "read_folder_config",
    "read_json",
    "read_keys",
    "read_safetensors_metadata",
    "read_shapes",
    "read_state_dict",
    "require_kind",
    "transformer_width",
    "verify_checksums",
]
