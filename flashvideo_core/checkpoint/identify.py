"""What a weight file holds, from its tensor names and shapes only (no weights are read).

detect_kind / require_kind name the model a state dict (or a dict of its names) belongs to;
read_shapes / read_keys read a file's or folder's names and shapes from its header, each file once
per run (memoised on the file's resolved path, size, mtime and inode, so an edited or replaced file
is read again); check_weight_file, transformer_width and check_compatible answer from those.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from ..errors import CheckpointError
from .files import read_state_dict

SAT_PREFIX = "model.diffusion_model."

MODEL_KINDS = {
    "stage1": "FlashVideo Stage I transformer (stage1.pt)",
    "stage2": "FlashVideo Stage II transformer (stage2.pt)",
    "vae": "CogVideoX 3D VAE (3d-vae.pt or a diffusers vae/ folder)",
    "t5": "T5 text encoder (text_encoder/ folder or t5xxl safetensors)",
    "unknown": "an unrecognised model",
}

SHAPE_CACHE_SIZE = 64
"""How many files' names and shapes read_shapes keeps (a few hundred small tuples each)."""


def detect_kind(state: dict[str, torch.Tensor]) -> str:
    """Guess what a state dict holds: 'stage1', 'stage2', 'vae', 't5' or 'unknown'.

    state: {name: anything} (only the names are looked at). Works on SAT and diffusers/transformers
    key layouts alike.
    """
    keys = list(state)
    has = lambda fragment: any(fragment in k for k in keys)  # noqa: E731
    if has("ref_step_time_embedding") or has("time_size_embedding"):
        return "stage2"
    if has("query_key_value") or has("transformer_blocks.") or has("attn1.to_q"):
        return "stage1"
    if has("SelfAttention") or has("relative_attention_bias"):
        return "t5"
    if has("encoder.down") or has("decoder.up") or has("quant_conv") or has("encoder.conv_in"):
        return "vae"
    return "unknown"


def require_kind(state: dict[str, torch.Tensor], expected: str, path: str | Path) -> None:
    """Raise CheckpointError if `state` (read from `path`) is not the `expected` kind, saying what it looks like.

    expected: a MODEL_KINDS key. Returns None when the kinds agree.
    """
    found = detect_kind(state)
    if found != expected:
        raise CheckpointError(
            f"{Path(path).name} looks like {MODEL_KINDS[found]}, but a {MODEL_KINDS[expected]} was expected. "
            "Check that the file is connected to the right loader."
        )


def read_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes in a weight file or folder, without reading the weights.

    path: a weight file, or a folder (every *.safetensors file in it). Returns {name: shape}, a fresh
    dict the caller may change. safetensors: from the header; .pt: from the pickle with mmap (tensor
    data stays on disk). Each file is read once while its path, size, mtime and inode stay the same.
    Raises CheckpointError like read_state_dict.
    """
    path = Path(path)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not path.exists() or (path.is_dir() and not files):
        return {k: tuple(v.shape) for k, v in read_state_dict(path).items()}  # raises the usual clear error
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        stat = file.stat()
        shapes.update(_cached_file_shapes(str(file.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino))
    return shapes


@functools.lru_cache(maxsize=SHAPE_CACHE_SIZE)
def _cached_file_shapes(resolved: str, size: int, mtime_ns: int, inode: int) -> tuple[tuple[str, tuple], ...]:
    """One file's ((name, shape), ...), read once per (resolved path, size, mtime_ns, inode).

    The stat fields are only the cache key: a file rewritten in place or replaced gets a new key.
    Errors are not cached, so a file fixed after a failed read is read again.
    """
    return tuple(_read_file_shapes(Path(resolved)).items())


def _read_file_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    """One weight file -> {name: shape}: the safetensors header, or a .pt's pickle with mmapped data."""
    if file.suffix != ".safetensors":
        return {k: tuple(v.shape) for k, v in read_state_dict(file).items()}
    from safetensors import safe_open  # looked up per call: the header-read test counts these opens

    try:
        with safe_open(str(file), framework="pt") as handle:
            return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise CheckpointError(f"{file} is not a readable safetensors file (truncated or corrupt?): {exc}") from exc


