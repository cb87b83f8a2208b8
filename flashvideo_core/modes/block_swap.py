"""Block swap: the FIRST N of a transformer's L blocks stay on the compute device, the last L - N live in
(pinned) CPU memory and visit the device one at a time, the next one copied on a side stream while the
current one computes.

Per block i, in its forward pre-hook: make sure i is on its way (fetch, if no prefetch was issued), wait
for its copy (the compute stream waits on the copy's event, so no kernel reads a half-copied weight),
point its parameters at the device copies, then issue the prefetch of block i + 1 (when streamed). In
its forward post-hook: point the parameters back at the host masters and drop the device copies. The
copies were used on the compute stream, recorded there (Tensor.record_stream), so the caching allocator
reuses their memory only after those kernels finished. At most two streamed blocks are on the device at
once. Keeping the first N (not the last) means the first streamed block's copy is prefetched while
block N - 1 computes; the order of use is fixed, so the choice only decides which blocks never move.

With regional compile (modes.compile: each block's __call__ compiled, its hooks included), the hooks run
eagerly (torch.compiler.disable): traced, they compiled one variant per block index (their dict lookups
are guarded) and mixed requires_grad guards into the block's own graph, so a 42-block model would pass
dynamo's recompile limit; eager, the compiled blocks keep their one shared graph
(tests/core/test_compile_blocks.py).

The masters are the host tensors themselves (never written back: inference weights do not change), moved
as raw tensors, so fp8 storage (modes.fp8) is streamed as fp8.

For whoever moves the model (ComfyUI's patcher, devices.on_device): after enable_block_swap, move it with
BlockSwap.place(device), never model.to(device): a whole-model .to copies the streamed blocks to the
device too (the memory block swap saves; the next forward drops those copies again) and
nodes.comfy_memory.bytes_off_device counts the streamed blocks as "left off the device" by design.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import FlashVideoInputError

BLOCK_LISTS = ("inner.transformer_blocks", "transformer_blocks", "encoder.block")
"""Where the blocks are: FlashVideoTransformer, diffusers' CogVideoX transformer, T5's encoder."""


def find_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The ModuleList of repeated blocks of `model` (BLOCK_LISTS), or FlashVideoInputError."""
    for path in BLOCK_LISTS:
        try:
            blocks = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(blocks, torch.nn.ModuleList):
            return blocks
    raise FlashVideoInputError(f"{type(model).__name__} has no transformer blocks to swap ({', '.join(BLOCK_LISTS)}).")


class SyncTransfers:
    """Transfers for devices without streams (CPU, meta, MPS): each fetch is a real copy, made at once.

    The interface BlockSwap uses: fetch(index, tensors) -> ticket (the device copies, issued now);
    wait(index, ticket) -> the copies, safe for the compute stream to read; release(index, ticket).
    """

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)

    def fetch(self, index: int, tensors: list[torch.Tensor]):
        return [torch.empty_like(t, device=self.device).copy_(t) for t in tensors]

    def wait(self, index: int, ticket) -> list[torch.Tensor]:
        return ticket

    def release(self, index: int, ticket) -> None:
        pass


class CudaTransfers(SyncTransfers):
    """Copies on a side CUDA stream (non_blocking from pinned memory), each followed by an event the
    compute stream waits on; the copies are recorded on the compute stream that reads them."""

    def __init__(self, device: torch.device | str):
        super().__init__(device)
        self.stream = torch.cuda.Stream(self.device)

    def fetch(self, index: int, tensors: list[torch.Tensor]):
        with torch.cuda.stream(self.stream):
            copies = [t.to(self.device, non_blocking=True) for t in tensors]
            event = torch.cuda.Event()
            event.record(self.stream)
        return copies, event

    def wait(self, index: int, ticket) -> list[torch.Tensor]:
        copies, event = ticket
        compute = torch.cuda.current_stream(self.device)
        compute.wait_event(event)
        for tensor in copies:
            tensor.record_stream(compute)
        return copies


def default_transfers(device: torch.device) -> SyncTransfers:
    """CudaTransfers on a CUDA device, SyncTransfers elsewhere."""
    return CudaTransfers(device) if device.type == "cuda" else SyncTransfers(device)


def _slots(block: torch.nn.Module) -> list[tuple[torch.nn.Module, str]]:
    """(owner module, name) of every parameter and buffer of `block`."""
    return [(owner, name) for owner in block.modules()
            for name in [*owner._parameters, *owner._buffers] if getattr(owner, name) is not None]


def _assign(owner: torch.nn.Module, name: str, tensor: torch.Tensor) -> None:
    """owner.<name> = tensor, keeping a Parameter object where the tensor types allow it."""
    if name in owner._parameters:
        param = owner._parameters[name]
        if torch._has_compatible_shallow_copy_type(param, tensor):
            param.data = tensor
        else:
            owner._parameters[name] = torch.nn.Parameter(tensor, requires_grad=False)
    else:
        owner._buffers[name] = tensor


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(frozen=True)
class SwapBytes:
    """Weight bytes under block swap: resident (the N kept blocks + everything outside the blocks, on the
    device all the time), streamed (the L - N blocks, in host memory), in_flight (the two largest streamed
    blocks: what a forward adds on the device at most)."""

    resident_blocks: int
    other: int
    streamed: int
    in_flight: int

    @property
    def resident(self) -> int:
        """Bytes on the device between forwards."""
        return self.resident_blocks + self.other


