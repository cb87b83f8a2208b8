"""The up-front memory refusal (issue 12): a stage's least device memory, its weights included, against what
is free, before any model loads (CLI) or before sampling (nodes). A mid-run out-of-memory: out_of_memory.py.

A LOWER bound, never the planner's prediction with its margin (unmeasured on a GPU): a run that could fit
is never refused (one that does not fit after all still ends with a clear message). Counted:
- a transformer's weights on the device in the run's modes, by the planner's own count
  (memory_model.stored_weights_bytes: fp8 block linears at 1 byte + a float32 scale per row; block swap's
  resident blocks + the 2 in flight; 'auto' block swap at the fewest resident blocks the planner may
  choose, 1) for the network the file holds (file_config: its header), or, for a loaded model, its own
  tensors (loaded_weight_bytes);
- one model call's activation floor (memory_floor.transformer_floor);
- T5, which runs first and alone: its weights from the file header (t5_weight_bytes); in `enhance` the
  VAE stays on the device beside Stage II (vae_weight_bytes).
Not counted: the VAE's working memory (it slices itself to what is free), the CUDA context and the
allocator's overhead. Weights count on an accelerator only: on the CPU a model loaded in its file's dtype
stays memory-mapped (page cache, not taken from the free RAM), so there only the activation floor is checked.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import torch

from ..checkpoint import read_shapes
from ..config import TransformerConfig
from ..errors import FlashVideoInputError
from ..memory_floor import GIB, cfg_batch, check_fits, transformer_floor
from ..modes.apply import SWAP_ATTR
from ..modes.block_swap import device_bytes
from ..modes.fp8 import weight_bytes
from ..modes.settings import AUTO, ModelModes
from . import memory_model
from .call import DeviceRoom, StageCall
from .memory_model import FP8_SCALE_BYTES, itemsize
from .planner import stage_config
from .room import CLI_WORDS, ModeWords, fitting_hint

T5_DROPPED = ("scale_weight", "scale_input", "scaled_fp8")
"""ComfyUI's scaled-fp8 marker tensors: read from a T5 file, never kept in the model (text.loading)."""
T5_EMBEDDINGS = ("shared.weight", "encoder.embed_tokens.weight")
"""T5's one token embedding, under either name (tied): counted once."""


def on_accelerator(device: torch.device | str) -> bool:
    """Whether weights must be copied into the device's own memory to run there (not the CPU)."""
    return torch.device(device).type != "cpu"


def file_config(path: str | Path) -> TransformerConfig:
    """The network a Stage I/II weight file or folder holds, from its header only: its tensors as meta
    tensors through the loader's own key mapping (a LoRA merged on meta) and config inference."""
    from ..model.sat_keys import to_flashvideo_state  # diffusers: imported when planning a run
    from ..model.sat_loading import infer_transformer_config

    state = {name: torch.empty(shape, device="meta") for name, shape in read_shapes(path).items()}
    return infer_transformer_config(to_flashvideo_state(state))


def planned_weight_bytes(config: TransformerConfig, dtype: torch.dtype, modes: ModelModes,
                         device: torch.device | str) -> int:
    """The least bytes a `config` transformer's weights take on `device` while it runs in `modes`: the
    planner's stored bytes (block swap 'auto' at 1 resident block); 0 on the CPU (module docstring)."""
    if not on_accelerator(device):
        return 0
    blocks = 1 if modes.resident_blocks == AUTO else modes.resident_blocks
    return memory_model.stored_weights_bytes(config, dtype, dataclasses.replace(modes, resident_blocks=blocks))


def loaded_weight_bytes(module: torch.nn.Module, device: torch.device | str) -> int:
    """Bytes a loaded transformer's weights take on `device` while it runs (0 on the CPU): every tensor, or
    with block swap its resident part and the two largest streamed blocks (modes.block_swap.SwapBytes)."""
    if not on_accelerator(device):
        return 0
    swap = getattr(module, SWAP_ATTR, None)
    if swap is not None:
        held = swap.memory()
        return held.resident + held.in_flight
    return weight_bytes(module)


def _header_shapes(path: str | Path) -> dict[str, tuple[int, ...]] | None:
    """read_shapes(path), or None where that would read the weights themselves (a folder without safetensors)."""
    path = Path(path)
    if path.is_dir() and not any(path.glob("*.safetensors")):
        return None
    return read_shapes(path)


