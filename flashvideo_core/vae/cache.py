"""The causal conv cache a sliced VAE pass carries from one temporal chunk to the next, held at its smallest.

diffusers' CogVideoX decoder and encoder return, with each chunk's output, a nested dict of the last
frames each causal conv saw (kernel 3: 2 frames), which the next chunk's call takes to continue the
video. Two things there hold more than the next chunk needs (measured at the real VAE widths, latent
16 x 24, bench/bench_vae_memory_model.py):

- a causal conv with a time kernel of 1 (conv_y and conv_b of every spatial norm, 1x1 shortcuts)
  "caches" a clone of its WHOLE input, the 16-channel latent interpolated to that layer's size, and
  never reads it back (a 1-frame kernel needs no past frames): 35 clones per decoder call, about
  a third of the decoder's cache at the real widths;
- the previous chunk's cache stays referenced (by the caller) until the call returns, while the new
  one is built beside it, so a later chunk held two caches at once: chunk 2 onwards peaked 1.33x
  above chunk 1 (2157 vs 1625 MiB of live tensors).

`lean_cache(module)` drops the first (each pointwise conv returns None for its cache); `consumed(cache)`
hands out the second's entries once, so each old entry is freed as soon as the conv that needs it has
read it. Neither changes a value: the outputs are bit-identical (tests/core/test_vae_whole_clip.py).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from diffusers.models.autoencoders.autoencoder_kl_cogvideox import CogVideoXCausalConv3d


class _ConsumedCache(dict):
    """A conv cache (nested dict of tensors) whose get(key) removes the entry it returns, nested dicts
    wrapped alike, so this dict no longer keeps an entry alive once its conv has it."""

    def get(self, key, default=None):
        value = self.pop(key, default)
        return consumed(value) if isinstance(value, dict) else value


def consumed(cache: dict | None) -> dict | None:
    """The conv cache returned by the last chunk's decoder/encoder call, to pass to the next call: its
    entries are released as the call reads them (None stays None: the first chunk has no cache).

    `cache` itself is emptied (its entries move to the returned dict), so the caller's reference to it
    keeps nothing alive."""
    if cache is None:
        return None
    wrapped = _ConsumedCache(cache)
    cache.clear()
    return wrapped


def _no_pointwise_cache(module, inputs, output):
    """Forward hook of a causal conv with a time kernel of 1: its (output, cache) with the cache dropped."""
    if isinstance(output, tuple) and len(output) == 2:
        return output[0], None
    return output


@contextmanager
def lean_cache(model: torch.nn.Module):
    """While active, the causal convs of `model` with a time kernel of 1 return None for their cache
    (the clone of their whole input they would return is never read: a 1-frame kernel needs no past).

    Hooks are removed on exit."""
    handles = [
        module.register_forward_hook(_no_pointwise_cache)
        for module in model.modules()
        if isinstance(module, CogVideoXCausalConv3d) and module.time_kernel_size == 1
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def cache_bytes(cache) -> int:
    """Bytes held by the tensors of a conv cache (a nested dict of tensors and Nones)."""
    if isinstance(cache, dict):
        return sum(cache_bytes(value) for value in cache.values())
    if isinstance(cache, torch.Tensor):
        return cache.numel() * cache.element_size()
    return 0
