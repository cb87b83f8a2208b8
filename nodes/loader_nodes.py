"""Loader nodes: Stage I, Stage II, VAE, T5 (published files as they are), and the explicit download."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from flashvideo_core.checkpoint import check_weight_file
from flashvideo_core.devices import parse_dtype
from flashvideo_core.errors import CheckpointError
from flashvideo_core.model.sat_loading import load_transformer
from flashvideo_core.modes.apply import apply_model_modes
from flashvideo_core.modes.settings import ModelModes
from flashvideo_core.planning.use import check_modes_device
from flashvideo_core.text.encoder import load_text_encoder
from flashvideo_core.text.loading import find_tokenizer
from flashvideo_core.vae import load_vae
from flashvideo_core.weights.hub import download_weights

from . import comfy_memory, node_modes
from . import comfy_services as services
from .common import (
    CATEGORY,
    OFFLOAD_MODES,
    OFFLOAD_TIP,
    PRECISION_TIP,
    PRECISIONS,
    STAGE1,
    STAGE2,
    T5,
    VAE,
    LoadedModel,
)

logger = logging.getLogger(__name__)
FOLDER_TIP = "Files in models/FlashVideo (and extra_model_paths.yaml entries) and in models/{core}."


def _choices(kind: str, folders_too: bool = False) -> list[str]:
    return services.list_models(kind, folders_too) or ["(no model files found)"]


def _model_input(kind: str, tooltip: str) -> tuple:
    """The model-name combo of a loader: the kind's files and folders, with where they are looked for."""
    where = FOLDER_TIP.format(core=services.CORE_FOLDERS[kind])
    return (_choices(kind, folders_too=True), {"tooltip": f"{tooltip} {where}"})


def _placement_inputs() -> dict:
    """The precision and offload widgets every loader ends with, in this order."""
    return {
        "precision": (PRECISIONS, {"default": "auto", "tooltip": PRECISION_TIP}),
        "offload": (OFFLOAD_MODES, {"default": OFFLOAD_MODES[0], "tooltip": OFFLOAD_TIP}),
    }


def _validate_choice(kind: str, name: str | None) -> bool | str:
    """True, or a message for a name outside the model folders, an unreadable file, or another model's file.

    This replaces ComfyUI's own "value not in list" check (skipped for inputs VALIDATE_INPUTS names),
    so every name outside the kind's folders gets the one rejected_model_message, whether or not such
    a file exists. Reads tensor names only (safetensors header, mmapped pickle), so a wrong file is
    named at validation, before any other node of the graph runs.
    """
    if name is None:  # linked from another node: checked when the loader runs
        return True
    path = services.resolve_model(kind, name)
    if path is None:
        return services.rejected_model_message(kind, name)
    stat = path.stat()
    return _checked_file(str(path), kind, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _checked_file(path: str, kind: str, size: int, mtime_ns: int) -> bool | str:
    """check_weight_file as a validation answer, cached per file version (validation runs on every queue)."""
    try:
        check_weight_file(path, kind)
    except CheckpointError as exc:
        return str(exc)
    return True


@dataclass(frozen=True)
class _Placement:
    """Where a loaded model runs (device), rests between runs (rest: None = stays on device) and its dtype."""

    device: torch.device
    rest: torch.device | None
    dtype: torch.dtype

    @property
    def home(self) -> torch.device:
        """Where the weights are between node runs: the offload device, else the compute device."""
        return self.rest or self.device


def _placement(precision: str, offload: str) -> _Placement:
    """The precision and offload widgets -> the _Placement of a model loaded now (ComfyUI's devices)."""
    device = services.torch_device()
    rest = services.offload_device() if offload == OFFLOAD_MODES[0] else None
    return _Placement(device, rest, parse_dtype(precision, device))


def _wrap(module, place: _Placement, source: str) -> LoadedModel:
    """A loaded module -> its LoadedModel handle, the weights moved to place.home in place.dtype.

    Inside ComfyUI the weights wait on ComfyUI's offload device whatever the offload widget says: the
    first use loads them through ComfyUI's manager (nodes.comfy_memory), which makes room first; moved
    to the GPU here, they would take memory ComfyUI does not know is used.
    """
    home = services.offload_device() if comfy_memory.comfy_memory_manager() is not None else place.home
    module.to(device=home, dtype=place.dtype)
    return LoadedModel(module, place.device, place.rest, place.dtype, source)


class _Loader:
    """What the model loader nodes share: the method ComfyUI calls and their menu."""

    FUNCTION = "load"
    CATEGORY = f"{CATEGORY}/loaders"


class _TransformerLoader(_Loader):
    KIND = "stage1"
    STAGE = 1

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_name": _model_input(cls.KIND, f"The published {cls.KIND}.pt as it is (SAT layout), a "
                                                     "converted .safetensors or a diffusers folder."),
                **_placement_inputs(),
            },
            "optional": node_modes.transformer_mode_inputs(),
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model_name, block_swap=None, resident_blocks=None):
        checks = (_validate_choice(cls.KIND, model_name), node_modes.check_block_swap(block_swap, resident_blocks))
        return next((c for c in checks if c is not True), True)

    def load(self, model_name, precision, offload, weights="default", attention="sdpa", compile=False,
             block_swap="off", resident_blocks=node_modes.RESIDENT_DEFAULT):
        """A file name from the model lists -> (LoadedModel holding the Stage I or II transformer,).

        The modes (node_modes): fp8 weights, the attention kernel and compile are applied here, to the
        weights in CPU memory; block swap is recorded in the handle and set up by the node that runs it.
        """
        path = services.model_path(self.KIND, model_name)
        place = _placement(precision, offload)
        modes = node_modes.loader_modes(weights, attention, compile, block_swap, resident_blocks)
        check_modes_device(modes, place.device)
        module = load_transformer(path, stage=self.STAGE, dtype=place.dtype, callback=services.Progress())
        for line in apply_model_modes(module, modes, place.dtype):
            logger.info("%s", line)  # "FlashVideo weights: ...", "FlashVideo attention: ..."
        handle = _wrap(module, place, str(path))
        handle.modes = modes
        return (handle,)


