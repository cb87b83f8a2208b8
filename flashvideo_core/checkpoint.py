"""Safe reading of weight files in every layout users have.

- `.pt`/`.pth`/`.ckpt`/`.bin`: `torch.load(weights_only=True, mmap=True)`: pickles that hold
  anything but plain tensors and containers are refused, never executed.
- `.safetensors`: memory-mapped.
- folders: diffusers / transformers folders (`*.safetensors` shards, else `*.bin` shards).
The SAT wrappers `{'module': ...}` and `{'state_dict': ...}` are unwrapped.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

from .errors import CheckpointError
from .progress import ProgressCallback, report

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
WRAPPER_KEYS = ("module", "state_dict", "model")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file or folder into a flat {name: tensor} dict (CPU, possibly mmapped).

    Raises CheckpointError naming the file for a missing, truncated, corrupt or unsafe file.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"Checkpoint not found: {path}")
    if path.is_dir():
        return _read_folder(path)
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): the download or copy did not finish.")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if path.suffix in PICKLE_SUFFIXES:
        return _read_pickle(path)
    raise CheckpointError(
        f"{path.name}: unsupported file type {path.suffix!r}; "
        "expected .safetensors, .pt, .pth, .ckpt, .bin or a folder."
    )


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {exc}") from exc


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata stored in a safetensors header ({} if none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    is_zip = zipfile.is_zipfile(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path.name} was refused: it holds Python objects other than plain tensors, and loading it "
            f"could run code. Only weight files of tensors are accepted. ({exc})"
        ) from exc
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(f"{path} could not be read (truncated or corrupt file?): {exc}") from exc
    return _flatten(_unwrap(obj, path), path)


VERIFY_CHUNK = 16 * 2**20


def verify_checksums(path: str | Path, callback: ProgressCallback | None = None) -> bool:
    """Check every record of a zip-format torch checkpoint (.pt) against the CRC-32 stored with it.

    Loading does not check them (torch reads the records as they are), so a flipped bit in a copy
    or download loads silently. Reads the whole file once, reporting ProgressEvent("verify <name>",
    MB done, MB total). Returns True when every record matched, False for a file that stores no
    checksums (safetensors, a folder, legacy non-zip .pt). Raises CheckpointError naming the file
    and the damaged record.
    """
    path = Path(path)
    if path.is_dir() or path.suffix not in PICKLE_SUFFIXES or not zipfile.is_zipfile(path):
        return False
    phase = f"verify {path.name}"
    with zipfile.ZipFile(path) as archive:
        records = archive.infolist()
        total_mb = max(1, round(sum(r.file_size for r in records) / 2**20))
        done = 0
        for record in records:
            try:
                with archive.open(record) as data:
                    while chunk := data.read(VERIFY_CHUNK):
                        done += len(chunk)
                        report(callback, phase, min(total_mb - 1, round(done / 2**20)), total_mb)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise CheckpointError(
                    f"{path.name} is damaged: its record {record.filename} does not match the checksum stored "
                    f"with it ({exc}). The copy or download changed it; fetch the file again."
                ) from None
    report(callback, phase, total_mb, total_mb)  # the end once, after the last record matched
    return True


def cast_state(
    state: dict[str, torch.Tensor],
    dtype: torch.dtype,
    callback: ProgressCallback | None = None,
    phase: str = "load",
    convert: Callable[[str, torch.Tensor], torch.Tensor | None] | None = None,
) -> dict[str, torch.Tensor]:
    """Every tensor of `state` in `dtype` (no copy where it already is), reading mmapped data as it goes.

    This is where a load spends its time (the bytes come off the disk here), so it reports
    ProgressEvent(phase, MB done, MB total) about every 1% and at the end; a callback that
    raises (a cancel) stops the load. convert(key, tensor) replaces the plain cast (None drops
    the key), e.g. to dequantise fp8 weights.
    """
    convert = convert or (lambda key, tensor: tensor.to(dtype))
    sizes = {k: v.numel() * v.element_size() for k, v in state.items()}
    total = max(1, round(sum(sizes.values()) / 2**20))
    every = max(1, total // 100)
    out, done, last = {}, 0, -every
    for index, (key, tensor) in enumerate(state.items(), start=1):
        value = convert(key, tensor)
        if value is not None:
            out[key] = value
        done += sizes[key]
        is_last = index == len(state)
        step = total if is_last else min(total - 1, round(done / 2**20))
        if step - last >= every or is_last:
            report(callback, phase, step, total)
            last = step
    return out


def _unwrap(obj, path: Path):
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path.name} holds a {type(obj).__name__}, not a dict of weights.")
    for key in WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, dict) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner
    return obj


def _flatten(obj: dict, path: Path) -> dict[str, torch.Tensor]:
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path.name} holds no tensors; it is not a weight file.")
    return tensors


def _read_folder(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        files = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not files:
        raise CheckpointError(f"{folder} holds no weight files (*.safetensors or *.bin).")
    index = _shard_index(folder)
    if index is not None:
        files = [folder / name for name in sorted(set(index))]
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(read_state_dict(file))
    return state


def _shard_index(folder: Path) -> list[str] | None:
    for name in ("diffusion_pytorch_model.safetensors.index.json", "model.safetensors.index.json"):
        candidate = folder / name
        if candidate.exists():
            index = read_json(candidate)
            if not isinstance(index.get("weight_map"), dict):
                raise CheckpointError(f"{candidate} has no \"weight_map\" table of shard files; restore the file "
                                      "from the model's source (it lists which shard holds each tensor).")
            return list(index["weight_map"].values())
    return None


def read_json(path: str | Path) -> dict:
    """A model folder's JSON file (config, shard index, tokenizer settings) as a dict.

    Raises CheckpointError naming the file, the line and column, and the fix, for a file that is not
    UTF-8 JSON holding an object (a truncated download, a hand edit gone wrong).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                              "restore it from the model's source or download it again.") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{path} is not UTF-8 text, so not a JSON config; restore it from the model's "
                              "source or download it again.") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a JSON {type(data).__name__}, not an object of settings; restore it "
                              "from the model's source.")
    return data


