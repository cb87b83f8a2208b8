"""The one place that talks to ComfyUI: progress, cancel, devices, model folders (its memory manager:
nodes.comfy_memory, which LoadedModel.active() uses).

Everything is imported lazily; without ComfyUI (tests, other hosts) the core's own rules are the
fallbacks (flashvideo_core.devices: default_device, free_memory, empty_cache), never a second copy of
them, with model folders taken from FLASHVIDEO_MODELS_DIR (default ./models).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath

import torch

from flashvideo_core import devices
from flashvideo_core.errors import CheckpointError

PACK_FOLDER = "FlashVideo"
"""models/FlashVideo: the pack's own model folder (registered with folder_paths)."""

CORE_FOLDERS = {"stage1": "diffusion_models", "stage2": "diffusion_models", "vae": "vae", "t5": "text_encoders"}
WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
LORA_FOLDER = "flashvideo_loras"
KIND_FOLDERS = {"lora": (LORA_FOLDER, "loras")}
"""Kinds with their own folders instead of models/FlashVideo + the core folder: Stage II LoRAs live in
models/flashvideo_loras (registered) and core's models/loras."""


def _folder_paths():
    try:
        import folder_paths  # ComfyUI

        return folder_paths
    except ImportError:
        return None


def register_model_folder() -> None:
    """Register models/FlashVideo with folder_paths (so extra_model_paths.yaml entries work too)."""
    fp = _folder_paths()
    if fp is not None:
        fp.add_model_folder_path(PACK_FOLDER, os.path.join(fp.models_dir, PACK_FOLDER), is_default=True)
        fp.add_model_folder_path(LORA_FOLDER, os.path.join(fp.models_dir, LORA_FOLDER), is_default=True)


def models_root() -> Path:
    """ComfyUI's models folder, or FLASHVIDEO_MODELS_DIR / ./models without ComfyUI."""
    fp = _folder_paths()
    if fp is not None:
        return Path(fp.models_dir)
    return Path(os.environ.get("FLASHVIDEO_MODELS_DIR", "models"))


def search_folders(kind: str) -> list[Path]:
    """Folders searched for a model kind: every FlashVideo path, then the matching core folder's paths."""
    fp = _folder_paths()
    names = list(KIND_FOLDERS.get(kind) or (PACK_FOLDER, CORE_FOLDERS[kind]))
    if fp is None:
        return [models_root() / name for name in names]
    folders: list[Path] = []
    for name in names:
        try:
            folders += [Path(p) for p in fp.get_folder_paths(name)]
        except KeyError:
            continue
    return folders


def list_models(kind: str, folders_too: bool = False) -> list[str]:
    """Relative names of weight files (and, with folders_too, model folders holding config.json).

    Only names that resolve_model accepts are listed (a link leading out of its folder is not).
    """
    names: list[str] = []
    for root in search_folders(kind):
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root).as_posix()
            if _inside(root, relative) is None:
                continue
            if path.is_file() and path.suffix in WEIGHT_SUFFIXES and not _inside_model_folder(path, root):
                names.append(relative)
            elif folders_too and path.is_dir() and (path / "config.json").exists():
                names.append(relative + "/")
    return sorted(dict.fromkeys(names))


def _inside_model_folder(path: Path, root: Path) -> bool:
    """Shards inside a diffusers/transformers folder are listed as the folder, not one by one."""
    inner = [parent for parent in path.parents if parent != root and root in parent.parents]
    return any((parent / "config.json").exists() for parent in inner)


def _inside(root: Path, name) -> Path | None:
    """root / name if that stays inside root with '..' and links resolved (a relative name), else None.

    Like ComfyUI's folder_paths.get_full_path, a name is always relative to a model folder: absolute
    names, drive letters and '..' parts are refused outright, and the real path (links followed) must
    lie inside the folder's real path, so a link in the folder cannot lead out of it.
    """
    if not isinstance(name, str) or "\x00" in name:
        return None
    relative = PurePath(name.rstrip("/\\"))
    if not relative.parts or relative.anchor or ".." in relative.parts:
        return None
    candidate = root / relative
    if Path(os.path.realpath(root)) not in Path(os.path.realpath(candidate)).parents:
        return None
    return candidate


