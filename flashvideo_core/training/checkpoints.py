"""Training checkpoints: Stage II weights the existing loaders load as they are, plus a resume state.

OUT_DIR/step-<N:07d>/stage2.safetensors  the model (FlashVideoTransformer keys, fp32, kind "stage2"
                                          and the transformer config in the header, as `convert`
                                          writes): weights.loaders.load_stage2 and the ComfyUI Stage
                                          II loader read it unchanged.
OUT_DIR/step-<N:07d>/stage2-lora.safetensors  instead of stage2.safetensors when a LoRA is trained:
                                          only the adapter (training.lora.save_lora), which
                                          generate/enhance --stage2-lora and the LoRA node apply.
OUT_DIR/step-<N:07d>/training-state.pt    optimizer state, step, RNG state, settings (JSON text): only
                                          tensors and plain containers, read back with
                                          torch.load(weights_only=True), never unpickled freely.
Each file is written through atomic.atomic_output (a killed run leaves no half file under either
name) inside atomic.write_errors_named (a full disk raises OSError ENOSPC naming the file; the
checkpoints written before are untouched). The state file is written after the weights, so a step
folder with a state file is complete; latest_checkpoint only returns complete ones, and a later save
of the same step may rewrite the weights of an incomplete folder (never of a complete one).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..atomic import atomic_output, write_errors_named
from ..errors import CheckpointError
from .lora import has_lora, save_lora

WEIGHTS_NAME = "stage2.safetensors"
LORA_NAME = "stage2-lora.safetensors"
STATE_NAME = "training-state.pt"
STEP_DIR = re.compile(r"^step-(\d{7})$")


def step_dir(out_dir: str | Path, step: int) -> Path:
    """OUT_DIR/step-<step, 7 digits>."""
    return Path(out_dir) / f"step-{int(step):07d}"


def save_stage2_weights(model: torch.nn.Module, path: str | Path, overwrite: bool = False) -> Path:
    """Write the model's full state (fp32 CPU copies) as a Stage II .safetensors, atomically; returns path.

    model: a FlashVideoTransformer with stage2_extras. Raises FileExistsError for an existing path
    unless overwrite, OSError (ENOSPC) naming the file when the disk fills.
    """
    from safetensors.torch import save_file  # looked up per call: the disk-full test replaces it

    path = Path(path)
    state = {k: v.detach().to("cpu", torch.float32).clone().contiguous() for k, v in model.state_dict().items()}
    metadata = {"flashvideo_kind": "stage2", "flashvideo_source": "train-stage2",
                "flashvideo_transformer_config": json.dumps(model.config.__dict__)}
    with write_errors_named(path), atomic_output(path, overwrite) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path


def save_training_state(path: str | Path, state: dict, overwrite: bool = False) -> Path:
    """Write a resume state (tensors, numbers, strings, lists and dicts only) atomically; returns path.

    state: e.g. {"step": int, "optimizer": optimizer.state_dict(), "rng": ByteTensor,
    "settings": JSON text}. Errors as save_stage2_weights.
    """
    path = Path(path)
    with write_errors_named(path), atomic_output(path, overwrite) as tmp:
        torch.save(state, tmp)
    return path


def load_training_state(path: str | Path, mmap: bool = False) -> dict:
    """Read a resume state with torch.load(weights_only=True; mmap: map the file rather than read its tensors
    into memory); CheckpointError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"training state {path} not found; --resume takes a run folder written by train-stage2.")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # unpickling refused, truncated zip, ...
        raise CheckpointError(f"{path} is not a readable training state (damaged, or not written by "
                              f"train-stage2): {exc}") from exc
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path} holds no training step; it was not written by train-stage2.")
    return state


def weights_file(folder: str | Path) -> Path | None:
    """The model file of a step folder: its stage2-lora.safetensors (a LoRA run) or stage2.safetensors, or None."""
    folder = Path(folder)
    return next((folder / name for name in (LORA_NAME, WEIGHTS_NAME) if (folder / name).is_file()), None)


def is_complete(folder: str | Path) -> bool:
    """True for a step folder holding its model file and its training state (the state is written last)."""
    return (Path(folder) / STATE_NAME).is_file() and weights_file(folder) is not None


def step_folders(out_dir: str | Path) -> list[tuple[int, Path]]:
    """[(step, folder)] of every step-<N> folder in OUT_DIR, complete or not, by step."""
    folder = Path(out_dir)
    if not folder.is_dir():
        return []
    return sorted((int(m[1]), p) for p in folder.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir())


def read_settings_json(folder: str | Path) -> str | None:
    """The settings JSON stored in a step folder's training state, read without loading the optimizer state
    into memory (load_training_state with mmap); None when the state records none."""
    return load_training_state(Path(folder) / STATE_NAME, mmap=True).get("settings")


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete step folder of OUT_DIR (model file and state present), or None."""
    complete = [p for _, p in step_folders(out_dir) if is_complete(p)]
    return complete[-1] if complete else None


def save_checkpoint(out_dir: str | Path, model: torch.nn.Module, state: dict,
                    lora_metadata: dict | None = None) -> Path:
    """Write step-<state['step']>/ with the model file, then its training-state.pt; returns the folder.

    The model file is stage2-lora.safetensors (save_lora, with `lora_metadata`) when `model` has a
    LoRA attached, else stage2.safetensors (every weight). A complete folder for the same step is never
    overwritten (FileExistsError); an incomplete one (a run stopped between its two files) is. When a write
    fails or is interrupted, the model file this call wrote is removed again (and the folder, if it made it).
    """
    folder = step_dir(out_dir, state["step"])
    if is_complete(folder):
        raise FileExistsError(f"{folder} already holds a complete checkpoint; not overwriting it.")
    existed, written = folder.exists(), []
    try:
        if has_lora(model):
            written.append(save_lora(model, folder / LORA_NAME, lora_metadata))
        else:
            written.append(save_stage2_weights(model, folder / WEIGHTS_NAME, overwrite=True))
        save_training_state(folder / STATE_NAME, state)
    except BaseException:
        for path in written:  # a model file without its state is no checkpoint: free its space (a full disk)
            path.unlink(missing_ok=True)
        if not existed and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # the folder this call made, still empty: no trace of the failed save
        raise
    return folder
