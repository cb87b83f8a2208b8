"""The memory modes as node inputs (issue 14): the loaders' optional widgets, their checks, and block swap
set up for each run at its size.

Where each mode is set, and why:
- fp8 weights, the attention kernel and torch.compile change the loaded network, so they are applied once,
  when it loads: optional inputs of the Stage I and Stage II loaders (fp8 also on the T5 loader), as
  kijai's wrappers put quantization, attention_mode and compile_args on their model loaders.
- block swap is how the model is held, so it is asked for on the loader too (kijai: block_swap_args on
  the model loader), and every node that runs the model follows it (Stage II Sampler and Enhance Video
  share one Stage II model). Its "auto" needs the run's size and the free memory, known only when a node
  runs it, so the loader records the wish (LoadedModel.modes) and prepare_run resolves it at each run (a
  new size may give a new block count) and attaches, changes or keeps the swap.
- sequential CFG is how one call runs: an input of the samplers and Enhance Video (sampling settings).
- memory "auto" (an input of the samplers and Enhance Video, default "as set") chooses at each run what can
  change at run time, sequential CFG and the block swap, for the room ComfyUI can make (planning.auto, with
  the weights as loaded: fp8 stays the loader's choice, since quantising a shared model in a sampler would
  change it for every branch; when only fp8 would fit, the refusal says to set the loader's weights to fp8).

check_room is the up-front memory refusal of the nodes that run a transformer (issue 12), before ComfyUI
loads it: its weights on the device as it runs (block swap set up by prepare_run) + one call's activation
floor against the room ComfyUI can make (comfy_memory.room: free after unloading other models, plus what
the model already holds there), a lower bound (planning.lower_bound).
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.modes.apply import SWAP_ATTR
from flashvideo_core.modes.block_swap import device_bytes, enable_block_swap, find_blocks
from flashvideo_core.modes.settings import ATTENTION_BACKENDS, AUTO, WEIGHT_FORMATS, ModelModes
from flashvideo_core.planning import lower_bound
from flashvideo_core.planning.auto import AUTO as AUTO_MEMORY
from flashvideo_core.planning.auto import MEMORY_CHOICES, StageMemory, check_memory, choose_stage
from flashvideo_core.planning.call import DeviceRoom, StageCall
from flashvideo_core.planning.out_of_memory import MemoryWatch
from flashvideo_core.planning.planner import FIT_MARGIN, FIT_RESERVE, plan_peak, resolve_resident_blocks
from flashvideo_core.planning.room import ModeWords, modes_of, ran_modes, smaller_mode_hint
from flashvideo_core.planning.use import check_modes_device

from . import comfy_memory
from . import comfy_services as services

logger = logging.getLogger(__name__)

BLOCK_SWAP_CHOICES = ["off", "auto", "manual"]
RESIDENT_DEFAULT = 20
NODE_WORDS = ModeWords(fp8="weights fp8_e4m3fn on the loader", block_swap="block_swap manual with resident_blocks "
                       "{n} on the loader (or block_swap auto)", sequential_cfg="sequential_cfg on",
                       plain="the default inputs")
"""How a too-small-memory message names the settings of the mode that would fit (planning.room)."""

WEIGHTS_TIP = ("default: weights in the precision above. fp8_e4m3fn: the blocks' linear weights stored in fp8 "
               "(one scale per row), upcast per layer when used; embeddings, norms, modulation and the final "
               "projection stay as they are. About half the block weight memory of bf16 (Stage I 5B ~11 -> ~6 GB, "
               "Stage II 2B ~3.4 -> ~2 GB); output within about 1-2% of the default.")
T5_WEIGHTS_TIP = ("default: T5 in the precision above (an fp8 t5xxl file is upcast). fp8_e4m3fn: its block linears "
                  "stored in fp8, upcast per layer (about half of 9.5 GB); a t5xxl_fp8_e4m3fn.safetensors stays fp8.")
ATTENTION_TIP = ("Attention kernel on a GPU in bf16/fp16: sdpa (PyTorch, default), sage (SageAttention 2, int8 QK, "
                 "never its fp8 kernels), flash (FlashAttention 2/3). One not installed falls back to sdpa with a "
                 "one-line note; the console names the kernel used.")
COMPILE_TIP = ("torch.compile each transformer block (regional): faster steps after the first run at a size "
               "compiles (minutes); a new size recompiles once, later sizes reuse it. Needs Triton on a GPU.")
BLOCK_SWAP_TIP = ("Block swap keeps some transformer blocks on the GPU and streams the others from pinned CPU "
                  "memory (the next one copied while one computes). off: every block on the GPU (fastest). auto: "
                  "the planner picks the most resident blocks that fit the free memory at each run's size (none "
                  "swapped when all fit). manual: resident_blocks below. Needs a GPU; slower per step.")
RESIDENT_TIP = ("Blocks kept on the GPU when block_swap is manual; the rest stream. Stage I has 42 blocks (~0.25 GB "
                "each in bf16, ~0.14 GB in fp8), Stage II 30 (~0.11 GB, ~0.06 GB in fp8). Fewer = less memory, "
                "slower; a count >= the model's blocks swaps none.")
MEMORY_TIP = ("as set: sequential_cfg and the loader's block_swap as they are. auto: at each run the planner picks the "
              "fastest of plain, sequential CFG and block swap (most resident blocks) that fits the memory ComfyUI can "
              "free, for the weights as loaded; the console says what it picked (plain on the CPU). fp8 stays the "
              "loader's weights input: when only fp8 would fit, the error says so. With auto leave sequential_cfg "
              "off and the loader's block_swap off or auto.")
MEMORY = (list(MEMORY_CHOICES), {"default": MEMORY_CHOICES[0], "tooltip": MEMORY_TIP})
"""The optional `memory` input of the samplers and Enhance Video (appended last)."""
FP8_WORDS = "set the loader's weights to fp8_e4m3fn"


def transformer_mode_inputs() -> dict:
    """The Stage I / Stage II loaders' optional mode widgets, in their order (appended after offload)."""
    return {
        "weights": (list(WEIGHT_FORMATS), {"default": "default", "tooltip": WEIGHTS_TIP}),
        "attention": (list(ATTENTION_BACKENDS), {"default": "sdpa", "tooltip": ATTENTION_TIP}),
        "compile": ("BOOLEAN", {"default": False, "tooltip": COMPILE_TIP}),
        "block_swap": (BLOCK_SWAP_CHOICES, {"default": "off", "tooltip": BLOCK_SWAP_TIP}),
        "resident_blocks": ("INT", {"default": RESIDENT_DEFAULT, "min": 1, "max": 64, "tooltip": RESIDENT_TIP}),
    }