class FlashVideoStage1Loader(_TransformerLoader):
    """Node: loads the Stage I transformer (stage1.pt, safetensors or a diffusers folder)."""

    KIND, STAGE = "stage1", 1
    RETURN_TYPES = (STAGE1,)
    RETURN_NAMES = ("stage1_model",)
    OUTPUT_TOOLTIPS = ("The Stage I (270p, prompt fidelity) transformer, LoRA merged.",)
    DESCRIPTION = "Loads FlashVideo's Stage I model (stage1.pt: CogVideoX-5B shape with its LoRA merged at load)."


class FlashVideoStage2Loader(_TransformerLoader):
    """Node: loads the Stage II transformer (stage2.pt, safetensors or a diffusers folder)."""

    KIND, STAGE = "stage2", 2
    RETURN_TYPES = (STAGE2,)
    RETURN_NAMES = ("stage2_model",)
    OUTPUT_TOOLTIPS = ("The Stage II (1080p detail) flow-matching transformer.",)
    DESCRIPTION = "Loads FlashVideo's Stage II model (stage2.pt: 2B DiT with 3D RoPE and its two extra embeddings)."


class FlashVideoVAELoader(_Loader):
    """Node: loads the CogVideoX 3D VAE (3d-vae.pt, safetensors or a diffusers vae/ folder)."""

    RETURN_TYPES = (VAE,)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The CogVideoX 3D VAE used by both stages.",)
    DESCRIPTION = "Loads the CogVideoX 3D VAE (3d-vae.pt as published, a .safetensors, or a diffusers vae/ folder)."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae_name": _model_input("vae", "3d-vae.pt as published, a .safetensors or CogVideoX-5b's vae/ "
                                                "folder."),
                **_placement_inputs(),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, vae_name):
        return _validate_choice("vae", vae_name)

    def load(self, vae_name, precision, offload):
        """A file or folder name from the VAE list -> (LoadedModel holding the CogVideoX VAE,)."""
        path = services.model_path("vae", vae_name)
        place = _placement(precision, offload)
        module = load_vae(path, dtype=place.dtype, callback=services.Progress())
        return (_wrap(module, place, str(path)),)


TOKENIZER_AUTO = "auto (tokenizer/ beside the encoder)"


