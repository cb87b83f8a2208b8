"""Apply a ModelModes to a loaded transformer: the one place that knows the order of the modes.

Order: fp8 storage (on the weights as loaded), the attention kernel, regional compile, then block swap
(it pins host copies and places the rest on the compute device, so it comes last). A model with block
swap carries its handle as `model.flashvideo_block_swap`; devices.move_model places such a model with
BlockSwap.place instead of .to, so the streamed blocks never land on the device whole.
"""

from __future__ import annotations

import torch

from ..errors import FlashVideoInputError
from .attention import describe_backend, set_attention_backend
from .block_swap import enable_block_swap
from .compile import compile_blocks, describe_compile
from .fp8 import quantize_fp8
from .settings import AUTO, ModelModes

SWAP_ATTR = "flashvideo_block_swap"
"""The attribute of a model that holds its BlockSwap handle (read by devices.move_model)."""


def apply_model_modes(model: torch.nn.Module, modes: ModelModes, compute_dtype: torch.dtype) -> list[str]:
    """In place on a transformer (FlashVideoTransformer) still in host memory: fp8 weights, the attention
    kernel and compile of `modes` (block swap is attach_block_swap's, once the device is known).
    Returns the console lines that say what will run (empty for ModelModes())."""
    lines = []
    if modes.weights == "fp8_e4m3fn":
        stats = quantize_fp8(model, compute_dtype)
        lines.append(f"FlashVideo weights: fp8_e4m3fn for {len(stats.quantized)} block linears "
                     f"({stats.bytes_before / 2**20:.0f} -> {stats.bytes_after / 2**20:.0f} MiB)")
    if modes.attention != "sdpa":
        set_attention_backend(model, modes.attention, log=False)
        lines.append(describe_backend(model))
    if modes.compile:
        compile_blocks(model)
        lines.append(describe_compile(model))
    return lines


def attach_block_swap(model: torch.nn.Module, resident_blocks: int | str | None, device) -> str | None:
    """Block swap on `model` for the compute `device`: keep `resident_blocks` blocks there and stream the
    rest (modes.block_swap). None: nothing to do. 'auto' must be resolved first (planner.
    resolve_resident_blocks). Returns the console line, or None. Only for a CUDA device: on the CPU the
    host memory is the device memory, so block swap would save nothing and is refused."""
    if resident_blocks is None:
        return None
    if resident_blocks == AUTO:
        raise FlashVideoInputError("resident_blocks='auto' must be resolved by the planner before the model runs.")
    if torch.device(device).type == "cpu":
        raise FlashVideoInputError("block swap streams blocks from CPU memory to a GPU; on the CPU it saves nothing. "
                                   "Leave block swap off (resident_blocks None / 0) on the CPU.")
    swap = enable_block_swap(model, int(resident_blocks), device)
    setattr(model, SWAP_ATTR, swap)
    total = len(swap.blocks)
    return f"FlashVideo block swap: {swap.resident} of {total} blocks resident, {total - swap.resident} streamed"