def clear_shape_cache() -> None:
    """Forget every file's names and shapes read so far (the next read_shapes reads the headers again)."""
    _cached_file_shapes.cache_clear()


def read_keys(path: str | Path) -> list[str]:
    """The tensor names in a weight file or folder, without reading the weights (see read_shapes)."""
    return list(read_shapes(path))


def check_weight_file(path: str | Path, expected: str) -> None:
    """Raise CheckpointError unless `path` is a readable weight file of the `expected` kind (keys only).

    expected: a MODEL_KINDS key. Returns None for a good file.
    """
    require_kind(dict.fromkeys(read_keys(path)), expected, path)


WIDTH_KEYS = {
    # kind -> (what, key suffix, dim): the widths that must agree between the models of one run
    "t5": ("T5 width (d_model)", "encoder.block.0.layer.0.SelfAttention.q.weight", 1),
    "stage1": ("text width", "patch_embed.text_proj.weight", 1),
    "stage2": ("text width", "patch_embed.text_proj.weight", 1),
    "vae": ("latent channels", "decoder.conv_in.conv.weight", 1),
}
LATENT_KEY = ("latent channels", "patch_embed.proj.weight", 1)


def transformer_width(path: str | Path) -> int:
    """Hidden width of a Stage I/II transformer file or folder, from its patch embedding's shape (header only).

    Returns the width (dim 0 of patch_embed.proj.weight); raises CheckpointError for a file that has no
    patch embedding (not a FlashVideo transformer) or cannot be read.
    """
    width = _width(read_shapes(path), ("hidden width", "patch_embed.proj.weight", 0))
    if width is None:
        raise CheckpointError(f"{path} has no patch_embed.proj.weight: not a FlashVideo transformer.")
    return width


def _width(shapes: dict[str, tuple[int, ...]], key: tuple[str, str, int]) -> int | None:
    """shapes[name][dim] of the first name ending in key's suffix; None if no name does."""
    _, suffix, dim = key
    return next((shape[dim] for name, shape in shapes.items() if name.endswith(suffix)), None)


def check_compatible(files: dict[str, str | Path]) -> None:
    """Raise CheckpointError unless the models of one run fit together, from tensor shapes only.

    files: kind ("t5", "stage1", "stage2", "vae") -> path. Checks that each transformer takes the
    T5 width as its text input and the VAE's latent channels as its image input, so a mismatch is
    named before anything runs (not after Stage I). Returns None when they fit.
    """
    shapes = {kind: read_shapes(path) for kind, path in files.items()}
    t5_width = _width(shapes["t5"], WIDTH_KEYS["t5"]) if "t5" in shapes else None
    latent = _width(shapes["vae"], WIDTH_KEYS["vae"]) if "vae" in shapes else None
    for stage in ("stage1", "stage2"):
        if stage not in shapes:
            continue
        text, channels = _width(shapes[stage], WIDTH_KEYS[stage]), _width(shapes[stage], LATENT_KEY)
        name = Path(files[stage]).name
        if t5_width is not None and text is not None and text != t5_width:
            raise CheckpointError(
                f"{name} takes text embeddings of width {text}, but the T5 encoder {Path(files['t5']).name} "
                f"makes width {t5_width}: use the T5 v1.1 XXL encoder FlashVideo was trained with (4096)."
            )
        if latent is not None and channels is not None and channels != latent:
            raise CheckpointError(
                f"{name} takes {channels}-channel latents, but the VAE {Path(files['vae']).name} makes {latent}: "
                "use the CogVideoX 3D VAE (16 channels) FlashVideo was trained with."
            )
