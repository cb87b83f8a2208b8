"""FlashVideo models in ComfyUI's memory manager: loaded through it before each use, unloadable by it.

Inside ComfyUI (comfy.model_management and comfy.model_patcher importable) a LoadedModel is wrapped,
once, in a comfy.model_patcher.ModelPatcher and loaded with load_models_gpu before each block that
uses it, as core models and the video packs users trust do: ComfyUI unloads other models to make
room, lists ours in current_loaded_models, and unloads ours when another node needs the memory
(free_memory, "Unload models", its out-of-memory handler). Outside ComfyUI (tests, the CLI's
helpers) devices.on_device moves the module, as before.

Our modules are plain torch modules, not comfy.ops layers, so no layer can run with its weights left
in CPU memory (ComfyUI's partial "lowvram" load would leave a forward that mixes devices). Hence,
for every flag: a full load (force_full_load=True), never a partial unload (WholeModelPatcher: when
ComfyUI needs memory it unloads the whole model), and after each load a check that every weight is
on the compute device. Where ComfyUI still left weights behind (--novram gives a model a 0-byte
budget), ComfyUI's own patcher loads the rest, the log says so, and the model is unloaded right
after its block. After the block, "offload after use" unloads it through ComfyUI (weights back in
CPU memory, VRAM free at once); "keep on device" leaves it loaded, and ComfyUI unloads it when it
needs the room. A block that raises (Cancel is ComfyUI's InterruptProcessingException) leaves the
model in one of those two states, never half-moved.

Block swap (a module with flashvideo_core.modes.block_swap's handle, attribute SWAP_ATTR): the
patcher's holder registers only the resident part (everything but the streamed blocks, see
resident_parts), so ComfyUI's size is the resident bytes and its .to() never moves a streamed block;
those stay in (pinned) host memory and visit the device through the swap's hooks, and the two blocks
in flight are added to memory_required at each load. The check after a load covers the holder (the
resident part). A new block count (node_modes.prepare_run) first unloads and forgets the patcher
(forget). Cancel comes between model calls, when every streamed block points at its host copy, so the
model stays as after any other block; an error raised inside a streamed block's forward drops the swap
(drop_swap: unloaded, its device copy gone; the next run attaches it again).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from pathlib import Path

import torch

from flashvideo_core.devices import model_device, on_device
from flashvideo_core.modes.apply import SWAP_ATTR
from flashvideo_core.modes.block_swap import device_bytes
from flashvideo_core.vae.retry import is_out_of_memory

from . import comfy_services as services

logger = logging.getLogger(__name__)

FLAGS = {"NO_VRAM": "--novram", "LOW_VRAM": "--lowvram", "HIGH_VRAM": "--highvram/--gpu-only", "DISABLED": "--cpu"}
"""ComfyUI's vram_state names -> the command-line flag a user set to get it (for messages)."""


def comfy_memory_manager():
    """(comfy.model_management, comfy.model_patcher) inside ComfyUI, else None."""
    try:
        import comfy.model_management as mm
        import comfy.model_patcher as mp
    except ImportError:
        return None
    return mm, mp


@contextlib.contextmanager
def in_use(handle, memory_required: int = 0) -> Iterator[torch.nn.Module]:
    """Context manager: handle.module ready on handle.device for the block (yields the module).

    handle: a nodes.common.LoadedModel (module, device, offload_to, dtype, source; comfy_patcher is set here).
    memory_required: bytes the block needs besides the weights, for ComfyUI to free (0: its default
    reserve). Without ComfyUI: devices.on_device(module, device, offload_to).
    """
    comfy = comfy_memory_manager()
    swap = getattr(handle.module, SWAP_ATTR, None)
    try:
        if comfy is None:
            with on_device(handle.module, handle.device, handle.offload_to) as module:
                yield module
            return
        mm, mp = comfy
        patcher = _patcher(handle, mp)
        in_flight = swap.memory().in_flight if swap is not None else 0
        forced = _load(handle, patcher, mm, memory_required + in_flight)
        try:
            yield handle.module
        finally:
            if forced or _offloads(handle):
                unload(patcher, mm)
    except BaseException:
        if swap is not None and _streamed_left_on_device(swap):
            drop_swap(handle)  # the error came from inside a streamed block: its device copy is still in place
        raise


