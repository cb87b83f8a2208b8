"""Shared pieces of the FlashVideo nodes: custom type names, the loaded-model handle, previews, errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from flashvideo_core import config
from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.layout import to_uint8
from flashvideo_core.modes.settings import ModelModes
from flashvideo_core.vae import decode_preview_frame

from . import comfy_memory

STAGE1 = "FLASHVIDEO_STAGE1"
STAGE2 = "FLASHVIDEO_STAGE2"
VAE = "FLASHVIDEO_VAE"
T5 = "FLASHVIDEO_T5"
EMBEDS = "FLASHVIDEO_EMBEDS"
CATEGORY = "FlashVideo"
SIZE_STEP = config.PIXEL_MULTIPLE
"""Width/height widgets step by this (multiples of 16)."""
FRAME_STEP = config.VAE_TEMPORAL_COMPRESSION
"""Frame-count widgets step by this (4k+1 counts)."""
MAX_EDGE = config.MAX_PIXEL_EDGE

SEQUENTIAL_CFG = ("BOOLEAN", {"default": False, "tooltip":
                  "Run the two guidance halves (with and without the prompt) one after the other instead of as one "
                  "batch of 2: the same result, about half the activation memory, a little slower."})
"""An optional widget of the samplers and Enhance: sampling.settings' sequential_cfg."""

PRECISIONS = ["auto", "fp32", "bf16", "fp16"]
PRECISION_TIP = "auto = bf16 on a GPU (the official precision), fp32 on the CPU. fp16 is not recommended for T5."
OFFLOAD_MODES = ["offload after use", "keep on device"]
OFFLOAD_TIP = (
    "offload after use: the model rests in CPU memory and visits the GPU only while its node runs, so one "
    "24 GB card runs the whole pipeline. keep on device: faster when memory allows."
)


@dataclass
class LoadedModel:
    """A core model plus where it runs and where it rests between runs (the value of our custom types)."""

    module: torch.nn.Module
    device: torch.device
    offload_to: torch.device | None
    dtype: torch.dtype
    source: str
    text_encoder: object = None
    """For T5 handles: the flashvideo_core TextEncoder (tokenizer + this module)."""
    modes: ModelModes = ModelModes()
    """The memory modes the loader was asked for (fp8, attention and compile are applied at load;
    resident_blocks None, N or "auto" is set up for each run at its size by node_modes.prepare_run)."""
    comfy_patcher: object = field(default=None, init=False, repr=False, compare=False)
    """Inside ComfyUI: the comfy.model_patcher.ModelPatcher that registers this module, made on first use."""
    shared_with_lora: bool = field(default=False, init=False, repr=False, compare=False)
    """True once a LoRA model (lora_node) shares this model's weight tensors: no block swap is attached to it
    then (streaming the shared blocks would pull them from under the LoRA model)."""

    def active(self, memory_required: int = 0):
        """Context manager: the module on its compute device for the block (it yields the module).

        Inside ComfyUI it is loaded through comfy.model_management.load_models_gpu (ComfyUI makes room
        and can unload it later); afterwards "offload after use" unloads it through ComfyUI, "keep on
        device" leaves it loaded. Outside ComfyUI devices.on_device moves it. See nodes.comfy_memory.
        memory_required: bytes the block needs besides the weights (inside ComfyUI: what it frees).
        """
        return comfy_memory.in_use(self, memory_required)


def check_widgets(node_cls, **values) -> bool | str:
    """ComfyUI's own min/max check for the widgets a VALIDATE_INPUTS names (ComfyUI skips it for those).

    values: widget name -> value; None (the input is linked, its value is not known at validation)
    is skipped. Returns True, or a message naming the input, the value and the valid range.
    """
    spec = node_cls.INPUT_TYPES()["required"]
    for name, value in values.items():
        options = spec[name][1] if len(spec[name]) > 1 else {}
        low, high = options.get("min"), options.get("max")
        if value is not None and ((low is not None and value < low) or (high is not None and value > high)):
            return f"{name}={value} is outside {low}..{high}."
    return True


def core_check(check, *args, **values) -> bool | str:
    """True, or the core's message for values it refuses: check(*args, **values) raising FlashVideoInputError.

    Values that are None (a linked input, not known at validation) are left out, so the check sees
    its defaults for them; they are checked again with their real values when the node runs.
    """
    try:
        check(*args, **{name: value for name, value in values.items() if value is not None})
    except FlashVideoInputError as exc:
        return str(exc)
    return True


def flashvideo_info(latent: dict) -> dict:
    """The FlashVideo record of a LATENT dict ({} for latents made elsewhere)."""
    return dict(latent.get("flashvideo") or {})


def latent_preview_fn(vae: LoadedModel | None):
    """A preview maker for Progress: decodes one latent frame with the VAE if given, else a gray map."""
    from PIL import Image

    def preview(latent: torch.Tensor):
        if vae is not None:
            with torch.no_grad():
                image = decode_preview_frame(vae.module, latent, frame=latent.shape[2] // 2, max_size=384)
        else:
            frame = latent[0, :, latent.shape[2] // 2].float()
            gray = frame.mean(0)
            gray = (gray - gray.min()) / (gray.max() - gray.min() + 1e-6)
            image = gray[..., None].expand(*gray.shape, 3)
        array = to_uint8(image).cpu().numpy()
        return Image.fromarray(array)

    return preview
