"""Shared pieces of the FlashVideo nodes: custom type names, the loaded-model handle, previews, errors."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from flashvideo_core.devices import on_device

STAGE1 = "FLASHVIDEO_STAGE1"
STAGE2 = "FLASHVIDEO_STAGE2"
VAE = "FLASHVIDEO_VAE"
T5 = "FLASHVIDEO_T5"
EMBEDS = "FLASHVIDEO_EMBEDS"
CATEGORY = "FlashVideo"

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

    def active(self):
        """Context manager: the module on its compute device for the block, offloaded afterwards."""
        return on_device(self.module, self.device, self.offload_to)


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


def frames_check(frames: int | None) -> bool | str:
    """True, or a message for a frame count that is not 4k+1 (None = linked, checked before sampling)."""
    if frames is None:
        return True
    if (frames - 1) % 4:
        below = max(1, frames - (frames - 1) % 4)
        return f"frames={frames} must be 4k+1 (e.g. {below} or {below + 4}); the official value is 49."
    return True


def size_check(width: int | None, height: int | None) -> bool | str:
    """True, or a message for a width or height that is not a multiple of 16 (None = linked, skipped)."""
    for name, value in (("width", width), ("height", height)):
        if value is not None and value % 16:
            return f"{name}={value} must be a multiple of 16 (e.g. {value - value % 16})."
    return True


def flashvideo_info(latent: dict) -> dict:
    """The FlashVideo record of a LATENT dict ({} for latents made elsewhere)."""
    return dict(latent.get("flashvideo") or {})


def latent_preview_fn(vae: LoadedModel | None):
    """A preview maker for Progress: decodes one latent frame with the VAE if given, else a gray map."""
    from PIL import Image

    def preview(latent: torch.Tensor):
        if vae is not None:
            from flashvideo_core.vae import decode_preview_frame

            with torch.no_grad():
                image = decode_preview_frame(vae.module, latent, frame=latent.shape[2] // 2, max_size=384)
        else:
            frame = latent[0, :, latent.shape[2] // 2].float()
            gray = frame.mean(0)
            gray = (gray - gray.min()) / (gray.max() - gray.min() + 1e-6)
            image = gray[..., None].expand(*gray.shape, 3)
        array = (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        return Image.fromarray(array)

    return preview