def t5_weight_bytes(path: str | Path, dtype: torch.dtype, weights: str = "default") -> int | None:
    """Bytes of the T5 encoder loaded from `path` in `dtype` (weights 'fp8_e4m3fn': its block linears at 1
    byte + a float32 scale per row), from the header: the encoder's tensors and the token embedding once
    (a full T5's decoder and ComfyUI's scale markers are not loaded). None when no header can be read."""
    shapes = _header_shapes(path)
    if shapes is None:
        return None
    kept = {n: s for n, s in shapes.items() if n.startswith("encoder.") and n not in T5_EMBEDDINGS
            and not n.endswith(T5_DROPPED)}
    embedding = next((shapes[n] for n in T5_EMBEDDINGS if n in shapes), ())
    total = math.prod(embedding) * itemsize(dtype)
    for name, shape in kept.items():
        linear = (weights == "fp8_e4m3fn" and name.startswith("encoder.block.") and len(shape) == 2
                  and "relative_attention_bias" not in name)
        total += math.prod(shape) + shape[0] * FP8_SCALE_BYTES if linear else math.prod(shape) * itemsize(dtype)
    return total


def vae_weight_bytes(path: str | Path, dtype: torch.dtype) -> int | None:
    """Bytes of the VAE loaded from `path` in `dtype`, from the header (the SAT file's training-only
    `loss.` tensors are not loaded); None when no header can be read."""
    shapes = _header_shapes(path)
    if shapes is None:
        return None
    return sum(math.prod(s) for n, s in shapes.items() if not n.startswith("loss.")) * itemsize(dtype)


def check_stage(what: str, call: StageCall, room: DeviceRoom, words: ModeWords = CLI_WORDS) -> int:
    """Raise FlashVideoInputError (memory_floor.check_fits, naming `what`) when `call` cannot fit `room`: its
    weights on the device (room.weights: planned_room's count or loaded_weight_bytes; room.held of them
    already there) + room.beside + the activation floor exceed free + held. The message ends with the
    fastest mode that fits the room left to the transformer (planning.room.fitting_hint, in `words`).
    Returns that least need in bytes (weights + beside + floor)."""
    floor = call_floor(call)
    check_fits(what, floor, room.free, call.device, *call.size, fitting_hint(call, room, words),
               fixed=room.weights + room.beside, held=room.held)
    return room.weights + room.beside + floor


def call_floor(call: StageCall) -> int:
    """One model call's least activation bytes (memory_floor.transformer_floor; batch 1 when the CFG halves run
    one after the other)."""
    hidden = stage_config(call.stage, call.config).hidden_size
    return transformer_floor(*call.size, hidden, call.dtype, cfg_batch(call.sequential_cfg))


def planned_room(call: StageCall, free: int, beside: int = 0) -> DeviceRoom:
    """The DeviceRoom of a call whose model is not loaded yet: `free` bytes, its weights as planned in the
    call's modes for its network (planned_weight_bytes), `beside` other weights on the device with it."""
    network = stage_config(call.stage, call.config)
    return DeviceRoom(free, planned_weight_bytes(network, call.dtype, call.modes, call.device), beside=beside)


def loaded_weights(module: torch.nn.Module, device: torch.device | str) -> tuple[int, int]:
    """(loaded_weight_bytes, the bytes of them on `device` now) for a loaded transformer; (0, 0) on the CPU."""
    if not on_accelerator(device):
        return 0, 0
    return loaded_weight_bytes(module, device), device_bytes(module, device)


def check_t5(path: str | Path, dtype: torch.dtype, weights: str, device: torch.device | str, free: int,
             fp8_words: str = "--fp8") -> int | None:
    """Raise FlashVideoInputError when T5's weights alone (t5_weight_bytes) exceed `free` on an accelerator
    (T5 runs first and alone), naming fp8 (fp8_words: how to ask for it) when that would fit. Returns
    those weight bytes (T5's least need; None on the CPU or when no header can be read)."""
    if not on_accelerator(device):
        return None
    need = t5_weight_bytes(path, dtype, weights)
    if need is None or need <= free:
        return need
    fp8 = t5_weight_bytes(path, dtype, "fp8_e4m3fn") if weights != "fp8_e4m3fn" else None
    fix = (f"{fp8_words} stores its block linears in fp8 ({fp8 / GIB:.1f} GiB), or free memory first" if fp8
           and fp8 <= free else "free memory first (other programs using the GPU), or run on the CPU (--device cpu)")
    raise FlashVideoInputError(
        f"T5 ({Path(path).name}) needs at least {need / GIB:.1f} GiB on {torch.device(device)} for its weights, "
        f"and {free / GIB:.1f} GiB is free: {fix}.")


def t5_hint(weights: str, fp8_words: str = "--fp8") -> Callable[[], str]:
    """The hint of an out-of-memory while T5 runs (MemoryWatch.at): fp8 (fp8_words: how to ask for it) for
    T5 in its default precision, else free memory first."""
    text = (f"{fp8_words} stores T5's block linears in fp8 too (about half its weights), or free memory first."
            if weights == "default" else "Free memory first.")
    return lambda: text
