"""Safe reading and verifying of weight files in every layout users have.

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
from safetensors.torch import load_file

from ..errors import CheckpointError
from ..progress import ProgressCallback, report

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
    """A .safetensors file -> {name: CPU tensor} (memory-mapped); CheckpointError for a bad header."""
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {exc}") from exc


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """path: a .safetensors file -> the string metadata stored in its header ({} if none).

    Raises CheckpointError naming the file when the header cannot be read.
    """
    from safetensors import safe_open  # looked up per call: the header-read test counts these opens

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    """A weights-only torch pickle (zip files mmapped) -> its flat {name: tensor}, SAT wrappers unwrapped.

    Raises CheckpointError for a pickle holding anything but tensors and containers, or a damaged file.
    """
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
    """A loaded pickle -> the dict of weights inside it (`module` / `state_dict` / `model` wrapper or itself)."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path.name} holds a {type(obj).__name__}, not a dict of weights.")
    for key in WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, dict) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner
    return obj


def _flatten(obj: dict, path: Path) -> dict[str, torch.Tensor]:
    """The tensor entries of `obj` (other values dropped); CheckpointError naming `path` if there are none."""
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path.name} holds no tensors; it is not a weight file.")
    return tensors


def _read_folder(folder: Path) -> dict[str, torch.Tensor]:
    """A diffusers/transformers folder -> the union of its shards' tensors.

    The shards are those its index names, else every *.safetensors, else every *.bin/.pt file.
    """
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
    """The shard file names listed by the folder's *.safetensors.index.json (None without an index)."""
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
    """folder: a model or tokenizer folder. Returns None; raises CheckpointError (see read_json) for
    the first *.json file in it that does not parse."""
    for path in sorted(Path(folder).glob("*.json")):
        read_json(path)


def read_folder_config(folder: str | Path) -> dict | None:
    """folder -> its config.json (diffusers/transformers) as a dict, or None if there is none.

    Raises CheckpointError (see read_json) for a broken config.json.
    """
    candidate = Path(folder) / "config.json"
    return read_json(candidate) if candidate.exists() else None