def t5_mode_inputs() -> dict:
    """The T5 loader's optional mode widget."""
    return {"weights": (list(WEIGHT_FORMATS), {"default": "default", "tooltip": T5_WEIGHTS_TIP})}


def loader_modes(weights: str = "default", attention: str = "sdpa", compile: bool = False, block_swap: str = "off",
                 resident_blocks: int = RESIDENT_DEFAULT) -> ModelModes:
    """The loader widgets -> ModelModes (FlashVideoInputError naming the input for a bad value)."""
    if block_swap not in BLOCK_SWAP_CHOICES:
        raise FlashVideoInputError(f"block_swap={block_swap!r} must be one of {', '.join(BLOCK_SWAP_CHOICES)}.")
    blocks = {"off": None, "auto": AUTO, "manual": resident_blocks}[block_swap]
    return ModelModes(weights=weights, resident_blocks=blocks, attention=attention, compile=compile)


def check_block_swap(block_swap: str | None, resident_blocks: int | None) -> bool | str:
    """VALIDATE_INPUTS' answer for the block-swap widgets (ComfyUI skips its own combo and range checks for
    the inputs a VALIDATE_INPUTS names): True, or the message for a value outside the widget, or for
    manual block swap on a CPU device (it would save nothing there)."""
    if block_swap is None:
        return True
    blocks = RESIDENT_DEFAULT if resident_blocks is None else resident_blocks
    low, high = (transformer_mode_inputs()["resident_blocks"][1][k] for k in ("min", "max"))
    if not isinstance(blocks, int) or not low <= blocks <= high:
        return f"resident_blocks={blocks!r} is outside {low}..{high}."
    try:
        check_modes_device(loader_modes(block_swap=block_swap, resident_blocks=blocks), services.torch_device())
    except FlashVideoInputError as exc:
        return str(exc)
    return True


