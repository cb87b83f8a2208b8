"""Checks of a training run made before anything heavy loads: the output folder, --resume, --init, settings.

Each raises FlashVideoInputError or CheckpointError naming the input and the fix. Nothing here reads a
model's weights (only file headers; a LoRA file, a few MB, is read whole) or decodes media.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..checkpoint import check_compatible, check_weight_file, read_safetensors_metadata
from ..config import TransformerConfig
from ..errors import CheckpointError, FlashVideoInputError
from ..model.lora_adapter import (
    architecture_of_file,
    check_architecture,
    config_architecture,
    describe_architecture,
)
from .checkpoints import LORA_NAME, STATE_NAME, STEP_DIR, is_complete, latest_checkpoint, step_folders, weights_file
from .lora import check_lora_settings, read_lora
from .settings import TrainSettings

RESUMABLE_CHANGES = frozenset({"steps", "checkpoint_every", "validate_every"})
"""Settings a resumed run may change without a note (a longer run, other checkpoint or validation spacing);
the schedule's step counts too (the last phase grows with --steps), not its sizes or shares."""


def resolve_resume(path: str | os.PathLike) -> Path:
    """The step folder --resume means: a complete step-<N> folder as given, or a run folder's latest complete one.

    Raises CheckpointError naming the path when it does not exist, is an incomplete step folder, or is
    a folder without any complete checkpoint.
    """
    path = Path(path)
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is a file"
        raise CheckpointError(f"--resume {path} {what}; give a run folder of train-stage2 (its latest checkpoint "
                              "is used) or one of its step-<N> folders.")
    if STEP_DIR.match(path.name):
        if not is_complete(path):
            raise CheckpointError(f"--resume {path} is an incomplete checkpoint (no {STATE_NAME} or no model file: "
                                  "the run stopped while writing it); resume from the run folder or an earlier step.")
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise CheckpointError(f"--resume {path} holds no complete checkpoint (step-<N> folders with {STATE_NAME}); "
                              "nothing to resume. Start a new run without --resume.")
    return latest


def step_of(folder: Path) -> int:
    """N of a step-<N> folder."""
    return int(STEP_DIR.match(folder.name)[1])


def check_cache_dir(folder: Path) -> None:
    """Raise FlashVideoInputError unless `folder` (--caption-cache) is a folder this user can write to, or can
    be made as one."""
    if folder.exists() and not folder.is_dir():
        raise FlashVideoInputError(f"--caption-cache {folder} is a file; give a folder for the caption embeddings.")
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not os.access(existing, os.W_OK | os.X_OK):
        raise FlashVideoInputError(f"--caption-cache {folder}: {existing or folder} is not writable; give a folder "
                                   "you can write to (or leave the flag out: OUT_DIR/caption-cache).")


def check_out_dir(out_dir: Path, resume_step: int | None) -> None:
    """Refuse an OUT_DIR whose checkpoints the run would overwrite or mix with its own.

    Without --resume (resume_step None) OUT_DIR must hold no complete checkpoint; when resuming from
    step S it must hold none after S (those steps would be trained again and written over).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise FlashVideoInputError(f"-o {out_dir} is a file; give a folder for the checkpoints.")
    complete = [(step, folder) for step, folder in step_folders(out_dir) if is_complete(folder)]
    if resume_step is None and complete:
        raise FlashVideoInputError(
            f"-o {out_dir} already holds checkpoints up to {complete[-1][1].name}; they are never overwritten. "
            f"Pass --resume {out_dir} to continue that run, or choose another -o folder.")
    later = [folder.name for step, folder in complete if resume_step is not None and step > resume_step]
    if later:
        raise FlashVideoInputError(
            f"-o {out_dir} holds {', '.join(later[:3])}, later than the step resumed from ({resume_step}); "
            "training again would write over them. Resume from the latest one, or give another -o folder.")


INIT_KINDS = "stage2.pt, a converted .safetensors, a diffusers transformer folder or a step folder of an earlier run"
LOADER_HINT = "Check that the file is connected to the right loader."
"""The node-side advice of checkpoint.identify's kind error, replaced by the --init one here."""


def _init_file(init: Path) -> Path:
    """The file or folder --init names as a model: a step folder's own model file; CheckpointError for a run
    folder (which of its checkpoints?) and for a step folder the run stopped while writing."""
    if not init.is_dir():
        return init
    if STEP_DIR.match(init.name) or (init / STATE_NAME).is_file():
        path = weights_file(init)
        if path is None:
            raise CheckpointError(f"--init {init} is a checkpoint folder without its model file (the run stopped "
                                  "while writing it); give an earlier step folder.")
        return path
    if step_folders(init):
        latest = latest_checkpoint(init)
        which = f"e.g. --init {latest} (its latest)" if latest is not None else "a complete step-<N> folder"
        raise CheckpointError(f"--init {init} is a train-stage2 run folder; give one of its checkpoints, {which}, "
                              f"or continue that run with --resume {init}.")
    return init