def _offloads(handle) -> bool:
    """True for "offload after use" handles whose rest device differs from the compute device."""
    rest = handle.offload_to
    return rest is not None and not _same_device(torch.device(rest), torch.device(handle.device))


class FlashVideoModel(torch.nn.Module):
    """What ComfyUI's patcher holds: one FlashVideo module as its child, or, for a module with block
    swap, its resident part (resident_parts) as children, so ComfyUI never sees a streamed block.

    ComfyUI writes its bookkeeping (device, model_loaded_weight_memory, model_lowvram, ...) onto the
    module it manages; diffusers and transformers models have a read-only .device, and ours stay clean.
    """

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        swap = getattr(module, SWAP_ATTR, None)
        if swap is None:
            self.flashvideo_model = module
        else:
            self.flashvideo_resident = torch.nn.ModuleList(resident_parts(module, swap))
        self.device = model_device(module)


def resident_parts(module: torch.nn.Module, swap) -> list[torch.nn.Module]:
    """The largest submodules of `module` that hold no streamed block of `swap` (a BlockSwap): together
    they hold every parameter and buffer but the streamed blocks'. A module on the way to a streamed
    block (the model, its ModuleList of blocks) must hold no tensor of its own (true of FlashVideo's
    transformers): RuntimeError otherwise."""
    streamed = {id(swap.blocks[i]) for i in swap.streamed}
    parts = []

    def walk(node: torch.nn.Module) -> None:
        if id(node) in streamed:
            return
        if not any(id(sub) in streamed for sub in node.modules()):
            parts.append(node)
            return
        if any(t is not None for t in [*node._parameters.values(), *node._buffers.values()]):
            raise RuntimeError(f"{type(node).__name__} holds tensors beside its streamed blocks; block swap cannot "
                               "hand ComfyUI its resident part.")
        for child in node.children():
            walk(child)

    walk(module)
    return parts


def room(handle, need: int) -> int:
    """Bytes handle's model may use on handle.device for a run (block swap "auto" plans with it): inside
    ComfyUI, after asking it to free `need` bytes (other models unloaded, as load_models_gpu does for a
    load), its free memory; without ComfyUI, the device's free memory; plus what the model already holds
    on the device in both cases."""
    device = torch.device(handle.device)
    comfy = comfy_memory_manager()
    if comfy is not None:
        mm = comfy[0]
        ours = [entry for entry in mm.current_loaded_models if entry.model is handle.comfy_patcher]
        mm.free_memory(need, device, keep_loaded=ours)
    return services.free_memory(device) + device_bytes(handle.module, device)


def _streamed_left_on_device(swap) -> bool:
    """True when a streamed block of `swap` does not point at its host masters (a forward that raised
    inside the block skipped the hook that points it back)."""
    return any(t.device != swap.offload_device for i in swap.streamed
               for t in [*swap.blocks[i].parameters(), *swap.blocks[i].buffers()])


def forget(handle) -> None:
    """Unload handle's patcher through ComfyUI (when ComfyUI lists it) and drop it: the next use makes a new
    one for the module as it is then (a new block-swap layout)."""
    comfy = comfy_memory_manager()
    if handle.comfy_patcher is not None and comfy is not None:
        unload(handle.comfy_patcher, comfy[0])
    handle.comfy_patcher = None


def drop_swap(handle) -> None:
    """Forget the patcher, then remove block swap from handle.module (streamed blocks back where the rest of
    the model is, no device copy left): a plain module again; node_modes.prepare_run attaches it anew."""
    forget(handle)
    swap = getattr(handle.module, SWAP_ATTR, None)
    if swap is not None:
        swap.disable()
        delattr(handle.module, SWAP_ATTR)


@functools.cache
def _whole_patcher_class(base: type) -> type:
    """comfy.model_patcher.ModelPatcher -> its subclass that never unloads part of a model."""

    class WholeModelPatcher(base):
        """A ModelPatcher that ComfyUI unloads whole: partially_unload frees nothing, so ComfyUI's
        model_unload goes on to detach (every weight to the offload device)."""

        def partially_unload(self, device_to, memory_to_free=0, *args, **kwargs):
            return 0

    return WholeModelPatcher