def prepare_run(handle, frames: int, height: int, width: int, sequential_cfg: bool) -> int | None:
    """Set up handle's block swap for a run of `frames` x `height` x `width` pixels (the Stage II work size
    for Stage II): resolve handle.modes.resident_blocks (a number, or "auto" by the planner for the memory
    ComfyUI can make free, see comfy_memory.room) and attach, change or keep the swap. Returns the resident
    block count in use (None: no swap). A model loaded without block swap is left alone."""
    blocks = None if handle.modes.resident_blocks is None else _resolve(handle, frames, height, width, sequential_cfg)
    return _set_blocks(handle, blocks)  # loader off: no swap (one that memory "auto" attached is removed)


def _set_blocks(handle, blocks: int | None) -> int | None:
    """Attach, change, remove or keep handle's block swap so that `blocks` blocks are resident (None, or at
    least the model's blocks: no swap). Returns the count in use."""
    blocks = None if blocks is None or blocks >= len(find_blocks(handle.module)) else blocks
    swap = getattr(handle.module, SWAP_ATTR, None)
    if (swap.resident if swap is not None else None) == blocks:
        return blocks
    comfy_memory.drop_swap(handle)  # unloads and forgets the patcher made for the old layout
    if blocks is not None:
        _attach(handle, blocks)
    return blocks


def prepare_memory(handle, stage: int, size: tuple[int, int, int], sequential_cfg: bool, memory: str) -> bool:
    """Before a run of handle's Stage `stage` model at size = (frames, height, width) pixels: memory "as set"
    sets up the loader's block swap (prepare_run) and returns sequential_cfg; "auto" chooses sequential CFG
    and the block swap for the room ComfyUI can make (auto_choice), sets the swap up, logs the choice and
    returns the sequential CFG to run with. Raises FlashVideoInputError for a bad memory value, auto beside
    sequential_cfg on or the loader's manual block swap, or when no mode fits."""
    check_memory(memory)
    if memory != AUTO_MEMORY:
        prepare_run(handle, *size, sequential_cfg)
        return sequential_cfg
    choice = auto_choice(handle, stage, size, sequential_cfg)
    _set_blocks(handle, choice.modes.resident_blocks)
    logger.info("[FlashVideo] memory auto, %s", choice.line)
    return choice.sequential_cfg