def check_json_files(folder: str | Path) -> None:
    """Raise CheckpointError (see read_json) for the first *.json file in `folder` that does not parse."""
    for path in sorted(Path(folder).glob("*.json")):
        read_json(path)


def read_folder_config(folder: str | Path) -> dict | None:
    """config.json of a diffusers/transformers folder, or None if there is none (CheckpointError if broken)."""
    candidate = Path(folder) / "config.json"
    return read_json(candidate) if candidate.exists() else None


SAT_PREFIX = "model.diffusion_model."

MODEL_KINDS = {
    "stage1": "FlashVideo Stage I transformer (stage1.pt)",
    "stage2": "FlashVideo Stage II transformer (stage2.pt)",
    "vae": "CogVideoX 3D VAE (3d-vae.pt or a diffusers vae/ folder)",
    "t5": "T5 text encoder (text_encoder/ folder or t5xxl safetensors)",
    "unknown": "an unrecognised model",
}


def detect_kind(state: dict[str, torch.Tensor]) -> str:
    """Guess what a state dict holds: 'stage1', 'stage2', 'vae', 't5' or 'unknown'.

    Works on SAT and diffusers/transformers key layouts alike.
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
    """Raise CheckpointError if `state` is not the `expected` kind, saying what it looks like."""
    found = detect_kind(state)
    if found != expected:
        raise CheckpointError(
            f"{Path(path).name} looks like {MODEL_KINDS[found]}, but a {MODEL_KINDS[expected]} was expected. "
            "Check that the file is connected to the right loader."
        )


def read_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes in a weight file or folder, without reading the weights.

    safetensors: from the header; .pt: from the pickle with mmap (tensor data stays on disk);
    folders: every safetensors file in it. Raises CheckpointError like read_state_dict.
    """
    path = Path(path)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not path.exists() or (path.is_dir() and not files):
        return {k: tuple(v.shape) for k, v in read_state_dict(path).items()}  # raises the usual clear error
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(str(file), framework="pt") as handle:
                    shapes.update({k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()})
            except Exception as exc:
                raise CheckpointError(
                    f"{file} is not a readable safetensors file (truncated or corrupt?): {exc}"
                ) from exc
        else:
            shapes.update({k: tuple(v.shape) for k, v in read_state_dict(file).items()})
    return shapes


def read_keys(path: str | Path) -> list[str]:
    """The tensor names in a weight file or folder, without reading the weights (see read_shapes)."""
    return list(read_shapes(path))


def check_weight_file(path: str | Path, expected: str) -> None:
    """Raise CheckpointError unless `path` is a readable weight file of the `expected` kind (keys only)."""
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
    """Hidden width of a Stage I/II transformer file or folder, from its patch embedding's shape (header only)."""
    width = _width(read_shapes(path), ("hidden width", "patch_embed.proj.weight", 0))
    if width is None:
        raise CheckpointError(f"{path} has no patch_embed.proj.weight: not a FlashVideo transformer.")
    return width


def _width(shapes: dict[str, tuple[int, ...]], key: tuple[str, str, int]) -> int | None:
    _, suffix, dim = key
    return next((shape[dim] for name, shape in shapes.items() if name.endswith(suffix)), None)


def check_compatible(files: dict[str, str | Path]) -> None:
    """Raise CheckpointError unless the models of one run fit together, from tensor shapes only.

    files: kind ("t5", "stage1", "stage2", "vae") -> path. Checks that each transformer takes the
    T5 width as its text input and the VAE's latent channels as its image input, so a mismatch is
    named before anything runs (not after Stage I).
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
