"""Live tensor bytes of a computation, counted op by op: the reference the planner's formulas are checked
against, and what bench/ compares device peaks with.

`LiveBytes` is a TorchDispatchMode: every storage an op returns is counted once when it first appears
(its nbytes) and uncounted when the last tensor seen on it dies (weakref finalizers), so `peak` is the
most bytes of tensors alive at once during the block, as a caching allocator that frees at once would
see it (no fragmentation, no kernel workspace). Storages that existed before (weights, given inputs) are
left out when passed as `exclude`. With `device`, only storages on that device count (a block-swapped
model's device peak: its host masters are not device memory). It works on real tensors and under torch's
FakeTensorMode, where nothing is allocated: `fake_transformer` builds a real-size network of fake tensors
in a fraction of a second, so `guided_call_peak` measures one guided model call at 1080p on any machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import weakref
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .. import config as fv_config
from ..config import TransformerConfig


class LiveBytes(TorchDispatchMode):
    """Count the bytes of live tensor storages created inside the mode (see module).

    exclude: tensors whose storages are never counted; device: count only tensors on it (a device without
    an index matches every index of its type); None counts every device.
    Attributes: live (bytes now), peak (most bytes at once), peak_op (the op whose output set the peak),
    ops_seen (Counter-like dict: op name -> calls; e.g. which SDPA kernel ran).
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = (), device: torch.device | str | None = None) -> None:
        super().__init__()
        self.device = None if device is None else torch.device(device)
        self.live = 0
        self.peak = 0
        self.peak_op = ""
        self.ops_seen: dict[str, int] = {}
        self._refs: dict[int, int] = {}
        self._sizes: dict[int, int] = {}
        self._kept = list(exclude)  # held, so their storage keys stay theirs while the mode lives
        self._excluded = {t.untyped_storage()._cdata for t in self._kept}

    def _release(self, key: int) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            del self._refs[key]
            self.live -= self._sizes.pop(key)

    def _counts(self, tensor: torch.Tensor) -> bool:
        where = tensor.device
        return self.device is None or (where.type == self.device.type
                                       and self.device.index in (None, where.index))

    def _track(self, tensor: torch.Tensor) -> None:
        if not self._counts(tensor):
            return
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._excluded:
            return
        if key not in self._refs:
            self._refs[key] = 0
            self._sizes[key] = storage.nbytes()
            self.live += storage.nbytes()
        self._refs[key] += 1
        weakref.finalize(tensor, self._release, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = str(func)
        self.ops_seen[name] = self.ops_seen.get(name, 0) + 1
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self._track(value)
        if self.live > self.peak:
            self.peak, self.peak_op = self.live, name
        return out


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Build modules in `dtype` (FakeTensorMode cannot convert a built module with .to(dtype))."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def fake_transformer(config: TransformerConfig, dtype: torch.dtype, fake_mode: FakeTensorMode,
                     layers: int | None = None):
    """A FlashVideoTransformer of `config` (with `layers` blocks if given) made of fake tensors in `dtype`.

    Use it inside `with fake_mode:`. Activations do not depend on the block count (each block frees the
    previous one's), so 1 layer gives the real-size peak at a fraction of the cost.
    """
    from ..model.transformer import FlashVideoTransformer  # imports diffusers: only when measuring

    shape = config if layers is None else dataclasses.replace(config, num_layers=layers)
    with fake_mode, default_dtype(dtype):
        return FlashVideoTransformer(shape).eval()


@dataclass(frozen=True)
class CallPeak:
    """peak_bytes: most live bytes during the call (inputs, RoPE tables and activations; no weights);
    peak_op: the op that set it; attention_ops: the scaled_dot_product ops that ran (name -> calls)."""

    peak_bytes: int
    peak_op: str
    attention_ops: dict[str, int]


def guided_call_peak(model, frames: int, height: int, width: int, sequential_cfg: bool, batch: int = 1) -> CallPeak:
    """Live-bytes peak of one guided model call at (frames, height, width) pixels for `batch` videos.

    The call is what sampling.guidance makes: the CFG batch (2 x batch) of latents (2B, T, C, h, w) and text
    (2B, 226, text_dim) in the model's dtype, one model call, or with `sequential_cfg` two batch-B calls on
    the halves, concatenated. Inputs are made where the model's first parameter is, and only tensors on that
    device are counted (so a block-swapped model's count is its device's: the streamed blocks' copies in
    flight and the activations, not the host masters); the weights there before the call are left out.
    Works on a real model and on `fake_transformer` (call it inside the same fake mode). Empties the model's
    RoPE cache afterwards (its tables are part of the count, so each call counts them again).
    """
    cfg = model.config
    weight = next(model.parameters())
    dtype, device = weight.dtype, weight.device
    latent_t = (frames - 1) // fv_config.VAE_TEMPORAL_COMPRESSION + 1
    latent_h, latent_w = height // fv_config.VAE_SPATIAL_COMPRESSION, width // fv_config.VAE_SPATIAL_COMPRESSION
    weights = [*model.parameters(), *model.buffers()]
    with torch.no_grad(), LiveBytes(exclude=weights, device=device) as count:
        hidden = torch.randn(2 * batch, latent_t, cfg.in_channels, latent_h, latent_w, dtype=dtype, device=device)
        text = torch.randn(2 * batch, fv_config.TEXT_TOKENS, cfg.text_dim, dtype=dtype, device=device)
        timestep = torch.full((2 * batch,), 500.0, device=device)
        extra = {"noise_step": torch.full((2 * batch,), 675.0, device=device)} if cfg.stage2_extras else {}
        if sequential_cfg:
            pairs = zip(hidden.chunk(2), text.chunk(2), timestep.chunk(2), strict=True)
            halves = [model(h, x, t, **{k: v.chunk(2)[i] for k, v in extra.items()})
                      for i, (h, x, t) in enumerate(pairs)]
            out = torch.cat(halves)
            del halves
        else:
            out = model(hidden, text, timestep, **extra)
        del out, hidden, text
    model._rope_cache.clear()  # the tables were counted in this call; the next measurement makes its own
    attention = {k: v for k, v in count.ops_seen.items() if "scaled_dot_product" in k}
    return CallPeak(count.peak, count.peak_op, attention)