def _patcher(handle, mp):
    """handle's patcher, made on first use: loads to handle.device, rests on its offload device."""
    if handle.comfy_patcher is None:
        rest = handle.offload_to if handle.offload_to is not None else services.offload_device()
        holder = FlashVideoModel(handle.module)
        handle.comfy_patcher = _whole_patcher_class(mp.ModelPatcher)(holder, load_device=handle.device,
                                                                     offload_device=rest)
    return handle.comfy_patcher


def _load(handle, patcher, mm, memory_required: int) -> bool:
    """load_models_gpu([patcher]) with every weight on handle.device after it, or an error and the model
    unloaded. Returns True when ComfyUI had left weights off the device (the model then leaves after use)."""
    try:
        mm.load_models_gpu([patcher], memory_required=memory_required, force_full_load=True)
        left = bytes_off_device(patcher.model, handle.device)  # the holder: streamed blocks are not in it
        if not left:
            return False
        flag = _flag(mm)
        if not getattr(patcher.model, "flashvideo_warned", False):
            logger.warning("[FlashVideo] ComfyUI (%s) left %.0f MB of %s off %s. FlashVideo's models are plain "
                           "torch modules (not comfy.ops) and cannot run split between devices, so each is loaded "
                           "whole while its node runs and unloaded right after.", flag, left / 2**20,
                           model_name(handle), handle.device)
            patcher.model.flashvideo_warned = True
        patcher.partially_load(handle.device, 1e32)  # ComfyUI's own full load: its count stays right
        left = bytes_off_device(patcher.model, handle.device)
        if left:
            raise RuntimeError(f"{model_name(handle)}: ComfyUI ({flag}) keeps {left / 2**20:.0f} MB of it off "
                               f"{handle.device} and FlashVideo's models cannot run split between devices. Start "
                               f"ComfyUI without {flag}, or with --cpu.")
        return True
    except BaseException as exc:
        unload(patcher, mm)
        if isinstance(exc, Exception) and is_out_of_memory(exc):
            raise torch.OutOfMemoryError(_does_not_fit(handle, patcher, mm)) from exc
        raise


def _does_not_fit(handle, patcher, mm) -> str:
    """The message for a model that did not fit on its device even after ComfyUI unloaded the others."""
    free = services.free_memory(handle.device)
    smaller = " Load it in bf16 or fp16 (precision widget), half of fp32;" if handle.dtype == torch.float32 else ""
    modes = (" For a Stage I/II model, set its loader's block_swap to auto (or manual with fewer resident_blocks) "
             "and/or weights to fp8_e4m3fn (half the block weights); for T5, weights fp8_e4m3fn;")
    return (f"FlashVideo: {model_name(handle)} needs {patcher.model_size() / 2**30:.1f} GB on {handle.device} and "
            f"does not fit ({free / 2**30:.1f} GB free after ComfyUI unloaded what it could). FlashVideo's models "
            f"are not comfy.ops layers, so --lowvram/--novram cannot stream them.{smaller}{modes} close other "
            "programs using the GPU, or start ComfyUI with --cpu.")


def unload(patcher, mm) -> None:
    """Unload patcher's model through ComfyUI (weights to its offload device) and drop it from
    current_loaded_models; a model ComfyUI does not list is detached all the same."""
    entries = [i for i, entry in enumerate(mm.current_loaded_models) if entry.model is patcher]
    for i in reversed(entries):
        mm.current_loaded_models[i].model_unload()
        mm.current_loaded_models.pop(i)
    if not entries:
        patcher.detach()
    mm.soft_empty_cache()


def bytes_off_device(module: torch.nn.Module, device) -> int:
    """Bytes of module's parameters and buffers that are not on `device`."""
    device = torch.device(device)
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors if not _same_device(t.device, device))


def _same_device(a: torch.device, b: torch.device) -> bool:
    """Same type, and the same index where both name one ("cuda" is the current CUDA device)."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _flag(mm) -> str:
    """The flag behind ComfyUI's vram_state ("--novram", ...), or the state's name."""
    name = getattr(getattr(mm, "vram_state", None), "name", "unknown")
    return FLAGS.get(name, f"vram state {name}")


def model_name(handle) -> str:
    """E.g. "FlashVideoTransformer (stage1.pt)" for messages."""
    return f"{type(handle.module).__name__} ({Path(str(handle.source)).name})"
