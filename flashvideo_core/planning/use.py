"""Load a transformer with its ModelModes applied, 'auto' block swap resolved by the planner for the size.

size = (frames, height, width, sequential_cfg) of the run the model is loaded for.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import torch

from ..devices import free_memory, move_model
from ..errors import FlashVideoInputError
from ..modes.apply import apply_model_modes, attach_block_swap
from ..modes.settings import AUTO, ModelModes
from .planner import resolve_resident_blocks

logger = logging.getLogger(__name__)


def check_modes_device(modes: ModelModes, device: torch.device) -> None:
    """Raise before anything loads for a fixed block swap on the CPU (it would save nothing there)."""
    if device.type == "cpu" and modes.resident_blocks not in (None, AUTO):
        raise FlashVideoInputError(
            f"block swap ({modes.resident_blocks} resident blocks) streams blocks from CPU memory to a GPU; the "
            "device is the CPU, where it saves nothing: leave block swap off (or 'auto')."
        )


def resolve_modes(model, modes: ModelModes, device: torch.device, dtype: torch.dtype, size: tuple) -> ModelModes:
    """modes with resident_blocks 'auto' replaced: None (every block resident) on the CPU or when the model
    fits the free device memory, else the most resident blocks that fit (planning.planner)."""
    if modes.resident_blocks != AUTO:
        return modes
    if device.type == "cpu":
        return replace(modes, resident_blocks=None)
    frames, height, width, sequential_cfg = size
    return resolve_resident_blocks(model.stage, height, width, frames, free_memory(device), dtype, modes,
                                   sequential_cfg, config=model.config)


def apply_modes(model, modes: ModelModes, device, dtype: torch.dtype, size: tuple) -> ModelModes:
    """In place on a transformer in host memory: resolve_modes, then modes.apply (fp8, attention, compile,
    block swap for `device`); logs what will run. Returns the resolved modes."""
    device = torch.device(device)
    check_modes_device(modes, device)
    modes = resolve_modes(model, modes, device, dtype, size)
    lines = apply_model_modes(model, modes, dtype)
    swap = attach_block_swap(model, modes.resident_blocks, device)
    for line in [*lines, *([swap] if swap else [])]:
        logger.info("%s", line)
    return modes


def load_with_modes(loader, path, modes: ModelModes, device, dtype: torch.dtype, callback, size: tuple):
    """loader(path, device=, dtype=, callback=) -> a transformer on `device` with `modes` applied. With any
    mode on it loads in host memory first (fp8 is made there, block swap streams from there)."""
    if modes == ModelModes():
        return loader(path, device=device, dtype=dtype, callback=callback)
    model = loader(path, device="cpu", dtype=dtype, callback=callback)
    apply_modes(model, modes, device, dtype, size)
    move_model(model, device)
    return model