def _loadable(path: Path) -> bool:
    """A folder (diffusers/transformers model, tokenizer) or a file with a weight suffix."""
    return path.is_dir() or (path.is_file() and path.suffix in WEIGHT_SUFFIXES)


def resolve_model(kind: str, name) -> Path | None:
    """Path of a listed name in the first of the kind's folders that has it, or None.

    None for every name that is not a weight file or folder inside one of search_folders(kind)
    (see _inside): nothing outside the model folders is ever looked at.
    """
    for root in search_folders(kind):
        candidate = _inside(root, name)
        if candidate is not None and _loadable(candidate):
            return candidate
    return None


def rejected_model_message(kind: str, name) -> str:
    """The one message for any name resolve_model refuses (the same whether or not such a file exists)."""
    folders = ", ".join(str(f) for f in search_folders(kind))
    return (f"{name!r} not found in the {kind} model folders ({folders}). Choose a name from the list: only "
            "files and folders inside these folders are used (no '..', no absolute path, no link leading out; "
            "add other folders in extra_model_paths.yaml). Put the file in one of them, then press R to refresh.")


def model_path(kind: str, name) -> Path:
    """resolve_model, raising CheckpointError(rejected_model_message) instead of returning None."""
    path = resolve_model(kind, name)
    if path is None:
        raise CheckpointError(rejected_model_message(kind, name))
    return path


def pack_model_dir() -> Path:
    """Where downloads go: the first FlashVideo model folder."""
    fp = _folder_paths()
    if fp is not None:
        return Path(fp.get_folder_paths(PACK_FOLDER)[0])
    return models_root() / PACK_FOLDER


def torch_device() -> torch.device:
    """ComfyUI's compute device, or the core's default_device (CUDA if available, else CPU) without ComfyUI."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return devices.default_device()
    return mm.get_torch_device()


def offload_device() -> torch.device:
    """Where models rest between uses (ComfyUI's unet offload device, else CPU)."""
    try:
        import comfy.model_management as mm

        return mm.unet_offload_device()
    except ImportError:
        return torch.device("cpu")


def free_memory(device: torch.device | str) -> int:
    """Free bytes on `device`: ComfyUI's estimate (get_free_memory), else the core's devices.free_memory."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return devices.free_memory(device)
    return int(mm.get_free_memory(torch.device(device)))


def bundled_t5_tokenizer() -> Path | None:
    """ComfyUI's own T5 v1.1 tokenizer folder (comfy/text_encoders/t5_tokenizer, a tokenizer.json), if present.

    It is the tokenizer of google/t5-v1_1-xxl that CogVideoX uses, so a t5xxl_fp16.safetensors
    already in models/text_encoders works without downloading CogVideoX's tokenizer/ folder.
    """
    try:
        import comfy
    except ImportError:
        return None
    folder = Path(comfy.__file__).parent / "text_encoders" / "t5_tokenizer"
    return folder if (folder / "tokenizer.json").exists() else None


def check_interrupt() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed cancel (no-op without ComfyUI)."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return
    mm.throw_exception_if_processing_interrupted()


def soft_empty_cache() -> None:
    """Release cached device memory between phases (ComfyUI's soft_empty_cache, else the core's empty_cache)."""
    try:
        import comfy.model_management as mm
    except ImportError:
        devices.empty_cache(devices.default_device())
        return
    mm.soft_empty_cache()


class Progress:
    """A core ProgressEvent callback that drives ComfyUI's progress bar, previews and cancel.

    Every event is a cancel point. `preview_fn(latent) -> PIL.Image | None` makes preview images.
    """

    def __init__(self, preview_fn=None, max_preview: int = 512):
        self.preview_fn = preview_fn
        self.max_preview = max_preview
        self.bar = None

    def __call__(self, event) -> None:
        check_interrupt()
        try:
            import comfy.utils
        except ImportError:
            return
        if self.bar is None or self.bar.total != event.total:
            self.bar = comfy.utils.ProgressBar(event.total)
        preview = None
        if self.preview_fn is not None and event.preview is not None:
            image = self.preview_fn(event.preview)
            preview = ("JPEG", image, self.max_preview) if image is not None else None
        self.bar.update_absolute(event.step, event.total, preview)