def check_init(init: Path | None, text_encoder: Path | None, vae: Path | None) -> None:
    """--init must be a Stage II transformer (file, diffusers folder or a full run's step folder) that fits
    the T5 and the VAE (headers only)."""
    if init is None:
        return
    if not init.exists():
        raise CheckpointError(f"--init {init} not found; give {INIT_KINDS}.")
    path = _init_file(init)
    if path.suffix == ".safetensors" and read_safetensors_metadata(path).get("flashvideo_lora_format"):
        raise CheckpointError(f"--init {init} is a LoRA (an adapter, not a model); give the Stage II model it "
                              "was trained on with --init, and continue a LoRA run with --resume RUN_FOLDER --lora.")
    try:
        check_weight_file(path, "stage2")  # names Stage I, VAE, T5 files for what they are
    except CheckpointError as exc:
        raise CheckpointError(f"--init {init}: {str(exc).replace(LOADER_HINT, '').strip()} Give the Stage II "
                              f"model to start from: {INIT_KINDS}.") from None
    files = {"stage2": path} | ({"t5": text_encoder} if text_encoder else {}) | ({"vae": vae} if vae else {})
    check_compatible(files)


def check_resume_fits(folder: Path, settings: TrainSettings, init: Path | None, scratch: TransformerConfig) -> None:
    """The checkpoint to resume must be of this run's kind (LoRA or full) and architecture (a full checkpoint's
    header; a LoRA checkpoint is read whole, for its settings and architecture)."""
    path = weights_file(folder)
    arch = architecture_of_file(init) if init is not None else config_architecture(scratch)
    base = init.name if init is not None else "the from-scratch model (no --init)"
    if path.name == LORA_NAME:
        if settings.lora is None:
            raise CheckpointError(f"--resume {folder} is a LoRA run; resume it with its --lora RANK (and --init).")
        lora = read_lora(path)
        try:
            check_architecture(lora, arch, base)
        except CheckpointError as exc:
            trained_on = lora.metadata.get("base_model")
            fix = (f"The LoRA was trained on {trained_on}: resume with that model as --init." if trained_on
                   else "Resume with the --init the run started from.")
            raise CheckpointError(f"--resume {folder}: {str(exc).split(' Use a LoRA', 1)[0]} {fix}") from None
        try:
            check_lora_settings(lora, settings.lora)
        except CheckpointError as exc:
            raise CheckpointError(f"--resume {folder}: {exc}") from None
        return
    if settings.lora is not None:
        raise CheckpointError(f"--resume {folder} is a full fine-tuning run (every weight); resume it without --lora.")
    stored = architecture_of_file(path)
    if any(stored[key] != arch[key] for key in stored if key in arch):
        raise CheckpointError(f"--resume {folder} holds {describe_architecture(stored)}, but {base} is "
                              f"{describe_architecture(arch)}; resume with the --init the run started from.")


def settings_changes(folder: Path, stored_json: str, settings: TrainSettings) -> list[str]:
    """Notes naming each setting the resumed run changes from the one stored in its checkpoint."""
    try:
        old = json.loads(stored_json)
    except (TypeError, ValueError):
        return [f"{folder / STATE_NAME} records no readable settings; the run continues with the ones given."]
    new = json.loads(settings.to_json())
    defaults = {key: value for key, value in _flat(json.loads(TrainSettings().to_json())).items() if "." not in key}
    flat_old, flat_new = {**defaults, **_flat(old)}, _flat(new)  # a setting newer than the checkpoint: its default
    keys = sorted(key for key in set(flat_old) | set(flat_new) if key.split(".")[0] not in RESUMABLE_CHANGES
                  and not (key.startswith("schedule.") and key.endswith(".steps")))  # the last phase grows
    notes = [f"resuming with {key} changed: {_short(flat_old.get(key))} -> {_short(flat_new.get(key))}"
             for key in keys if flat_old.get(key) != flat_new.get(key)]
    if settings.lr_decay == "cosine" and flat_old.get("steps") != settings.steps:
        notes.append(f"resuming with steps changed: {flat_old.get('steps')} -> {settings.steps}; the cosine "
                     "learning rate now falls over the new length, so it jumps at the resumed step.")
    return notes


def _flat(record, prefix: str = "") -> dict:
    """{"pixel.blur_sigma": [...], "schedule.phase 2.image_share": 0.5, ...} of a settings record."""
    if isinstance(record, dict) and "phases" in record:
        record = {f"phase {i + 1}": phase for i, phase in enumerate(record["phases"])}
    if not isinstance(record, dict):
        return {prefix: record}
    flat = {}
    for key, value in record.items():
        flat.update(_flat(value, f"{prefix}.{key}" if prefix else key))
    return flat


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def explain_save_error(exc: OSError, out_dir: Path) -> OSError:
    """An OSError from a checkpoint save, with where the last good checkpoint is and how to go on from it."""
    latest = latest_checkpoint(out_dir)
    keep = (f" The last good checkpoint is {latest}: free space, then continue with --resume {out_dir}."
            if latest is not None else " No checkpoint of this run was complete yet.")
    return OSError(exc.errno, f"{exc.strerror or exc}.{keep}")