def auto_choice(handle, stage: int, size: tuple[int, int, int], sequential_cfg: bool = False) -> StageMemory:
    """memory "auto" for one run (planning.auto.choose_stage): the weights as loaded (fp8 or not), attention
    and compile kept; the budget is what ComfyUI can free for the plain mode plus what the model holds
    (comfy_memory.room). No block swap for a LoRA model or its base (they share weight tensors)."""
    if sequential_cfg:
        raise FlashVideoInputError("memory auto chooses sequential CFG itself: turn sequential_cfg off, or set "
                                   "memory to 'as set'.")
    if isinstance(handle.modes.resident_blocks, int):
        raise FlashVideoInputError(f"memory auto chooses the block swap itself, and the loader's block_swap manual "
                                   f"fixes {handle.modes.resident_blocks} resident blocks: set the loader's "
                                   "block_swap to off or auto, or memory to 'as set'.")
    module, device, dtype = handle.module, torch.device(handle.device), handle.dtype
    frames, height, width = size
    base, name, budget = modes_of(module), f"Stage {'I' * stage}", 0
    if lower_bound.on_accelerator(device):
        plain = plan_peak(stage, height, width, frames, dtype, base, False, module.config)
        budget = comfy_memory.room(handle, int(plain.total_bytes * (1 + FIT_MARGIN) + FIT_RESERVE))
    choice = choose_stage(name, stage, size, dtype, device, budget, base, module.config, fp8=False,
                          fp8_words=FP8_WORDS)  # block swap only on an accelerator
    if (hasattr(handle, "base") or handle.shared_with_lora) and choice.modes.resident_blocks is not None:
        raise FlashVideoInputError(f"{name} fits the free memory only with block swap ({choice.line}), and a LoRA "
                                   "model and its base share weights, so neither swaps blocks: free memory, or use "
                                   "fewer frames or a smaller size.")
    return choice


def _resolve(handle, frames: int, height: int, width: int, sequential_cfg: bool) -> int | None:
    """The resident block count for this run (None: every block resident, no swap)."""
    device, module, want = torch.device(handle.device), handle.module, handle.modes.resident_blocks
    check_modes_device(handle.modes, device)
    if want == AUTO:
        if device.type == "cpu":
            return None
        plain = dataclasses.replace(handle.modes, resident_blocks=None)
        plan = plan_peak(module.stage, height, width, frames, handle.dtype, plain, sequential_cfg, module.config)
        budget = comfy_memory.room(handle, int(plan.total_bytes * (1 + FIT_MARGIN) + FIT_RESERVE))
        want = resolve_resident_blocks(module.stage, height, width, frames, budget, handle.dtype, handle.modes,
                                       sequential_cfg, module.config).resident_blocks
    return want  # _set_blocks reads a count of at least the model's blocks as no swap


def _attach(handle, blocks: int) -> None:
    """Block swap on handle.module with `blocks` resident, streaming to handle.device. Nothing moves to the
    device now (place=False: ComfyUI's load, or on_device, places the resident part later)."""
    module = handle.module
    swap = enable_block_swap(module, blocks, torch.device(handle.device), place=False)
    setattr(module, SWAP_ATTR, swap)
    total = len(swap.blocks)
    logger.info("[FlashVideo] block swap for %s: %d of %d blocks resident, %d streamed from CPU memory",
                comfy_memory.model_name(handle), blocks, total, total - blocks)


def check_room(handle, stage: int, frames: int, height: int, width: int, sequential_cfg: bool) -> MemoryWatch:
    """Refuse (FlashVideoInputError, in NODE_WORDS) a run of handle's Stage `stage` transformer at `frames` x
    `height` x `width` whose least memory (planning.lower_bound.check_stage: its weights on the device while it
    runs, the activation floor) exceeds the room ComfyUI can make for it; call after prepare_run, before
    handle.active(). Returns the MemoryWatch for an out-of-memory raised while it samples."""
    module, device = handle.module, torch.device(handle.device)
    call = StageCall(stage, frames, height, width, handle.dtype, device, ran_modes(module), sequential_cfg,
                     module.config)
    weights, held = lower_bound.loaded_weights(module, device)
    floor = lower_bound.call_floor(call)
    free = (comfy_memory.room(handle, max(0, weights - held) + floor) - device_bytes(module, device)
            if lower_bound.on_accelerator(device) else services.free_memory(device))  # no weights count on the CPU
    room, name = DeviceRoom(free, weights, held), f"Stage {'I' * stage}"
    need = lower_bound.check_stage(name, call, room, words=NODE_WORDS)
    watch = MemoryWatch(device, free, held)
    watch.at(name, need, smaller_mode_hint(call, room, NODE_WORDS))
    return watch
