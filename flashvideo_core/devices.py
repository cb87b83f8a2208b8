"""Device and precision choices: bf16 on CUDA, fp32 on CPU; moving models between stages.

The one place that says where a model is: model_device and model_dtype read it from the weights, so
code that runs a model asks them instead of keeping a device or dtype of its own that can go stale
when the model is moved (on_device, a node's offload).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from .errors import FlashVideoInputError


def default_device() -> torch.device:
    """CUDA if available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on CUDA (the official precision), fp32 elsewhere (bf16/fp16 are slow or lossy on CPU)."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def parse_device(name: str | torch.device | None) -> torch.device:
    """None/'auto' -> default_device(); 'cpu', 'cuda', 'cuda:1', 'mps' ... -> that device, checked to exist.

    Raises FlashVideoInputError for an unknown name or a device this machine does not have.
    """
    if name is None or name == "auto":
        return default_device()
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise FlashVideoInputError(
            f"device={name!r} is not a device name; use cpu, cuda, cuda:1, ... ({exc})"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index is not None and device.index >= count):
            raise FlashVideoInputError(
                f"device={name!r}: this machine has {count} usable CUDA device(s); use cpu"
                + (f" or cuda:0..cuda:{count - 1}." if count else " (or install a CUDA build of torch).")
            )
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise FlashVideoInputError(f"device={name!r}: MPS is not available here; use cpu.")
    return device


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_dtype(name: str | torch.dtype | None, device: torch.device | str) -> torch.dtype:
    """'auto'/None -> default_dtype(device); 'fp32'/'bf16'/'fp16' -> that dtype."""
    if isinstance(name, torch.dtype):
        return name
    if name in (None, "auto"):
        return default_dtype(device)
    if name not in DTYPES:
        raise FlashVideoInputError(f"precision={name!r} is not one of auto, {', '.join(DTYPES)}.")
    return DTYPES[name]


def free_memory(device: torch.device | str) -> int:
    """Bytes free for new tensors on `device`: CUDA's free memory, or the RAM the OS reports available."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30  # unknown platform: assume a modest machine


def model_device(model: torch.nn.Module) -> torch.device:
    """Device of the first parameter of `model` (CPU for a model without parameters)."""
    for param in model.parameters():
        return param.device
    return torch.device("cpu")


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """dtype of the first parameter of `model` (float32 for a model without parameters)."""
    for param in model.parameters():
        return param.dtype
    return torch.float32


def empty_cache(device: torch.device | str) -> None:
    """Hand the blocks PyTorch keeps cached on a CUDA `device` back to the driver; a no-op for other devices."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        with torch.cuda.device(device):
            torch.cuda.empty_cache()


@contextlib.contextmanager
def on_device(model: torch.nn.Module, device: torch.device | str, offload_to: torch.device | str | None) -> Iterator:
    """Move `model` to `device` for the block; afterwards move it to `offload_to` (if not None).

    This is how one 24 GB card runs the whole pipeline: each stage's model visits the GPU only
    while it runs. A model with block swap (modes.apply) is moved by move_model, its streamed blocks
    left in host memory.
    """
    move_model(model, device)
    try:
        yield model
    finally:
        if offload_to is not None:
            move_model(model, offload_to)
            empty_cache(device)


def move_model(model: torch.nn.Module, device: torch.device | str) -> None:
    """model.to(device), or, for a model with block swap (attribute flashvideo_block_swap, set by
    modes.apply.attach_block_swap), its BlockSwap.place(device): everything but the streamed blocks."""
    swap = getattr(model, "flashvideo_block_swap", None)
    if swap is not None:
        swap.place(device)
    else:
        model.to(device)