class BlockSwap:
    """The handle enable_block_swap returns: hooks on each block, host masters of the streamed ones.

    Attributes: model, blocks, resident (N), device, offload_device, transfers, streamed (indices).
    """

    def __init__(self, model, resident_blocks: int, device, offload_device="cpu", transfers=None, place=True):
        self.model, self.blocks = model, find_blocks(model)
        if isinstance(resident_blocks, bool) or not isinstance(resident_blocks, int) or resident_blocks < 0:
            raise FlashVideoInputError(f"resident_blocks={resident_blocks!r} must be a block count >= 0.")
        self.resident = min(resident_blocks, len(self.blocks))
        self.device, self.offload_device = torch.device(device), torch.device(offload_device)
        self.transfers = transfers or default_transfers(self.device)
        self.streamed = list(range(self.resident, len(self.blocks)))
        self._slots = {i: _slots(self.blocks[i]) for i in self.streamed}
        self._masters: dict[int, list[torch.Tensor]] = {}
        self._tickets: dict[int, object] = {}
        self._hooks = []
        pin = self.offload_device.type == "cpu" and torch.cuda.is_available()
        for i in self.streamed:
            masters = [getattr(owner, name).detach().to(self.offload_device) for owner, name in self._slots[i]]
            self._masters[i] = [t.pin_memory() if pin else t for t in masters]
            self._point(i, self._masters[i])
        if place:
            self.place(self.device)
        for i, block in enumerate(self.blocks):
            self._hooks.append(block.register_forward_pre_hook(self._before(i)))
            if i in self._slots:
                self._hooks.append(block.register_forward_hook(self._after(i)))

    def _point(self, index: int, tensors: list[torch.Tensor]) -> None:
        for (owner, name), tensor in zip(self._slots[index], tensors, strict=True):
            _assign(owner, name, tensor)

    def _fetch(self, index: int) -> None:
        if index in self._slots and index not in self._tickets:
            self._tickets[index] = self.transfers.fetch(index, self._masters[index])

    def _before(self, index: int):
        def hook(module, args):
            if index in self._slots:
                self._fetch(index)
                self._point(index, self.transfers.wait(index, self._tickets[index]))
            self._fetch(index + 1)  # the next block's copy runs while this one computes
        return torch.compiler.disable(hook)

    def _after(self, index: int):
        def hook(module, args, output):
            self._point(index, self._masters[index])
            self.transfers.release(index, self._tickets.pop(index))
        return torch.compiler.disable(hook)

    def place(self, device) -> None:
        """Move everything but the streamed blocks to `device` (the compute device, or the offload device
        between uses); the streamed blocks stay in host memory. Use this instead of model.to(device)."""
        device = torch.device(device)
        streamed = {id(m) for i in self.streamed for m in self.blocks[i].modules()}
        for module in self.model.modules():
            if id(module) not in streamed:
                module._apply(lambda t: t.to(device), recurse=False)

    def memory(self) -> SwapBytes:
        """SwapBytes of the model now (counted from its tensors; each tensor once)."""
        block_ids = {id(t) for block in self.blocks for t in [*block.parameters(), *block.buffers()]}
        everything = {id(t): t for t in [*self.model.parameters(), *self.model.buffers()]}
        kept = [t for i in range(self.resident) for t in [*self.blocks[i].parameters(), *self.blocks[i].buffers()]]
        sizes = sorted((_nbytes(m) for m in self._masters.values()), reverse=True)
        return SwapBytes(_nbytes(kept), _nbytes(t for k, t in everything.items() if k not in block_ids),
                         sum(sizes), sum(sizes[:2]))

    def disable(self, device=None) -> None:
        """Remove the hooks and put the streamed blocks on `device` (default: where the rest of the model
        is now): a plain model again."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        target = torch.device(device) if device is not None else self._rest_device()
        for i in self.streamed:
            self._point(i, [t.to(target) for t in self._masters[i]])
        self._masters.clear()
        self._tickets.clear()

    def _rest_device(self) -> torch.device:
        for i, block in enumerate(self.blocks):
            if i not in self._slots:
                for tensor in block.parameters():
                    return tensor.device
        return self.device


def enable_block_swap(model: torch.nn.Module, resident_blocks: int, device, offload_device="cpu",
                      transfers=None, place: bool = True) -> BlockSwap:
    """Keep blocks 0..resident_blocks-1 (and all but the blocks) of `model` on `device`, stream the others
    from `offload_device` (pinned when CUDA is available). transfers: None = CudaTransfers on CUDA,
    SyncTransfers elsewhere; a test passes a stand-in with the same three methods. place: False leaves
    the resident part where it is now (for whoever moves the model later with BlockSwap.place, e.g.
    ComfyUI's patcher); the streamed blocks go to offload_device either way. Returns the handle
    (handle.disable() restores a plain model)."""
    return BlockSwap(model, resident_blocks, device, offload_device, transfers, place)


def device_bytes(model: torch.nn.Module, device) -> int:
    """Bytes of `model`'s parameters and buffers on `device` (each tensor once)."""
    device = torch.device(device)
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return _nbytes(t for t in tensors.values() if t.device.type == device.type)