class FlashVideoT5Loader(_Loader):
    """Node: loads the T5 v1.1 XXL encoder and its tokenizer."""

    RETURN_TYPES = (T5,)
    RETURN_NAMES = ("t5",)
    OUTPUT_TOOLTIPS = ("T5 v1.1 XXL encoder with its tokenizer.",)
    DESCRIPTION = ("Loads the T5 v1.1 XXL text encoder: CogVideoX-5b's text_encoder/ folder, or a t5xxl_fp16 / fp8 "
                   "single file you already have for SD3, Flux, LTX or Mochi.")

    @classmethod
    def INPUT_TYPES(cls):
        tokenizers = [TOKENIZER_AUTO] + [n for n in services.list_models("t5", folders_too=True) if n.endswith("/")]
        tokenizers += _tokenizer_folders()
        return {
            "required": {
                "encoder_name": _model_input("t5", "text_encoder/ folder (CogVideoX-5b) or a single t5xxl "
                                                   ".safetensors."),
                "tokenizer": (list(dict.fromkeys(tokenizers)), {
                    "default": TOKENIZER_AUTO,
                    "tooltip": "Folder with spiece.model or tokenizer.json. auto: the tokenizer/ folder next to the "
                               "encoder (CogVideoX layout), else ComfyUI's own T5 tokenizer (for a single "
                               "t5xxl_fp16.safetensors)."}),
                **_placement_inputs(),
            },
            "optional": node_modes.t5_mode_inputs(),
        }

    @classmethod
    def VALIDATE_INPUTS(cls, encoder_name):
        return _validate_choice("t5", encoder_name)

    def load(self, encoder_name, tokenizer, precision, offload, weights="default"):
        """Encoder and tokenizer names -> (LoadedModel holding the T5 encoder, with .text_encoder set,).

        The encoder is built where the handle keeps it between runs (place.home); the handle's active()
        moves the weights to the compute device while a node encodes, and TextEncoder.encode sends the
        token ids to wherever the weights are then (it keeps no device of its own).
        """
        path = services.model_path("t5", encoder_name)
        tokenizer_path = _auto_tokenizer(path) if tokenizer == TOKENIZER_AUTO else _resolve_tokenizer(tokenizer)
        place = _placement(precision, offload)
        modes = ModelModes(weights=weights)
        encoder = load_text_encoder(path, tokenizer_path, device=place.home, dtype=place.dtype,
                                    callback=services.Progress(), weights=modes.weights)
        handle = _wrap(encoder.model, place, str(path))
        handle.text_encoder, handle.modes = encoder, modes
        return (handle,)


def _auto_tokenizer(encoder_path: Path) -> Path | None:
    """None (tokenizer/ beside the encoder) when there is one, else ComfyUI's bundled T5 tokenizer."""
    try:
        find_tokenizer(encoder_path, None)
        return None
    except CheckpointError:
        bundled = services.bundled_t5_tokenizer()
        if bundled is None:
            raise
        logger.info("[FlashVideo] no tokenizer beside %s; using ComfyUI's T5 tokenizer (%s).",
                    encoder_path.name, bundled)
        return bundled


def _tokenizer_folders() -> list[str]:
    """Folders (relative names ending in /) in the T5 folders that hold spiece.model or tokenizer.json."""
    names = []
    for root in services.search_folders("t5"):
        if root.is_dir():
            names += [p.parent.relative_to(root).as_posix() + "/" for p in root.rglob("spiece.model")]
            names += [p.parent.relative_to(root).as_posix() + "/" for p in root.rglob("tokenizer.json")]
    return [name for name in names if services.resolve_model("t5", name) is not None]


def _resolve_tokenizer(name: str) -> Path:
    """A tokenizer folder name from the list -> its path (CheckpointError for any name outside the T5 folders)."""
    return services.model_path("t5", name)


DOWNLOAD_CHOICES = ["stage1 + stage2 + vae", "stage1", "stage2", "vae", "t5 (CogVideoX-5b text_encoder)", "all"]
DOWNLOAD_KEYS = {
    "stage1 + stage2 + vae": ["stage1", "stage2", "vae"], "stage1": ["stage1"], "stage2": ["stage2"],
    "vae": ["vae"], "t5 (CogVideoX-5b text_encoder)": ["t5"], "all": ["stage1", "stage2", "vae", "t5"],
}


class FlashVideoDownloadWeights:
    """Node: explicit Hugging Face download of the published files into models/FlashVideo."""

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("paths",)
    OUTPUT_TOOLTIPS = ("The downloaded files, one per line.",)
    FUNCTION = "download"
    OUTPUT_NODE = True
    CATEGORY = f"{CATEGORY}/loaders"
    DESCRIPTION = ("Downloads the published weights from Hugging Face into models/FlashVideo (resumes partial "
                   "downloads; nothing is downloaded unless you run this node).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"files": (DOWNLOAD_CHOICES, {
            "default": DOWNLOAD_CHOICES[0],
            "tooltip": "stage1.pt 11.8 GB, stage2.pt 3.4 GB, 3d-vae.pt 1.2 GB (FoundationVision/FlashVideo); "
                       "T5 9.5 GB (THUDM/CogVideoX-5b text_encoder/ + tokenizer/)."})}}

    def download(self, files):
        """A DOWNLOAD_CHOICES entry -> (the downloaded paths, one per line,); files land in models/FlashVideo."""
        paths = download_weights(services.pack_model_dir(), DOWNLOAD_KEYS[files], callback=services.Progress())
        text = "\n".join(str(p) for p in paths)
        return {"ui": {"text": [text]}, "result": (text,)}
